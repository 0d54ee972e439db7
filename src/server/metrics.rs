//! `GET /metrics`: runs, step durations, webhook deliveries by outcome, queue depth, in the
//! OpenMetrics text format (prometheus-client), which Prometheus scrapes as is.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub cycle: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub result: String,
}

type StepHistograms = Family<StepLabels, Histogram, fn() -> Histogram>;

/// Every metric `serve` exports.
pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<OutcomeLabels, Counter>,
    pub deploys: Family<RunLabels, Counter>,
    pub steps: StepHistograms,
    pub queue_depth: Gauge,
    pub queue_flushes: Gauge,
    pub running: Gauge,
    /// 1 on the replica that leads (always 1 without replicas).
    pub leader: Gauge,
}

fn step_histogram() -> Histogram {
    // 0.1 s to ~3.6 h: from a container restart to a rootfs build.
    Histogram::new(exponential_buckets(0.1, 3.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kcideploy");
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome (queued, ping, duplicate, ignored, unauthorized, too_large, busy, timeout, malformed, error)",
            webhooks.clone(),
        );
        let deploys = Family::<RunLabels, Counter>::default();
        registry.register(
            "deploys",
            "Deploys by cycle and result (success, failed, cancelled, nothing, error)",
            deploys.clone(),
        );
        let steps: StepHistograms = Family::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "Duration of finished steps",
            steps.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Accepted webhook deliveries not yet covered by a finished deploy",
            queue_depth.clone(),
        );
        let queue_flushes = Gauge::default();
        registry.register(
            "queue_flushes",
            "Batches of deliveries written to the queue since start (one disk flush each)",
            queue_flushes.clone(),
        );
        let running = Gauge::default();
        registry.register("deploy_running", "1 while a deploy runs", running.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 on the serve replica that runs deploys (the only one without a PostgreSQL backend)",
            leader.clone(),
        );
        Metrics {
            registry,
            webhooks,
            deploys,
            steps,
            queue_depth,
            queue_flushes,
            running,
            leader,
        }
    }
}

impl Metrics {
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn deploy(&self, cycle: &str, result: &str) {
        self.deploys
            .get_or_create(&RunLabels {
                cycle: cycle.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn step(&self, step: &str, result: &str, seconds: f64) {
        self.steps
            .get_or_create(&StepLabels {
                step: step.to_string(),
                result: result.to_string(),
            })
            .observe(seconds);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::default();
        m.webhook("queued");
        m.webhook("queued");
        m.webhook("unauthorized");
        m.deploy("partial", "success");
        m.step("api-up", "success", 1.5);
        m.queue_depth.set(3);
        let text = m.encode();
        for line in [
            "kcideploy_webhook_deliveries_total{outcome=\"queued\"} 2",
            "kcideploy_webhook_deliveries_total{outcome=\"unauthorized\"} 1",
            "kcideploy_deploys_total{cycle=\"partial\",result=\"success\"} 1",
            "kcideploy_step_duration_seconds_count{step=\"api-up\",result=\"success\"} 1",
            "kcideploy_queue_depth 3",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
