//! Preemption: SIGTERM (what Slurm and Kubernetes send before killing a job) and SIGINT ask the
//! library's trainers to checkpoint at their current step and stop
//! ([`msd::train::stop::request_stop`]); the process then exits with [`EXIT_INTERRUPTED`], and
//! rerunning the same command resumes from that checkpoint. A second SIGINT (Ctrl-C twice)
//! exits at once; repeated SIGTERMs are harmless (a scheduler may signal every process of a job).

/// Exit status of a training command stopped by SIGTERM/SIGINT after writing its checkpoint
/// (`EX_TEMPFAIL` of sysexits.h: "try again later"). Batch scripts requeue on it.
pub const EXIT_INTERRUPTED: u8 = 75;

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic load/store, or _exit.
    if sig == libc::SIGINT && msd::train::stop::stop_requested() {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    msd::train::stop::request_stop();
}

/// Installs the handler for SIGTERM and SIGINT (training commands only: the others keep the
/// default of dying at once).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic flag or calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Whether `e` (or an error it wraps) is the library's `Error::Interrupted`.
pub fn interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<msd::Error>(),
            Some(msd::Error::Interrupted { .. })
        )
    })
}
