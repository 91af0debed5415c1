//! Criterion benches of the decision (filled in by the benchmark work).
fn main() {}
