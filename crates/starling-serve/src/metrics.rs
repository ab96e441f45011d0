//! Prometheus metrics of the server and its engine, exposed at `GET /metrics`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Every metric the server reports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Request latency by route (for streams: until the last byte is produced).
    pub latency: HistogramVec,
    /// Time from queueing to the first token.
    pub ttft: Histogram,
    /// Time between consecutive tokens of a sequence.
    pub inter_token: Histogram,
    /// Time a sequence waited for a decode slot.
    pub queue_wait: Histogram,
    /// Duration of one batched decode step.
    pub step_seconds: Histogram,
    /// Sequences in each decode step.
    pub step_batch: Histogram,
    /// Tokens per second of the latest decode step (batch / step time).
    pub tokens_per_second: Gauge,
    /// Tokens generated.
    pub generated_tokens: IntCounter,
    /// Prompt tokens read.
    pub prompt_tokens: IntCounter,
    /// Sequences waiting for a slot.
    pub queue_depth: IntGauge,
    /// Sequences decoding (decode slots in use).
    pub batch_size: IntGauge,
    /// Decode slots (most sequences decoding together).
    pub slots: IntGauge,
    /// Requests refused because the queue was full.
    pub rejected: IntCounter,
    /// Sequences cancelled because the client went away.
    pub cancelled: IntCounter,
    /// Sequences ended by their deadline.
    pub timeouts: IntCounter,
    /// Client connections open now.
    pub connections_open: IntGauge,
    /// Connections answered 503 because `max_connections` were open.
    pub connections_refused: IntCounter,
    /// Requests whose body did not arrive within the body timeout.
    pub body_timeouts: IntCounter,
}

fn buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, n).unwrap_or_default()
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("starling".into()), None).unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(buckets(0.0005, 2.0, 18)),
            &["route"],
        )
        .expect("valid metric");
        let h = |name: &str, help: &str, b: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(b)).expect("valid metric")
        };
        let m = Self {
            requests,
            latency,
            ttft: h(
                "time_to_first_token_seconds",
                "Time from queueing to the first token",
                buckets(0.001, 2.0, 16),
            ),
            inter_token: h(
                "inter_token_latency_seconds",
                "Time between consecutive tokens of a sequence",
                buckets(0.0005, 2.0, 14),
            ),
            queue_wait: h(
                "queue_wait_seconds",
                "Time a sequence waited for a decode slot",
                buckets(0.0005, 2.0, 16),
            ),
            step_seconds: h(
                "decode_step_seconds",
                "Duration of one batched decode step",
                buckets(0.0005, 2.0, 14),
            ),
            step_batch: h(
                "decode_batch_size",
                "Sequences in each decode step",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ),
            tokens_per_second: Gauge::new(
                "decode_tokens_per_second",
                "Tokens per second of the latest decode step",
            )
            .expect("valid metric"),
            generated_tokens: IntCounter::new("generated_tokens_total", "Tokens generated")
                .expect("valid metric"),
            prompt_tokens: IntCounter::new("prompt_tokens_total", "Prompt tokens read")
                .expect("valid metric"),
            queue_depth: IntGauge::new("queue_depth", "Sequences waiting for a decode slot")
                .expect("valid metric"),
            batch_size: IntGauge::new("batch_size", "Sequences decoding now (slots in use)")
                .expect("valid metric"),
            slots: IntGauge::new("slots", "Decode slots (most sequences decoding together)")
                .expect("valid metric"),
            rejected: IntCounter::new(
                "rejected_total",
                "Requests refused with 429 because the queue was full",
            )
            .expect("valid metric"),
            cancelled: IntCounter::new(
                "cancelled_total",
                "Sequences cancelled because the client went away",
            )
            .expect("valid metric"),
            timeouts: IntCounter::new("timeouts_total", "Sequences ended by their deadline")
                .expect("valid metric"),
            connections_open: IntGauge::new("connections_open", "Client connections open now")
                .expect("valid metric"),
            connections_refused: IntCounter::new(
                "connections_refused_total",
                "Connections answered 503 because the connection limit was reached",
            )
            .expect("valid metric"),
            body_timeouts: IntCounter::new(
                "body_timeouts_total",
                "Requests whose body did not arrive within the body timeout",
            )
            .expect("valid metric"),
            registry,
        };
        let r = &m.registry;
        let _ = r.register(Box::new(m.requests.clone()));
        let _ = r.register(Box::new(m.latency.clone()));
        for c in [
            &m.ttft,
            &m.inter_token,
            &m.queue_wait,
            &m.step_seconds,
            &m.step_batch,
        ] {
            let _ = r.register(Box::new(c.clone()));
        }
        let _ = r.register(Box::new(m.tokens_per_second.clone()));
        for c in [
            &m.generated_tokens,
            &m.prompt_tokens,
            &m.rejected,
            &m.cancelled,
            &m.timeouts,
            &m.connections_refused,
            &m.body_timeouts,
        ] {
            let _ = r.register(Box::new(c.clone()));
        }
        let _ = r.register(Box::new(m.queue_depth.clone()));
        let _ = r.register(Box::new(m.batch_size.clone()));
        let _ = r.register(Box::new(m.slots.clone()));
        let _ = r.register(Box::new(m.connections_open.clone()));
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
