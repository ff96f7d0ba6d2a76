//! Admission arithmetic of a student's queue: the service-time estimate, and the two decisions
//! made with it (admit a new job; shed a queued job that can no longer meet the bound). Pure: no
//! clock and no thread, the batcher feeds it the times it measures and tests feed it chosen ones.
//!
//! **Estimate.** One evaluation chunk is costed at the larger of a moving average and a high
//! quantile ([`QUANTILE`]) of the last [`WINDOW`] per-chunk times: a queue admitted now is costed
//! at the slow end of what the machine did recently, not at its mean. Under a load that swings
//! (the other students waking up, other processes) the mean underestimated an accepted request's
//! wait about twofold (results/serve/load.md: p99 3.65 s against an admission bound of 2 s).
//!
//! **Admission.** A job of `own` samples, with `ahead` samples admitted and not yet answered
//! (queued *or being evaluated*), is admitted when `cost × ⌈(ahead + own) / chunk⌉ ≤ bound`: the
//! work in flight and the job's own evaluation count, not only the queue. A job for an idle
//! student (nothing ahead) is always admitted, so a large request is never refused forever.
//!
//! **Late shedding.** When the batcher takes a job into a batch of `rows` samples (all answered
//! when the batch ends), the job is shed (503 with `Retry-After`) if
//! `waited + cost × ⌈rows / chunk⌉ > bound`: the machine slowed down after it was admitted and it
//! would be answered late. Jobs admitted to an idle student are never shed.

use std::collections::VecDeque;
use std::time::Duration;

/// Per-chunk times kept for the quantile (one per evaluated batch).
pub const WINDOW: usize = 32;
/// The quantile of recent per-chunk times that admission uses.
pub const QUANTILE: f64 = 0.9;
/// Weight of a new time in the moving average, in tenths.
const EWMA_TENTHS: u32 = 3;
/// Bounds of `Retry-After`, seconds.
const RETRY_RANGE: (u64, u64) = (1, 60);

/// Recent times of one evaluation chunk of a student.
#[derive(Clone, Debug, Default)]
pub struct ServiceTime {
    recent: VecDeque<Duration>,
    mean: Duration,
}

impl ServiceTime {
    /// An estimate that starts from one measured chunk time.
    pub fn seeded(per_chunk: Duration) -> Self {
        let mut s = Self::default();
        s.observe(per_chunk);
        s
    }

    /// Adds the measured time of one chunk (a batch's time over its chunks).
    pub fn observe(&mut self, per_chunk: Duration) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(per_chunk);
        self.mean = if self.recent.len() == 1 {
            per_chunk
        } else {
            (self.mean.saturating_mul(10 - EWMA_TENTHS) / 10)
                .saturating_add(per_chunk.saturating_mul(EWMA_TENTHS) / 10)
        };
    }

    /// The moving average of the chunk times (zero before the first).
    pub fn mean(&self) -> Duration {
        self.mean
    }

    /// The `q` quantile (nearest rank) of the recent chunk times (zero before the first).
    pub fn quantile(&self, q: f64) -> Duration {
        let mut v: Vec<Duration> = self.recent.iter().copied().collect();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort_unstable();
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The cost of one chunk that admission uses: the larger of the mean and the
    /// [`QUANTILE`] of the recent times.
    pub fn per_chunk(&self) -> Duration {
        self.mean.max(self.quantile(QUANTILE))
    }
}

/// Chunks of `chunk` rows that `samples` samples take.
pub fn chunks(samples: usize, chunk: usize) -> u32 {
    samples.div_ceil(chunk.max(1)).min(u32::MAX as usize) as u32
}

/// Time to evaluate `samples` samples at `per_chunk` per chunk.
pub fn cost(per_chunk: Duration, samples: usize, chunk: usize) -> Duration {
    per_chunk.saturating_mul(chunks(samples, chunk))
}

/// Whether a job of `own` samples is admitted with `ahead` samples admitted before it and not
/// yet answered; `Err(retry_after_s)` when refused.
pub fn admit(
    per_chunk: Duration,
    ahead: usize,
    own: usize,
    chunk: usize,
    bound: Duration,
) -> Result<(), u64> {
    if ahead == 0 || cost(per_chunk, ahead + own, chunk) <= bound {
        Ok(())
    } else {
        Err(retry_after_s(per_chunk, ahead, chunk))
    }
}

/// Whether a job that has waited `waited`, taken into a batch of `rows` samples, would be answered
/// after `bound` (and so is shed).
pub fn late(
    per_chunk: Duration,
    waited: Duration,
    rows: usize,
    chunk: usize,
    bound: Duration,
) -> bool {
    waited.saturating_add(cost(per_chunk, rows, chunk)) > bound
}

