//! Transparent huge pages off for the whole process.
//!
//! mimalloc by default asks the kernel for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`),
//! so one touched byte can make 2 MiB resident. certgate's heap is many small cache entries,
//! not large scans, so huge pages buy it no speed that matters and cost resident memory: with
//! 100,000 cached clients they were ~12 MiB of 74 (`examples/memory_at_scale.rs`). mimalloc
//! is built without that advice (its `no_thp` feature, Cargo.toml); this covers kernels that
//! give huge pages unasked (`/sys/kernel/mm/transparent_hugepage/enabled` = `always`): the
//! prctl flag holds for every later fault in the process.

/// Turn transparent huge pages off for this process (Linux; elsewhere nothing to do). A
/// kernel that refuses leaves the default in place: more memory, the same behaviour.
pub fn disable() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_process_has_huge_pages_off() {
        super::disable();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
        // Kernels that list it say the same in /proc (what an operator would look at).
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
