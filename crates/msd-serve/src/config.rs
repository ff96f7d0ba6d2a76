//! Server settings: batching, admission, connection and request limits. Every limit has a default
//! that suits a small CPU machine; the `msd serve` flags override them, and [`ServeConfig::validate`]
//! refuses values outside the stated ranges (naming the setting and the range).

use std::time::Duration;

/// Longest `max_wait` accepted: a batcher never holds a request longer than this for company.
pub const MAX_WAIT_LIMIT: Duration = Duration::from_secs(1);
/// Longest `max_queue` accepted.
pub const MAX_QUEUE_LIMIT: Duration = Duration::from_secs(60);
/// Range of `read_timeout`.
pub const READ_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(600));
/// Most samples one request may ask for, whatever `max_n` says (bounds the server's memory).
pub const MAX_N_LIMIT: usize = 1 << 16;
/// Largest `max_batch` and `eval_chunk`.
pub const MAX_BATCH_LIMIT: usize = 1 << 14;
/// Most open connections accepted by `max_connections`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 16;
/// Largest `body_limit` (a generate request is a few dozen bytes).
pub const BODY_LIMIT_LIMIT: usize = 1 << 20;

/// How the server batches and bounds work.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Most samples one batch packs before it is evaluated.
    pub max_batch: usize,
    /// Rows of every network evaluation: a batch is evaluated in chunks of exactly this many
    /// samples (at most `max_batch`: the smaller of the two is used), the last one padded, so a
    /// sample's value never depends on what it was batched with (byte-identical answers
    /// whatever the load).
    pub eval_chunk: usize,
    /// Longest a batcher waits for more requests after the first one arrives.
    pub max_wait: Duration,
    /// Requests waiting per student (a hard cap next to the time bound `max_queue`).
    pub queue_cap: usize,
    /// Admission bound: a request is refused (503 + `Retry-After`) when the samples admitted to
    /// a student and not yet answered plus its own would take longer than this, at the slow end
    /// (p90) of recent chunk times; an admitted request that would still be answered later than
    /// this (the machine slowed down) is shed with the same 503 before evaluation. A request to
    /// an idle student is always admitted and never shed. See [`crate::admission`].
    pub max_queue: Duration,
    /// Most samples one request may ask for (`n` × number of classes).
    pub max_n: usize,
    /// Most samples one teacher request may ask for (multi-step sampling is slow).
    pub max_teacher_n: usize,
    /// Largest request body in bytes; a larger declared `Content-Length` is refused (413) before
    /// the body is read.
    pub body_limit: usize,
    /// A connection must send a request's headers within this time (idle keep-alive connections
    /// too), and then its body within this time again; otherwise it is closed.
    pub read_timeout: Duration,
    /// Most connections open at once; beyond it a new connection gets 503 and is closed.
    pub max_connections: usize,
    /// Steps of the teacher comparison, overriding those the bundle records for its teacher
    /// (`None`: the bundle's sampler as it is, guidance included).
    pub teacher_steps: Option<usize>,
    /// Seconds sent in `Retry-After` when the teacher's queue is full (student queues send
    /// their expected wait).
    pub retry_after_s: u64,
    /// Give freed memory back to the system once the server has been idle for this long
    /// (glibc `malloc_trim`; `None` never does).
    pub trim_after_idle: Option<Duration>,
    /// Artificial pause after every batch. Zero in service; tests use it to fill queues and to
    /// keep a request in flight across a shutdown.
    pub batch_delay: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            eval_chunk: 16,
            max_wait: Duration::from_millis(2),
            queue_cap: 128,
            max_queue: Duration::from_millis(2000),
            max_n: 1024,
            max_teacher_n: 256,
            body_limit: 16 * 1024,
            read_timeout: Duration::from_secs(10),
            max_connections: 256,
            teacher_steps: None,
            retry_after_s: 1,
            trim_after_idle: Some(Duration::from_millis(500)),
            batch_delay: Duration::ZERO,
        }
    }
}

impl ServeConfig {
    /// The rows of every network evaluation: `eval_chunk`, at most `max_batch`.
    pub fn chunk(&self) -> usize {
        self.eval_chunk.min(self.max_batch).max(1)
    }

