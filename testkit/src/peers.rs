//! The external programs scripts/setup.sh installs, found the same way by tests and benches.
//! A missing one fails with the variable that was looked at and the set-up command, not with
//! a bare "No such file or directory" from spawn.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, http_get, repo};

/// `$VAR` if set (it must exist), else `.venv/bin/NAME`, else NAME on PATH.
fn installed(var: &str, name: &str, setup: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(var) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "{var}={} does not exist: run `{setup}` (installs {name} into .venv) or point {var} \
             at the {name} binary",
            bin.display()
        );
        return bin;
    }
    let venv = repo().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new(name).arg("--version").output().is_ok();
    assert!(
        on_path,
        "no {name}: {var} is unset, {} does not exist and {name} is not on PATH; run `{setup}` \
         (installs it into .venv)",
        venv.display()
    );
    name.into()
}

/// The Envoy binary: `$ENVOY_BIN`, else `.venv/bin/envoy` (scripts/setup.sh), else PATH.
pub fn envoy_binary() -> PathBuf {
    installed("ENVOY_BIN", "envoy", "bash scripts/setup.sh")
}

/// moto's server: `$MOTO_BIN`, else `.venv/bin/moto_server`, else PATH.
pub fn moto_binary() -> PathBuf {
    installed(
        "MOTO_BIN",
        "moto_server",
        "SETUP_MOTO=1 bash scripts/setup.sh",
    )
}

/// Environment for certgate processes that talk to [`Moto`]: static credentials (moto
/// accepts any) and a region, the way an operator's shell would have them.
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "eu-west-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Runs moto's server with one lock around every request. moto serves each request on a
/// thread of its own, and its `TransactWriteItems` is neither atomic nor isolated: it
/// checks and writes item by item, and on a failed condition restores whole tables from a
/// snapshot, undoing what concurrent requests wrote meanwhile. DynamoDB's transactions are
/// both, so writers racing through transactions (the audit chain) are only tested honestly
/// when moto applies each request on its own, as DynamoDB appears to its clients.
const SERIAL_MOTO: &str = "import sys, threading
from moto import server
from moto.moto_server import werkzeug_app
lock = threading.Lock()
call = werkzeug_app.DomainDispatcherApplication.__call__
def serial(self, environ, start_response):
    with lock:
        return call(self, environ, start_response)
werkzeug_app.DomainDispatcherApplication.__call__ = serial
server.main(sys.argv[1:])
";

/// `moto_server` on `port`, started by its own interpreter with [`SERIAL_MOTO`]; a
/// `moto_server` that is not a Python script runs as it is.
fn moto_command(port: u16) -> Command {
    let bin = moto_binary();
    let shebang = std::fs::read(&bin).ok().and_then(|bytes| {
        let first = bytes.split(|b| *b == b'\n').next()?;
        let line = std::str::from_utf8(first).ok()?.strip_prefix("#!")?;
        line.contains("python").then(|| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
    });
    let mut command = match shebang.as_deref() {
        Some([interpreter, args @ ..]) => {
            let mut command = Command::new(interpreter);
            command.args(args).args(["-c", SERIAL_MOTO]);
            command
        }
        _ => Command::new(bin),
    };
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    command
}

/// A DynamoDB-compatible server: moto's `moto_server` ([`moto_binary`]), on a loopback port.
/// State lives in its memory.
pub struct Moto {
    /// The running server.
    pub proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    /// Start on a free port and wait until it answers.
    pub fn start() -> Moto {
        Moto::start_on(free_port())
    }

    /// Start on a free port, applying one request at a time ([`SERIAL_MOTO`]): for tests of
    /// writers racing through transactions. Slower under load, so lookups with serving
    /// deadlines use [`Moto::start`].
    pub fn start_serial() -> Moto {
        let port = free_port();
        Moto::spawn(port, moto_command(port))
    }

    /// Start on `port` (a restart after a kill comes back where clients look).
    pub fn start_on(port: u16) -> Moto {
        let mut command = Command::new(moto_binary());
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        Moto::spawn(port, command)
    }

    fn spawn(port: u16, mut command: Command) -> Moto {
        // moto imports its service models on start.
        let proc = Proc::spawn_ready("moto_server", &mut command, Duration::from_secs(30), || {
            http_get(port, "/moto-api/").is_some()
        });
        Moto { proc, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Freeze the server (SIGSTOP): connections open but nothing answers, the way an
    /// overloaded or partitioned DynamoDB looks. State is kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undo [`Moto::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.proc.pid().expect("moto running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }
}
