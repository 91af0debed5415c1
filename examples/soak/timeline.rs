//! What a decision may be at a moment: each factor of a decision (a principal suspended, a
//! serial revoked, a CA trusted, the configuration allowing a path, the store answering) is a
//! history of states. A change is recorded when the churn starts it and again when its
//! action returned; the old state stays possible until then plus the change's propagation
//! window (cache TTL, reload or refresh interval), the new one is possible from the start.
//! A response sent at `ts` and received at `tr` is right when some combination of states
//! possible in `[ts, tr]` gives its decision.

use std::time::{Duration, Instant};

/// The factor lets the request through.
pub const OK: u8 = 1;
/// The factor denies it.
pub const BAD: u8 = 2;

struct Step {
    start: Instant,
    done: Option<Instant>,
    window: Duration,
    mask: u8,
}

/// One factor's history.
pub struct Factor {
    initial: u8,
    steps: Vec<Step>,
}

impl Factor {
    /// A factor that starts as `initial` (`OK`, `BAD` or both).
    pub fn new(initial: u8) -> Factor {
        Factor {
            initial,
            steps: Vec::new(),
        }
    }

    /// A change to `mask` begins; returns its index for [`Factor::done`].
    pub fn begin(&mut self, mask: u8, window: Duration) -> usize {
        self.steps.push(Step {
            start: Instant::now(),
            done: None,
            window,
            mask,
        });
        self.steps.len() - 1
    }

    /// The change's action returned: the old state is possible for one more window.
    pub fn done(&mut self, step: usize) {
        self.steps[step].done = Some(Instant::now());
    }

    /// A change that takes effect at once (begin and done).
    pub fn set(&mut self, mask: u8, window: Duration) {
        let step = self.begin(mask, window);
        self.done(step);
    }

    /// The states possible at some moment of `[ts, tr]`.
    pub fn possible(&self, ts: Instant, tr: Instant) -> u8 {
        let mut mask = 0;
        for i in 0..=self.steps.len() {
            let (from, state) = match i {
                0 => (None, self.initial),
                _ => (Some(self.steps[i - 1].start), self.steps[i - 1].mask),
            };
            // The state ends once the next change is done and has propagated.
            let until = self
                .steps
                .get(i)
                .and_then(|next| next.done.map(|d| d + next.window));
            if from.is_none_or(|f| f <= tr) && until.is_none_or(|u| u >= ts) {
                mask |= state;
            }
        }
        mask
    }
}

/// Whether an allow (`allowed`) or a deny is a right answer given each factor's possible
/// states: an allow needs every factor possibly OK, a deny some factor possibly BAD.
pub fn right(allowed: bool, possible: impl IntoIterator<Item = u8>) -> bool {
    let (mut all_ok, mut any_bad) = (true, false);
    for mask in possible {
        all_ok &= mask & OK != 0;
        any_bad |= mask & BAD != 0;
    }
    if allowed { all_ok } else { any_bad }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(200);

    #[test]
    fn the_old_state_is_possible_until_the_change_has_propagated() {
        let mut f = Factor::new(OK);
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(10));
        let step = f.begin(BAD, W);
        let during = Instant::now();
        assert_eq!(f.possible(during, during), OK | BAD, "change under way");
        f.done(step);
        assert_eq!(f.possible(before, before), OK, "before the change");
        std::thread::sleep(W + Duration::from_millis(20));
        let after = Instant::now();
        assert_eq!(f.possible(after, after), BAD, "after the window");
        assert_eq!(f.possible(before, after), OK | BAD, "a request spanning it");
    }

    #[test]
    fn an_allow_needs_every_factor_ok_and_a_deny_one_factor_bad() {
        assert!(right(true, [OK, OK | BAD]));
        assert!(!right(true, [OK, BAD]));
        assert!(right(false, [OK, OK | BAD]));
        assert!(!right(false, [OK, OK]));
    }
}
