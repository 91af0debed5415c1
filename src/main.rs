//! The `certgate` binary: the command line lives in the library (`certgate::main`).

/// mimalloc instead of glibc's malloc: a check allocates and frees many small buffers
/// (prost, h2), where glibc's allocator showed up as ~14% of the CPU profile under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    certgate::app::huge_pages::disable();
    certgate::main()
}
