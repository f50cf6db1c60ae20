//! Prometheus metrics (prometheus-client), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    /// `scheduled` or a condition reason (`Unschedulable`, `VolumeNodeConflict`, ...).
    pub result: String,
}

/// All metrics of the operator.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub scheduling: Family<ScheduleLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Node-agents whose lease is live, as of the last scheduling decision.
    pub live_nodes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("microsandbox_operator");
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let scheduling = Family::<ScheduleLabels, Counter>::default();
        let leader = Gauge::default();
        let live_nodes = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "scheduling_decisions",
            "Scheduling attempts by result",
            scheduling.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        registry.register(
            "live_nodes",
            "Node-agents with a live lease",
            live_nodes.clone(),
        );
        Self {
            registry,
            reconciliations,
            failures,
            reconcile_duration,
            scheduling,
            leader,
            live_nodes,
        }
    }
}

impl Metrics {
    /// Count a reconciliation and time it until the returned guard drops.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileTimer<'_> {
        self.reconciliations
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: &self.reconcile_duration,
        }
    }

    pub fn reconcile_failed(&self, controller: &str, error: &crate::Error) {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.into(),
                error: error.metric_label().into(),
            })
            .inc();
    }

    pub fn scheduled(&self, result: &str) {
        self.scheduling
            .get_or_create(&ScheduleLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters() {
        let m = Metrics::default();
        drop(m.reconcile_started("sandbox"));
        m.reconcile_failed("sandbox", &crate::Error::MissingField("name"));
        m.scheduled("Unschedulable");
        let text = m.encode();
        assert!(
            text.contains("microsandbox_operator_reconciliations_total{controller=\"sandbox\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "microsandbox_operator_reconcile_failures_total{controller=\"sandbox\",error=\"missing_field\"} 1"
        ));
        assert!(text.contains(
            "microsandbox_operator_scheduling_decisions_total{result=\"Unschedulable\"} 1"
        ));
        assert!(text.contains("microsandbox_operator_reconcile_duration_seconds_count 1"));
    }
}
