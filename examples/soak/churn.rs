//! The churn: every change the soak makes underneath the load, on a fixed schedule, each
//! recorded in [`Expect`] before it starts and after its action returned.
//!
//!   every 1 s          a principal suspended or re-activated (`certgate principal …`)
//!   at 10 s, 20 s, …   a valid configuration edit: /extra/* allowed or not, in turn; the
//!                      first edit after 1/12 of the run adds the new CA to the trust bundle,
//!                      the first after 1/6 removes the old one (within the warm-up, so that
//!                      the working set is the same from then on)
//!   at 15 s, 25 s, …   an invalid edit (refused; the last good configuration stays)
//!   every 30 s at 7.5  the current CA's CRL file replaced, in turn, by a newer CRL revoking one
//!                      more of its certificates, a forged one (another key, no entries) and a
//!                      stale replay (older, past nextUpdate, no entries)
//!   every 60 s at 12   (dynamodb) moto frozen with SIGSTOP for 4 s, then resumed
//!   every 120 s at 20  (dynamodb) moto killed with SIGKILL, restarted empty and the store
//!                      re-seeded (restart.rs), while at least 40 s of the run remain;
//!                      suspensions pause, and freezes are skipped, until it is re-seeded
//!   (short runs, under 3 minutes: CRLs every 10 s, freezes every 30 s)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use testkit::Moto;
use time::Duration as Age;

use crate::pki::{self, Pki};
use crate::restart::{Record, Restart};
use crate::timeline::{BAD, Factor, OK};

/// Moto restarts: every this many seconds, at this second of the cycle, when the run has at
/// least `RESTART_ROOM` left to re-seed the store (about 30 s on the shared machine).
const RESTART_EVERY: u64 = 120;
const RESTART_AT: u64 = 20;
const RESTART_ROOM: Duration = Duration::from_secs(40);

/// Propagation windows: each documented interval plus the same slack for a busy machine.
#[derive(Clone, Copy)]
pub struct Windows {
    /// `reload.interval` + slack.
    pub reload: Duration,
    /// `store.cache_ttl` + slack.
    pub store: Duration,
    /// The CRL files' `refresh_interval` (+10% jitter) + slack.
    pub crl: Duration,
}

/// Every factor of every certificate's decision.
pub struct Expect {
    /// Per principal.
    pub suspended: Vec<Factor>,
    /// Per principal (its one certificate's serial).
    pub revoked: Vec<Factor>,
    /// Per CA.
    pub trusted: [Factor; 2],
    /// The configuration allows GET /extra/*.
    pub extra: Factor,
    /// The store answers (dynamodb freezes and restarts).
    pub store: Factor,
    /// Per principal: enrolled in the store (a moto restart empties it).
    pub enrolled: Vec<Factor>,
    /// Each moto restart: when it was killed, and the store's cache window after it.
    pub restarts: Vec<(Instant, Duration)>,
}

/// What the churn did, for the report.
#[derive(Default, Clone)]
pub struct Counts {
    pub suspensions: u64,
    pub activations: u64,
    pub valid_edits: u64,
    pub invalid_edits: u64,
    pub crl_newer: u64,
    pub crl_forged: u64,
    pub crl_stale: u64,
    pub freezes: u64,
    pub restarts: Vec<Record>,
    pub rotation: Vec<String>,
    /// Churn actions that failed (a CLI command exiting non-zero): the soak fails.
    pub failures: Vec<String>,
}

/// The configuration the churn edits.
#[derive(Clone)]
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub certgate: PathBuf,
    pub grpc: u16,
    pub admin: u16,
    /// `Some(endpoint)` for the dynamodb backend.
    pub dynamodb: Option<String>,
    /// moto (dynamodb), to freeze and restart.
    pub moto: Option<Arc<Mutex<Option<Moto>>>>,
    pub env: Vec<(String, String)>,
}

/// The configuration's state: which CAs are trusted, whether /extra/* is allowed.
#[derive(Clone, Copy)]
pub struct State {
    pub trusted: [bool; 2],
    pub extra: bool,
}

