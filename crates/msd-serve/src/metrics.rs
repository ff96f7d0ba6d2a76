//! Prometheus metrics of one server (its own registry, so several servers can live in one
//! process): requests and errors by route and status, requests in flight, per-student latency, evaluation time and
//! batch-size histograms, queue depths, samples served and queue-full rejections.

use prometheus::{
    exponential_buckets, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of a server.
pub struct Metrics {
    registry: Registry,
    /// `msd_http_requests_total{route,status}`.
    pub http_requests: IntCounterVec,
    /// `msd_http_errors_total{route,status}`: responses with status ≥ 400.
    pub http_errors: IntCounterVec,
    /// `msd_http_in_flight`: requests being answered.
    pub in_flight: IntGauge,
    /// `msd_student_latency_seconds{student}`: from enqueue to result, per job.
    pub student_latency: HistogramVec,
    /// `msd_generate_seconds{student}`: one batched network evaluation.
    pub generate_seconds: HistogramVec,
    /// `msd_batch_size{student}`: samples per network evaluation.
    pub batch_size: HistogramVec,
    /// `msd_queue_depth{student}`: requests waiting for the batcher.
    pub queue_depth: IntGaugeVec,
    /// `msd_samples_total{student}`: samples generated.
    pub samples: IntCounterVec,
    /// `msd_queue_full_total{student}`: requests refused with 503 (at admission or shed late).
    pub queue_full: IntCounterVec,
    /// `msd_shed_late_total{student}`: admitted requests shed with 503 before evaluation because
    /// they could no longer be answered within the admission bound.
    pub shed_late: IntCounterVec,
    /// `msd_teacher_seconds`: one multi-step teacher request.
    pub teacher_seconds: Histogram,
    /// `msd_queued_samples{student}`: samples admitted and not yet answered.
    pub queued_samples: IntGaugeVec,
    /// `msd_chunk_seconds{student}`: the admission estimate of one evaluation chunk.
    pub chunk_seconds: GaugeVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are fixed and distinct, so registration cannot collide.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let latency = exponential_buckets(0.0001, 2.0, 18)?;
        let batch = exponential_buckets(1.0, 2.0, 12)?;
        let student = &["student"];
        Ok(Self {
            http_requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "msd_http_requests_total",
                        "HTTP requests by route and status",
                    ),
                    &["route", "status"],
                )?,
            ),
            http_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("msd_http_errors_total", "HTTP responses with status >= 400"),
                    &["route", "status"],
                )?,
            ),
            in_flight: reg(
                &r,
                IntGauge::new("msd_http_in_flight", "HTTP requests being answered")?,
            ),
            student_latency: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "msd_student_latency_seconds",
                        "Per-student job latency from enqueue to result",
                    )
                    .buckets(latency.clone()),
                    student,
                )?,
            ),
            generate_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "msd_generate_seconds",
                        "Time of one batched one-step network evaluation",
                    )
                    .buckets(latency.clone()),
                    student,
                )?,
            ),
            batch_size: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("msd_batch_size", "Samples per network evaluation")
                        .buckets(batch),
                    student,
                )?,
            ),
            queue_depth: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("msd_queue_depth", "Requests waiting in a student's queue"),
                    student,
                )?,
            ),
            samples: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("msd_samples_total", "Samples generated per student"),
                    student,
                )?,
            ),
            queue_full: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "msd_queue_full_total",
                        "Requests refused because a student's queue was full",
                    ),
                    student,
                )?,
            ),
            shed_late: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "msd_shed_late_total",
                        "Admitted requests shed before evaluation: they would have been answered after the admission bound",
                    ),
                    student,
                )?,
            ),
            teacher_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "msd_teacher_seconds",
                        "Time of one multi-step teacher request",
                    )
                    .buckets(latency),
                )?,
            ),
            queued_samples: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "msd_queued_samples",
                        "Samples admitted to a student and not yet answered",
                    ),
                    student,
                )?,
            ),
            chunk_seconds: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "msd_chunk_seconds",
                        "Estimated time of one evaluation chunk (admission by expected wait)",
                    ),
                    student,
                )?,
            ),
            registry: r,
        })
    }

    /// Creates the per-student series for students `0..k` so they show (at zero) from the start.
    pub fn init_students(&self, k: usize) {
        for s in 0..k {
            let s = s.to_string();
            let l = [s.as_str()];
            self.queue_depth.with_label_values(&l).set(0);
            self.samples.with_label_values(&l);
            self.queue_full.with_label_values(&l);
            self.shed_late.with_label_values(&l);
            self.batch_size.with_label_values(&l);
            self.generate_seconds.with_label_values(&l);
            self.student_latency.with_label_values(&l);
        }
    }

    /// Counts one HTTP response.
    pub fn observe_response(&self, route: &str, status: u16) {
        let s = status.to_string();
        self.http_requests.with_label_values(&[route, &s]).inc();
        if status >= 400 {
            self.http_errors.with_label_values(&[route, &s]).inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}
