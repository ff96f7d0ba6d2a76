//! Server settings: batching, queue bounds, request limits. Every limit has a default that suits a
//! small CPU machine; the `msd serve` flags override them.

use std::time::Duration;

/// How the server batches and bounds work.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Most samples one network evaluation packs (a larger request is evaluated in chunks).
    pub max_batch: usize,
    /// Longest a batcher waits for more requests after the first one arrives.
    pub max_wait: Duration,
    /// Requests waiting per student; beyond it the server answers 503 with `Retry-After`.
    pub queue_cap: usize,
    /// Most samples one request may ask for (`n` × number of classes).
    pub max_n: usize,
    /// Most samples one teacher request may ask for (multi-step sampling is slow).
    pub max_teacher_n: usize,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Steps of the teacher comparison, overriding those the bundle records for its teacher
    /// (`None`: the bundle's sampler as it is, guidance included).
    pub teacher_steps: Option<usize>,
    /// Seconds sent in `Retry-After` when a queue is full.
    pub retry_after_s: u64,
    /// Artificial pause after every batch. Zero in service; tests use it to fill queues and to
    /// keep a request in flight across a shutdown.
    pub batch_delay: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_wait: Duration::from_millis(2),
            queue_cap: 128,
            max_n: 1024,
            max_teacher_n: 256,
            body_limit: 16 * 1024,
            teacher_steps: None,
            retry_after_s: 1,
            batch_delay: Duration::ZERO,
        }
    }
}

impl ServeConfig {
    /// Checks that every bound is usable; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_batch", self.max_batch),
            ("queue_cap", self.queue_cap),
            ("max_n", self.max_n),
            ("max_teacher_n", self.max_teacher_n),
            ("body_limit", self.body_limit),
            ("teacher_steps", self.teacher_steps.unwrap_or(1)),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("{name} must be at least 1")),
            None => Ok(()),
        }
    }
}