/// certgate.yaml for `state`; `invalid` adds a bad duration (refused by validation).
pub fn render(setup: &Setup, state: State, invalid: bool) -> String {
    let (grpc, admin) = (setup.grpc, setup.admin);
    let bundle = match state.trusted {
        [true, true] => "ca-12.pem",
        [false, true] => "ca-2.pem",
        _ => "ca-1.pem",
    };
    let store = match &setup.dynamodb {
        None => "{backend: embedded, path: certgate.db, cache_ttl: 1s}".to_owned(),
        // No stale answers while the store fails: each answer then has one right decision
        // (with stale_if_error a suspension made just before an outage is served stale for
        // up to that long, as documented).
        Some(endpoint) => format!(
            "{{backend: dynamodb, cache_ttl: 1s, stale_if_error: 0s, dynamodb: \
             {{endpoint_url: \"{endpoint}\", region: eu-west-1}}}}"
        ),
    };
    let extra = if state.extra {
        ", \"GET /extra/*\""
    } else {
        ""
    };
    let lifetime = if invalid { "ninety days" } else { "90d" };
    let issuers: String = (0..2)
        .filter(|i| state.trusted[*i])
        .map(|i| {
            format!(
                "    - ca: \"{}\"\n      sources: [{{file: crl-{}.pem, refresh_interval: 1s}}]\n",
                pki::ca_name(i),
                i + 1
            )
        })
        .collect();
    format!(
        "listen: {{grpc: \"127.0.0.1:{grpc}\", admin: \"127.0.0.1:{admin}\"}}\n\
         trust: {{ca_bundle: {bundle}, clock_skew: 60s}}\n\
         store: {store}\n\
         reload: {{interval: 1s}}\n\
         roles_by_type: {{worker: [worker]}}\n\
         default_policy: default\n\
         policies:\n  default:\n    max_lifetime: {lifetime}\n    require_enrolment: true\n\
         \x20   permissions: {{worker: [\"GET /api/*\"{extra}]}}\n\
         crl:\n  readiness: serve\n  issuers:\n{issuers}"
    )
}

