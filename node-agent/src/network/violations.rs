//! The blocked uses of one sandbox's secret placeholders, as the egress proxy records them.
//!
//! The most recent [`MAX_KEPT`] are kept. Each is numbered (a sequence that never repeats while
//! the agent runs), so a reader can ask for what came after a [`Violations::mark`]: the exec API
//! reports the violations of one command, the cluster controller publishes each one once.

use microsandbox_wire::api::SecretViolation;
use std::collections::VecDeque;

/// Most violations kept per sandbox (the oldest go first).
pub const MAX_KEPT: usize = 256;

#[derive(Debug, Default)]
pub struct Violations {
    next: u64,
    kept: VecDeque<(u64, SecretViolation)>,
}

impl Violations {
    pub fn record(&mut self, v: SecretViolation) {
        if self.kept.len() >= MAX_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((self.next, v));
        self.next += 1;
    }

    /// Everything kept, oldest first.
    pub fn all(&self) -> Vec<SecretViolation> {
        self.kept.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The number the next violation will get.
    pub fn mark(&self) -> u64 {
        self.next
    }

    /// The kept violations numbered `mark` or later, oldest first, and the mark after them.
    pub fn since(&self, mark: u64) -> (Vec<SecretViolation>, u64) {
        let list = self
            .kept
            .iter()
            .filter(|(n, _)| *n >= mark)
            .map(|(_, v)| v.clone())
            .collect();
        (list, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(host: &str) -> SecretViolation {
        SecretViolation {
            secret: "K".into(),
            host: host.into(),
            reason: "r".into(),
            at: 0,
        }
    }

    #[test]
    fn since_a_mark_and_bounded() {
        let mut vs = Violations::default();
        vs.record(v("a"));
        let m = vs.mark();
        assert_eq!(vs.since(m), (vec![], m));
        vs.record(v("b"));
        vs.record(v("c"));
        let hosts = |l: Vec<SecretViolation>| l.into_iter().map(|v| v.host).collect::<Vec<_>>();
        let (after, next) = vs.since(m);
        assert_eq!(hosts(after), ["b", "c"]);
        assert_eq!(next, m + 2);
        assert_eq!(hosts(vs.all()), ["a", "b", "c"]);
        for i in 0..MAX_KEPT {
            vs.record(v(&i.to_string()));
        }
        assert_eq!(vs.all().len(), MAX_KEPT);
        assert_eq!(vs.all()[0].host, "0");
        assert_eq!(vs.mark(), 3 + MAX_KEPT as u64);
        // Numbers keep counting past the bound: an old mark still finds only newer ones.
        assert_eq!(vs.since(vs.mark() - 1).0.len(), 1);
    }
}