/// `Retry-After` for a refused job: the expected time of the work ahead, whole seconds in 1..=60.
pub fn retry_after_s(per_chunk: Duration, ahead: usize, chunk: usize) -> u64 {
    let s = cost(per_chunk, ahead, chunk).as_secs_f64().ceil() as u64;
    s.clamp(RETRY_RANGE.0, RETRY_RANGE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_estimate_is_the_slow_end_of_recent_chunks_not_their_mean() {
        // Nine chunks of 100 ms and one of 400 ms: the nearest-rank p90 of ten is the 9th
        // smallest (100 ms); add a second slow chunk and it is 400 ms.
        let mut s = ServiceTime::seeded(ms(100));
        for _ in 0..8 {
            s.observe(ms(100));
        }
        s.observe(ms(400));
        assert_eq!(s.quantile(QUANTILE), ms(100));
        // The average follows the slow chunk: 100·0.7 + 400·0.3 = 190 ms.
        assert_eq!(s.mean(), ms(190));
        assert_eq!(s.per_chunk(), ms(190));
        s.observe(ms(400));
        assert_eq!(s.quantile(QUANTILE), ms(400));
        assert_eq!(s.per_chunk(), ms(400));
        assert_eq!(s.quantile(0.0), ms(100));
        assert_eq!(s.quantile(1.0), ms(400));
    }

    #[test]
    fn the_window_forgets_old_chunks() {
        let mut s = ServiceTime::seeded(ms(1000));
        for _ in 0..WINDOW {
            s.observe(ms(10));
        }
        assert_eq!(s.quantile(1.0), ms(10));
        assert!(s.mean() < ms(11), "{:?}", s.mean());
        assert_eq!(ServiceTime::default().per_chunk(), Duration::ZERO);
    }

    #[test]
    fn admission_counts_the_work_in_flight_and_the_jobs_own_chunks() {
        let (chunk, bound) = (16, ms(2000));
        // 200 ms a chunk: ten chunks fit the bound, eleven do not.
        assert_eq!(admit(ms(200), 144, 16, chunk, bound), Ok(()));
        // 160 ahead + 16 own = 11 chunks = 2.2 s: refused, retry after the 10 chunks ahead (2 s).
        assert_eq!(admit(ms(200), 160, 16, chunk, bound), Err(2));
        // A partial chunk costs a whole one: 145 + 16 = 161 samples → 11 chunks.
        assert_eq!(admit(ms(200), 145, 16, chunk, bound), Err(2));
        // A job alone is admitted whatever its own cost.
        assert_eq!(admit(ms(200), 0, 1024, chunk, bound), Ok(()));
        // Retry-After stays within 1..=60 s.
        assert_eq!(retry_after_s(ms(1), 1, chunk), 1);
        assert_eq!(retry_after_s(ms(1000), 16 * 1000, chunk), 60);
    }

    #[test]
    fn a_quantile_estimate_refuses_what_the_mean_would_admit() {
        // A machine that alternates 100 ms and 300 ms chunks: the mean-based bound lets in a
        // queue that the slow chunks would take 1.5 times the bound to clear.
        let mut s = ServiceTime::seeded(ms(100));
        for i in 0..WINDOW {
            s.observe(ms(if i % 2 == 0 { 300 } else { 100 }));
        }
        let (chunk, bound) = (16, ms(2000));
        let ahead = 16 * 9;
        assert!(s.mean() < ms(250), "{:?}", s.mean());
        assert_eq!(admit(s.mean(), ahead, 16, chunk, bound), Ok(()));
        assert_eq!(s.per_chunk(), ms(300));
        assert_eq!(admit(s.per_chunk(), ahead, 16, chunk, bound), Err(3));
        // What it admits clears within the bound even if every chunk is slow.
        let most = (0..1000)
            .take_while(|&k| admit(s.per_chunk(), 16 * k, 16, chunk, bound).is_ok())
            .last()
            .unwrap();
        assert_eq!(most, 5);
        assert!(cost(ms(300), 16 * (most + 1), chunk) <= bound);
    }

    #[test]
    fn late_jobs_are_those_whose_batch_would_end_after_the_bound() {
        let (chunk, bound) = (16, ms(2000));
        // Waited 1.5 s; a batch of 2 chunks at 200 ms ends at 1.9 s: kept. Of 3 chunks: 2.1 s.
        assert!(!late(ms(200), ms(1500), 32, chunk, bound));
        assert!(late(ms(200), ms(1500), 33, chunk, bound));
        assert!(!late(ms(200), ms(1400), 48, chunk, bound));
        assert!(late(Duration::MAX, Duration::MAX, 1, chunk, bound));
    }
}