/// Write `text` to `path` atomically (a watcher never sees half a file).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `certgate ARGS --config cli.yaml`; an error with its stderr when it exits non-zero.
pub fn cli(setup: &Setup, args: &[&str]) -> Result<()> {
    let out = Command::new(&setup.certgate)
        .args(args)
        .arg("--config")
        .arg(setup.dir.join("cli.yaml"))
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .output()?;
    if !out.status.success() {
        bail!(
            "certgate {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs the schedule until `stop`.
pub struct Churn {
    pub setup: Setup,
    pub pki: Pki,
    pub expect: Arc<Mutex<Expect>>,
    pub windows: Windows,
    pub duration: Duration,
    pub crl_every: u64,
    pub freeze_every: u64,
    pub counts: Counts,
    state: State,
    crl_numbers: [u64; 2],
    revoked: [Vec<u64>; 2],
    suspended: Vec<usize>,
    /// Suspended principals a moto restart left out of the store: activating one enrols it.
    unenrolled: Vec<usize>,
    restart: Option<JoinHandle<(Record, Vec<String>)>>,
    rng: u64,
}

impl Churn {
    pub fn new(
        setup: Setup,
        pki: Pki,
        expect: Arc<Mutex<Expect>>,
        windows: Windows,
        duration: Duration,
    ) -> Churn {
        // CRL replacements every 30 s, store freezes every 60 s; in short runs every 10 s and
        // 30 s, so that each kind happens.
        let long = duration >= Duration::from_secs(180);
        let (crl_every, freeze_every) = if long { (3, 60) } else { (1, 30) };
        Churn {
            setup,
            pki,
            expect,
            windows,
            duration,
            crl_every,
            freeze_every,
            counts: Counts::default(),
            state: State {
                trusted: [true, false],
                extra: false,
            },
            crl_numbers: [1, 1],
            revoked: [Vec::new(), Vec::new()],
            suspended: Vec::new(),
            unenrolled: Vec::new(),
            restart: None,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The files certgate starts with.
    pub fn prepare(&self) -> Result<()> {
        let dir = &self.setup.dir;
        let both = self.pki.cas[0].cert_pem() + &self.pki.cas[1].cert_pem();
        std::fs::write(dir.join("ca-12.pem"), both)?;
        for (i, ca) in self.pki.cas.iter().enumerate() {
            let crl = pki::crl(ca, 1, Age::minutes(10), &[])?;
            std::fs::write(dir.join(format!("crl-{}.pem", i + 1)), crl)?;
        }
        let config = render(&self.setup, self.state, false);
        // The CLI reads its own copy: the served file is invalid half of the time.
        std::fs::write(dir.join("cli.yaml"), &config)?;
        write_atomic(&self.setup.config, &config)
    }

    fn certgate(&self, args: &[&str]) -> Result<()> {
        cli(&self.setup, args)
    }

    /// Enrol every principal (before certgate serves).
    pub fn enrol(&self) -> Result<()> {
        if self.setup.dynamodb.is_some() {
            self.certgate(&["store", "init"])?;
        }
        for c in &self.pki.clients {
            self.certgate(&["principal", "create", &c.principal, "--type", "worker"])?;
        }
        Ok(())
    }

    fn random(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }

    /// Run until `stop` is set or the duration has passed.
    pub fn run(&mut self, stop: &Arc<AtomicBool>) {
        let start = Instant::now();
        let mut tick: u64 = 0; // quarter-seconds
        let frozen = AtomicBool::new(false);
        while !stop.load(Ordering::Relaxed) && start.elapsed() < self.duration {
            tick += 1;
            let at = start + Duration::from_millis(250 * tick);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let (sec, quarter) = (tick / 4, tick % 4);
            if self.restart.as_ref().is_some_and(JoinHandle::is_finished) {
                self.restarted();
            }
            let store_up = !frozen.load(Ordering::Relaxed) && self.restart.is_none();
            let result = match (sec % 10, quarter) {
                (0, 0) => self.valid_edit(start),
                (5, 0) => self.invalid_edit(),
                (7, 2) if (sec / 10).is_multiple_of(self.crl_every) => self.replace_crl(),
                _ if quarter == 1 && store_up => self.toggle_principal(),
                _ => Ok(()),
            };
            if sec % self.freeze_every == 12 && quarter == 0 && self.restart.is_none() {
                self.freeze(&frozen, true);
            } else if sec % self.freeze_every == 16 && quarter == 0 {
                self.freeze(&frozen, false);
            }
            let room = self.duration.saturating_sub(start.elapsed()) >= RESTART_ROOM;
            if sec % RESTART_EVERY == RESTART_AT && quarter == 0 && room {
                self.freeze(&frozen, false);
                self.restart(sec, stop);
            }
            if let Err(e) = result {
                self.counts.failures.push(format!("at {sec}s: {e:#}"));
            }
        }
        self.freeze(&frozen, false);
        if self.restart.is_some() {
            self.restarted();
        }
    }

    /// Start a moto restart (dynamodb) on its own thread; suspensions wait for it.
    fn restart(&mut self, sec: u64, stop: &Arc<AtomicBool>) {
        if self.setup.moto.is_none() || self.restart.is_some() {
            return;
        }
        let active = (0..self.pki.clients.len())
            .filter(|i| !self.suspended.contains(i))
            .map(|i| (i, self.pki.clients[i].principal.clone()))
            .collect();
        self.unenrolled = self.suspended.clone();
        let restart = Restart {
            setup: self.setup.clone(),
            expect: Arc::clone(&self.expect),
            windows: self.windows,
            active,
            left_out: self.unenrolled.len(),
            at: sec,
        };
        self.restart = Some(restart.spawn(Arc::clone(stop)));
    }

    /// Collect a finished (or, at the end, the running) restart.
    fn restarted(&mut self) {
        let Some(handle) = self.restart.take() else {
            return;
        };
        match handle.join() {
            Ok((record, failures)) => {
                self.counts.restarts.push(record);
                self.counts.failures.extend(failures);
            }
            Err(_) => self.counts.failures.push("the restart panicked".to_owned()),
        }
    }

    fn toggle_principal(&mut self) -> Result<()> {
        let n = self.pki.clients.len();
        let suspend = self.suspended.len() < n / 8;
        let i = if suspend {
            self.random(n)
        } else {
            self.suspended.remove(0)
        };
        if suspend && self.suspended.contains(&i) {
            return Ok(());
        }
        let principal = self.pki.clients[i].principal.clone();
        let window = self.windows.store;
        let mask = if suspend { BAD } else { OK };
        let step = self.expect.lock().unwrap().suspended[i].begin(mask, window);
        let done = if suspend {
            self.counts.suspensions += 1;
            self.suspended.push(i);
            self.certgate(&["principal", "suspend", &principal, "--reason", "soak"])
        } else if let Some(at) = self.unenrolled.iter().position(|u| *u == i) {
            // Left out of the store by a restart: enrolling it is its activation.
            self.unenrolled.remove(at);
            self.counts.activations += 1;
            let enrol = self.expect.lock().unwrap().enrolled[i].begin(OK, window);
            let created = self.certgate(&["principal", "create", &principal, "--type", "worker"]);
            self.expect.lock().unwrap().enrolled[i].done(enrol);
            created
        } else {
            self.counts.activations += 1;
            self.certgate(&["principal", "activate", &principal])
        };
        self.expect.lock().unwrap().suspended[i].done(step);
        done
    }

    fn valid_edit(&mut self, start: Instant) -> Result<()> {
        let step = self.duration / 12;
        let mut next = self.state;
        next.extra = !next.extra;
        let mut rotated = None;
        if start.elapsed() >= step && next.trusted == [true, false] {
            next.trusted = [true, true];
            rotated = Some((1, OK, "new CA added"));
        } else if start.elapsed() >= 2 * step && next.trusted == [true, true] {
            next.trusted = [false, true];
            rotated = Some((0, BAD, "old CA removed"));
        }
        let (reload, crl) = (self.windows.reload, self.windows.crl);
        let steps = {
            let mut e = self.expect.lock().unwrap();
            let extra = e.extra.begin(if next.extra { OK } else { BAD }, reload);
            // A CA just added is denied 503 until its CRL is loaded: allow for that too.
            let trust = rotated.map(|(ca, mask, _)| (ca, e.trusted[ca].begin(mask, reload + crl)));
            (extra, trust)
        };
        let written = write_atomic(&self.setup.config, &render(&self.setup, next, false));
        let mut e = self.expect.lock().unwrap();
        e.extra.done(steps.0);
        if let Some((ca, step)) = steps.1 {
            e.trusted[ca].done(step);
        }
        drop(e);
        written?;
        self.state = next;
        self.counts.valid_edits += 1;
        if let Some((_, _, what)) = rotated {
            let at = start.elapsed().as_secs();
            self.counts.rotation.push(format!("{what} at {at}s"));
        }
        Ok(())
    }

    fn invalid_edit(&mut self) -> Result<()> {
        write_atomic(&self.setup.config, &render(&self.setup, self.state, true))?;
        self.counts.invalid_edits += 1;
        Ok(())
    }

    /// The CA whose CRL the cycle replaces: the old one while trusted, then the new one.
    fn replace_crl(&mut self) -> Result<()> {
        let ca = if self.state.trusted[0] { 0 } else { 1 };
        let file = self.setup.dir.join(format!("crl-{}.pem", ca + 1));
        let kind = self.counts.crl_newer + self.counts.crl_forged + self.counts.crl_stale;
        match kind % 3 {
            0 => {
                let next = self
                    .pki
                    .clients
                    .iter()
                    .position(|c| c.ca == ca && !self.revoked[ca].contains(&c.serial));
                let mut step = None;
                if let Some(i) = next {
                    self.revoked[ca].push(self.pki.clients[i].serial);
                    let mut e = self.expect.lock().unwrap();
                    step = Some((i, e.revoked[i].begin(BAD, self.windows.crl)));
                }
                self.crl_numbers[ca] += 1;
                let text = pki::crl(
                    &self.pki.cas[ca],
                    self.crl_numbers[ca],
                    Age::ZERO,
                    &self.revoked[ca],
                )?;
                let written = write_atomic(&file, &text);
                if let Some((i, s)) = step {
                    self.expect.lock().unwrap().revoked[i].done(s);
                }
                self.counts.crl_newer += 1;
                written
            }
            1 => {
                self.counts.crl_forged += 1;
                let forged = pki::crl(&self.pki.forgers[ca], 1_000, Age::ZERO, &[])?;
                write_atomic(&file, &forged)
            }
            _ => {
                self.counts.crl_stale += 1;
                write_atomic(&file, &pki::stale_crl(&self.pki.cas[ca], Age::hours(2))?)
            }
        }
    }

    fn freeze(&mut self, frozen: &AtomicBool, freeze: bool) {
        let Some(pid) = self
            .setup
            .moto
            .as_ref()
            .and_then(|m| m.lock().unwrap().as_ref()?.proc.pid())
        else {
            return;
        };
        if frozen.load(Ordering::Relaxed) == freeze {
            return;
        }
        let mut e = self.expect.lock().unwrap();
        if freeze {
            // A frozen store may deny (fail closed) or serve its cache.
            e.store.set(OK | BAD, Duration::ZERO);
        } else {
            e.store.set(OK, self.windows.store);
        }
        drop(e);
        let signal = if freeze { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        frozen.store(freeze, Ordering::Relaxed);
        self.counts.freezes += u64::from(freeze);
    }
}
