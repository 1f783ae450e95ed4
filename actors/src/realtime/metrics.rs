//! Counters of the realtime path, exported by `GET /metrics` (Prometheus text format).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub struct RealtimeMetrics {
    pub registry: Registry,
    /// Open sockets by role.
    pub connections: IntGaugeVec,
    /// Frames received, by message type.
    pub messages_in: IntCounterVec,
    /// Frames written, by message type.
    pub messages_out: IntCounterVec,
    /// Frames not processed or not written, by reason.
    pub frames_dropped: IntCounterVec,
    /// Positions replaced by a newer one before anyone saw them (batching, slow readers).
    pub locations_coalesced: IntCounter,
    /// Position batches dropped because the geo index was behind.
    pub locations_shed: IntCounter,
    /// Sockets closed by the engine, by reason.
    pub sockets_closed: IntCounterVec,
    /// Messages waiting for the busy actors.
    pub mailbox_depth: IntGaugeVec,
    /// Drivers known to the geo index, and those with a fresh position.
    pub drivers: IntGaugeVec,
    /// From a position reaching the engine to its frame being written to a watcher's socket.
    pub location_fanout_seconds: Histogram,
    /// From a job becoming ready for dispatch to its offer being sent to a driver.
    pub dispatch_offer_seconds: Histogram,
    /// What became of dispatch attempts: offered, declined, expired, unassigned.
    pub dispatch_outcomes: IntCounterVec,
    /// Stripe webhook deliveries by event type and result (applied, ignored, stored, repeat).
    pub stripe_webhooks: IntCounterVec,
    /// Outbox attempts (payouts, refunds) by kind and result (sent, retry, failed, owed).
    pub outbox_outcomes: IntCounterVec,
    /// Notification attempts by channel and result (sent, skipped, retry, dead).
    pub notifications: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl RealtimeMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).unwrap(),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).unwrap(),
            )
        };
        Self {
            connections: gauge_vec(
                "umuve_ws_connections",
                "Open WebSocket connections by role",
                &["role"],
            ),
            messages_in: counter_vec(
                "umuve_ws_messages_in_total",
                "WebSocket frames received by type",
                &["type"],
            ),
            messages_out: counter_vec(
                "umuve_ws_messages_out_total",
                "WebSocket frames written by type",
                &["type"],
            ),
            frames_dropped: counter_vec(
                "umuve_ws_frames_dropped_total",
                "Frames dropped (rate limited, shed, slow reader, full mailbox)",
                &["reason"],
            ),
            locations_coalesced: register(
                &registry,
                IntCounter::new(
                    "umuve_locations_coalesced_total",
                    "Positions superseded by a newer one before delivery",
                )
                .unwrap(),
            ),
            locations_shed: register(
                &registry,
                IntCounter::new(
                    "umuve_locations_shed_total",
                    "Positions dropped because the geo index was behind",
                )
                .unwrap(),
            ),
            sockets_closed: counter_vec(
                "umuve_ws_closed_by_server_total",
                "Sockets the engine closed, by reason",
                &["reason"],
            ),
            mailbox_depth: gauge_vec(
                "umuve_mailbox_depth",
                "Messages waiting for an actor",
                &["actor"],
            ),
            drivers: gauge_vec("umuve_drivers", "Drivers in the geo index", &["state"]),
            location_fanout_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "umuve_location_fanout_seconds",
                        "From a position reaching the engine to its frame written to a watcher",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ]),
                )
                .unwrap(),
            ),
            dispatch_offer_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "umuve_dispatch_offer_seconds",
                        "From a job ready for dispatch to its offer sent to the nearest driver",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
                        0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ]),
                )
                .unwrap(),
            ),
            dispatch_outcomes: counter_vec(
                "umuve_dispatch_outcomes_total",
                "Dispatch attempts by outcome (offered, declined, expired, unassigned)",
                &["outcome"],
            ),
            stripe_webhooks: counter_vec(
                "umuve_stripe_webhooks_total",
                "Verified Stripe webhook deliveries by event type and result",
                &["type", "result"],
            ),
            outbox_outcomes: counter_vec(
                "umuve_outbox_outcomes_total",
                "Outbox attempts (payouts, refunds) by kind and result",
                &["kind", "result"],
            ),
            notifications: counter_vec(
                "umuve_notifications_total",
                "Notification attempts (push, SMS, email) by channel and result",
                &["channel", "result"],
            ),
            registry,
        }
    }
}

/// The process-wide realtime metrics.
pub static METRICS: LazyLock<RealtimeMetrics> = LazyLock::new(RealtimeMetrics::new);

/// A gauge that follows a queue: up when a message is sent, down when it is handled.
pub fn mailbox(actor: &str) -> IntGauge {
    METRICS.mailbox_depth.with_label_values(&[actor])
}

/// `counters.with_label_values(&[label]).inc()` for the hot paths (every frame in and out):
/// the label's counter is looked up once per thread and kept, instead of hashing the label and
/// taking the vector's lock on every message.
pub fn count(counters: &'static IntCounterVec, label: &'static str) {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<Vec<(usize, usize, usize, IntCounter)>> = const { RefCell::new(Vec::new()) };
    }
    let key = (
        counters as *const IntCounterVec as usize,
        label.as_ptr() as usize,
        label.len(),
    );
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((.., counter)) = cache.iter().find(|(v, p, l, _)| (*v, *p, *l) == key) {
            counter.inc();
            return;
        }
        let counter = counters.with_label_values(&[label]);
        counter.inc();
        cache.push((key.0, key.1, key.2, counter));
    });
}
