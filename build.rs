//! Records the git commit certgate is built from, for `certgate --version` and the image's
//! labels: `CERTGATE_GIT_COMMIT` (the short hash of HEAD), or "unknown" outside a git checkout (a crate tarball, a Docker build context without .git).
//! `CERTGATE_GIT_COMMIT` in the environment wins (for builds that know the commit otherwise).
//! Also compiles the admin API (proto/certgate/admin/v1) into Rust: protox parses the files,
//! so no protoc is needed on the build machine.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

const PROTOS: &[&str] = &[
    "proto/certgate/admin/v1/principal.proto",
    "proto/certgate/admin/v1/certificate.proto",
    "proto/certgate/admin/v1/decision.proto",
    "proto/certgate/admin/v1/audit.proto",
];

fn compile_protos() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().compile_fds(files)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}

fn main() {
    if let Err(e) = compile_protos() {
        panic!("compiling proto/: {e}");
    }
    println!("cargo:rerun-if-env-changed=CERTGATE_GIT_COMMIT");
    let commit = std::env::var("CERTGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CERTGATE_GIT_COMMIT={commit}");
    // Run again when HEAD moves: a checkout (HEAD) or a commit on the branch (its ref, loose
    // or packed; in a worktree these live in different directories, so ask git for each).
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watch {
        // A path that does not exist would make cargo run this script on every build.
        if let Some(path) =
            git(&["rev-parse", "--git-path", &name]).filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
