//! moto restarted under load (dynamodb backend): killed with SIGKILL, a new one started on
//! the same port, empty (moto keeps its tables in memory), and the store brought back the way
//! an operator would after losing a DynamoDB-compatible endpoint's data: `certgate store
//! init`, then `certgate principal create` for every principal that was active.
//!
//! Suspended principals are left out until the churn re-activates them (their activation is
//! then an enrolment): re-created, each would be active until its suspension is written
//! again. The soak's policy requires enrolment, so a principal missing from the emptied
//! store is denied `principal_not_enrolled`: from the kill to the re-enrolment every answer
//! is a deny, or an allow the store's cache may still give within its TTL.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::Moto;

use crate::churn::{Expect, Setup, Windows, cli};
use crate::timeline::{BAD, OK};

/// A restart, as the report shows it; durations from the kill.
#[derive(Clone, Default)]
pub struct Record {
    /// Seconds into the run.
    pub at: u64,
    /// The new moto answers.
    pub up: Option<Duration>,
    /// `certgate store init` returned.
    pub initialised: Option<Duration>,
    /// The last active principal is enrolled again.
    pub reseeded: Option<Duration>,
    /// Principals enrolled again.
    pub enrolled: usize,
    /// Suspended principals left out.
    pub left_out: usize,
}

/// What a restart needs: `active` are the principals (index, id) to enrol again.
pub struct Restart {
    pub setup: Setup,
    pub expect: Arc<Mutex<Expect>>,
    pub windows: Windows,
    pub active: Vec<(usize, String)>,
    pub left_out: usize,
    pub at: u64,
}

impl Restart {
    /// Run on a thread of its own (the configuration and CRL churn carry on); the handle
    /// gives the record and what failed. Stops enrolling once `stop` is set.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> JoinHandle<(Record, Vec<String>)> {
        std::thread::spawn(move || self.run(&stop))
    }

    fn run(self, stop: &AtomicBool) -> (Record, Vec<String>) {
        let mut record = Record {
            at: self.at,
            left_out: self.left_out,
            ..Record::default()
        };
        let Some(slot) = &self.setup.moto else {
            return (record, vec!["restart without moto".to_owned()]);
        };
        let window = self.windows.store;
        // From the kill the store may fail (503) and holds nobody; what certgate cached
        // before stays usable for one TTL after it.
        let steps = {
            let mut e = self.expect.lock().unwrap();
            let store = e.store.begin(OK | BAD, Duration::ZERO);
            let enrolled: Vec<usize> = e
                .enrolled
                .iter_mut()
                .map(|f| f.begin(BAD, window))
                .collect();
            (store, enrolled)
        };
        let old = slot.lock().unwrap().take();
        let port = old.as_ref().map(|m| m.port);
        drop(old); // SIGKILL, and wait for it to be gone
        let killed = Instant::now();
        {
            let mut e = self.expect.lock().unwrap();
            e.store.done(steps.0);
            for (f, step) in e.enrolled.iter_mut().zip(steps.1) {
                f.done(step);
            }
            e.restarts.push((killed, window));
        }
        let Some(port) = port else {
            return (record, vec!["moto was not running".to_owned()]);
        };
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| Moto::start_on(port)));
        let Ok(moto) = started else {
            return (record, vec![format!("moto did not restart on port {port}")]);
        };
        *slot.lock().unwrap() = Some(moto);
        record.up = Some(killed.elapsed());
        if let Err(e) = cli(&self.setup, &["store", "init"]) {
            return (record, vec![format!("after the restart: {e:#}")]);
        }
        record.initialised = Some(killed.elapsed());
        self.expect.lock().unwrap().store.set(OK, window);
        for (i, principal) in &self.active {
            if stop.load(Ordering::Relaxed) {
                return (record, Vec::new());
            }
            let step = self.expect.lock().unwrap().enrolled[*i].begin(OK, window);
            let created = cli(
                &self.setup,
                &["principal", "create", principal, "--type", "worker"],
            );
            self.expect.lock().unwrap().enrolled[*i].done(step);
            if let Err(e) = created {
                return (
                    record,
                    vec![format!("re-enrolling after the restart: {e:#}")],
                );
            }
            record.enrolled += 1;
        }
        record.reseeded = Some(killed.elapsed());
        (record, Vec::new())
    }
}
