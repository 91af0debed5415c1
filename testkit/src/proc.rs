//! Child processes for tests and benchmarks.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait_until;

/// A child process, killed on drop; stdout and stderr go to files for failure messages.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Start `command`; a program that is not installed fails with the set-up hint.
    pub fn spawn(name: &str, command: &mut Command) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                let program = command.get_program().to_string_lossy();
                if e.kind() == std::io::ErrorKind::NotFound {
                    panic!(
                        "cannot start {name}: {program} not found; run `bash scripts/setup.sh` \
                         (SETUP_NGINX=1 SETUP_MOTO=1 for nginx and moto) to install the test peers"
                    )
                }
                panic!("cannot start {name} ({program}): {e}")
            });
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// Start `command` and wait up to `timeout` for `ready`; panics with the process's output
    /// if it exits first or never gets ready.
    pub fn spawn_ready(
        name: &str,
        command: &mut Command,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Proc {
        let mut proc = Proc::spawn(name, command);
        let ok = wait_until(timeout, || !proc.is_running() || ready());
        assert!(
            ok && proc.is_running(),
            "{name} did not become ready\n{}",
            proc.logs()
        );
        proc
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        format!(
            "----- {} output -----\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGTERM, then wait up to `grace` for the exit code (None if it had to be killed).
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
