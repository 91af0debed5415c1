//! What the running server does about its resident memory.

use super::harness::Certgate;
use super::world::World;

/// The served process has transparent huge pages off, as an operator reads it in /proc: with
/// them, a touched byte of the allocator's arenas can hold 2 MiB resident.
#[test]
fn the_server_runs_with_transparent_huge_pages_off() {
    let world = World::new();
    let certgate = Certgate::start(&world.config, world.admin_port);
    let pid = certgate.proc.pid().expect("certgate is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        // Kernels before 6.0 do not list it; the unit test reads the flag with prctl.
        eprintln!("this kernel does not list THP_enabled in /proc/PID/status");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
