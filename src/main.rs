//! The `certgate` binary: parse arguments, set up logging, hand off to `cli::run`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