    /// Checks that every bound is usable; the error names the setting and its range.
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            ("max_batch", self.max_batch, MAX_BATCH_LIMIT),
            ("eval_chunk", self.eval_chunk, MAX_BATCH_LIMIT),
            ("queue_cap", self.queue_cap, 1 << 20),
            ("max_n", self.max_n, MAX_N_LIMIT),
            ("max_teacher_n", self.max_teacher_n, MAX_N_LIMIT),
            ("body_limit", self.body_limit, BODY_LIMIT_LIMIT),
            (
                "max_connections",
                self.max_connections,
                MAX_CONNECTIONS_LIMIT,
            ),
            ("teacher_steps", self.teacher_steps.unwrap_or(1), 1000),
        ];
        if let Some((name, v, hi)) = ranges.iter().find(|(_, v, hi)| *v == 0 || v > hi) {
            return Err(format!("{name} must be between 1 and {hi}, got {v}"));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        if self.max_wait > MAX_WAIT_LIMIT {
            return Err(format!(
                "max_wait_ms must be between 0 and {}, got {}",
                ms(MAX_WAIT_LIMIT),
                ms(self.max_wait)
            ));
        }
        if self.max_queue.is_zero() || self.max_queue > MAX_QUEUE_LIMIT {
            return Err(format!(
                "max_queue_ms must be above 0 and at most {}, got {}",
                ms(MAX_QUEUE_LIMIT),
                ms(self.max_queue)
            ));
        }
        let (lo, hi) = READ_TIMEOUT_RANGE;
        if self.read_timeout < lo || self.read_timeout > hi {
            return Err(format!(
                "read_timeout_s must be between {} and {}, got {}",
                lo.as_secs_f64(),
                hi.as_secs_f64(),
                self.read_timeout.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// The settings in the units `msd serve` takes them (milliseconds and seconds as numbers):
/// [`ServeLimits::config`] checks and converts them, [`ServeLimits::to_args`] writes them as the
/// flags of a server started as a child process.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeLimits {
    pub max_batch: usize,
    pub eval_chunk: usize,
    pub max_wait_ms: f64,
    pub queue_cap: usize,
    pub max_queue_ms: f64,
    pub read_timeout_s: f64,
    pub max_connections: usize,
    pub max_n: usize,
    pub max_teacher_n: usize,
    pub body_limit: usize,
    pub teacher_steps: Option<usize>,
}

impl ServeLimits {
    /// The same settings as `msd serve` flags.
    pub fn to_args(&self) -> Vec<String> {
        let pairs = [
            ("--max-batch", self.max_batch.to_string()),
            ("--eval-chunk", self.eval_chunk.to_string()),
            ("--max-wait-ms", self.max_wait_ms.to_string()),
            ("--queue-cap", self.queue_cap.to_string()),
            ("--max-queue-ms", self.max_queue_ms.to_string()),
            ("--read-timeout-s", self.read_timeout_s.to_string()),
            ("--max-connections", self.max_connections.to_string()),
            ("--max-n", self.max_n.to_string()),
            ("--max-teacher-n", self.max_teacher_n.to_string()),
            ("--body-limit", self.body_limit.to_string()),
        ];
        let mut args: Vec<String> = pairs
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect();
        if let Some(t) = self.teacher_steps {
            args.extend(["--teacher-steps".to_string(), t.to_string()]);
        }
        args
    }

    /// The checked [`ServeConfig`]; an error starts with the setting's name (`max_wait_ms must
    /// be ...`).
    pub fn config(&self) -> Result<ServeConfig, String> {
        let secs = |name: &str, v: f64, lo: f64, hi: f64| {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return Err(format!(
                    "{name} must be a number between {lo} and {hi}, got {v}"
                ));
            }
            Ok(Duration::from_secs_f64(v))
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let max_wait = secs("max_wait_ms", self.max_wait_ms, 0.0, ms(MAX_WAIT_LIMIT))? / 1000;
        let max_queue = secs("max_queue_ms", self.max_queue_ms, 1.0, ms(MAX_QUEUE_LIMIT))? / 1000;
        let (lo, hi) = READ_TIMEOUT_RANGE;
        let read_timeout = secs(
            "read_timeout_s",
            self.read_timeout_s,
            lo.as_secs_f64(),
            hi.as_secs_f64(),
        )?;
        let cfg = ServeConfig {
            max_batch: self.max_batch,
            eval_chunk: self.eval_chunk,
            max_wait,
            queue_cap: self.queue_cap,
            max_queue,
            read_timeout,
            max_connections: self.max_connections,
            max_n: self.max_n,
            max_teacher_n: self.max_teacher_n,
            body_limit: self.body_limit,
            teacher_steps: self.teacher_steps,
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_bound_is_named() {
        ServeConfig::default().validate().unwrap();
        let d = ServeConfig::default;
        let cases = [
            (
                ServeConfig {
                    max_batch: 0,
                    ..d()
                },
                "max_batch",
            ),
            (
                ServeConfig {
                    eval_chunk: 0,
                    ..d()
                },
                "eval_chunk",
            ),
            (
                ServeConfig {
                    eval_chunk: 1 << 20,
                    ..d()
                },
                "eval_chunk",
            ),
            (
                ServeConfig {
                    max_n: usize::MAX,
                    ..d()
                },
                "max_n",
            ),
            (
                ServeConfig {
                    max_connections: 0,
                    ..d()
                },
                "max_connections",
            ),
            (
                ServeConfig {
                    max_wait: Duration::from_secs(u64::MAX),
                    ..d()
                },
                "max_wait_ms",
            ),
            (
                ServeConfig {
                    max_queue: Duration::ZERO,
                    ..d()
                },
                "max_queue_ms",
            ),
            (
                ServeConfig {
                    read_timeout: Duration::ZERO,
                    ..d()
                },
                "read_timeout_s",
            ),
        ];
        for (c, name) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(name), "{name}: {e}");
        }
    }

    #[test]
    fn limits_convert_to_a_config_and_back_to_flags() {
        let l = ServeLimits {
            max_batch: 256,
            eval_chunk: 16,
            max_wait_ms: 2.0,
            queue_cap: 128,
            max_queue_ms: 2000.0,
            read_timeout_s: 10.0,
            max_connections: 256,
            max_n: 1024,
            max_teacher_n: 256,
            body_limit: 16384,
            teacher_steps: Some(8),
        };
        let c = l.config().unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            (c.max_wait, c.max_queue, c.read_timeout),
            (ms(2), ms(2000), ms(10_000))
        );
        assert_eq!((c.max_batch, c.teacher_steps), (256, Some(8)));
        let a = l.to_args();
        assert_eq!(a[4..6], ["--max-wait-ms", "2"]);
        assert_eq!(a[a.len() - 2..], ["--teacher-steps", "8"]);
        let bad = |l: ServeLimits| l.config().unwrap_err();
        let e = bad(ServeLimits {
            max_queue_ms: f64::NAN,
            ..l.clone()
        });
        assert!(
            e.starts_with("max_queue_ms must be a number between 1 and 60000"),
            "{e}"
        );
        let e = bad(ServeLimits {
            max_batch: 0,
            ..l.clone()
        });
        assert!(e.starts_with("max_batch "), "{e}");
    }
}
