//! A process-wide request to stop training early (preemption: Slurm and Kubernetes send SIGTERM
//! before they kill a job).
//!
//! The binary installs the signal handler and calls [`request_stop`]; every trainer polls
//! [`stop_requested`] once per step and, when it is set, writes a checkpoint at the current step
//! and returns [`crate::Error::Interrupted`]. A rerun of the same command resumes from that
//! checkpoint and ends exactly where an uninterrupted run ends.
//!
//! ```
//! use msd::train::stop;
//! stop::reset();
//! assert!(!stop::stop_requested());
//! stop::request_stop();
//! assert!(stop::stop_requested());
//! stop::reset();
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every trainer in this process to checkpoint and stop at its next step boundary.
/// Async-signal-safe (a single atomic store).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Clears a stop request (tests, or a driver that handled it).
pub fn reset() {
    STOP.store(false, Ordering::SeqCst);
}
