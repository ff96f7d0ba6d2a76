//! Process-wide settings for CPU tensor work: the C allocator's policy and the number of
//! intra-op threads per call site, both chosen by measurement on this project's CPU.
//!
//! **Allocator.** libtorch takes every activation buffer from the C library's `malloc`. glibc
//! serves blocks above its mmap threshold (128 KiB rising to at most 32 MiB) with a fresh `mmap`
//! and gives them back with `munmap` on `free`, so each forward at batch 250–500 maps, faults in
//! (the kernel zeroes every page) and unmaps hundreds of megabytes again. Measured with
//! `msd --threads 1 sample --teacher results/mnist-teacher --n 25 --steps 2 --guidance 1.25`
//! (batch 500 through the network; 2 alternating rounds on a shared 2-core machine): glibc's
//! defaults took 16.1 / 18.4 s CPU of which 7.1 / 8.1 s system time, 3.4–3.5 M page faults;
//! [`AllocatorPolicy::Reuse`] took 14.4 / 12.5 s CPU, 4.0 / 1.7 s system, 0.45–0.66 M faults,
//! at a peak resident set of 1.95–2.03 GB instead of 1.34–1.45 GB (freed blocks stay in the heap
//! for the next call).
//! [`configure_allocator`] applies that policy; call it once, first thing in `main`.
//!
//! **Threads.** [`threads_for`] maps a call site and batch size to a thread count (see its
//! table); [`apply_threads`] sets it unless the user fixed `--threads` ([`fix_threads`]).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// What [`configure_allocator`] does with the C allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocatorPolicy {
    /// Keep freed blocks in the heap for reuse: no `mmap` for large blocks, and the heap's top
    /// is returned to the kernel only above [`TRIM_THRESHOLD`] bytes.
    Reuse,
    /// Leave the C library's defaults alone (the behaviour before this setting existed).
    System,
}

/// Bytes of free memory at the top of the heap kept before glibc gives memory back.
pub const TRIM_THRESHOLD: usize = 512 << 20;

/// The environment variable that selects [`AllocatorPolicy::System`] when set to `system`
/// (used by `msd bench` to time the "before" row in the same binary).
pub const ALLOCATOR_ENV: &str = "MSD_ALLOCATOR";

impl AllocatorPolicy {
    /// [`AllocatorPolicy::System`] when `MSD_ALLOCATOR=system`, otherwise
    /// [`AllocatorPolicy::Reuse`].
    pub fn from_env() -> Self {
        match std::env::var(ALLOCATOR_ENV) {
            Ok(v) if v.eq_ignore_ascii_case("system") => AllocatorPolicy::System,
            _ => AllocatorPolicy::Reuse,
        }
    }

    /// `"reuse"` or `"system"`, for reports.
    pub fn name(self) -> &'static str {
        match self {
            AllocatorPolicy::Reuse => "reuse",
            AllocatorPolicy::System => "system",
        }
    }
}

/// Applies `policy` to the process's C allocator. Returns whether a setting was changed (false
/// for [`AllocatorPolicy::System`] and on platforms other than Linux/glibc, where it does
/// nothing). Call it before the first large tensor is allocated (first thing in `main`).
pub fn configure_allocator(policy: AllocatorPolicy) -> bool {
    match policy {
        AllocatorPolicy::System => false,
        AllocatorPolicy::Reuse => reuse_heap(),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reuse_heap() -> bool {
    // SAFETY: mallopt only changes glibc's tuning parameters; it is safe to call at any time
    // (glibc serialises it against allocations) and reports failure by returning 0.
    unsafe {
        let no_mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
        let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1;
        no_mmap && trim
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reuse_heap() -> bool {
    false
}

/// Where tensor work happens, for [`threads_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallSite {
    /// One-step generation by a student (serving, evaluation of bundles).
    StudentOneStep,
    /// Multi-step sampling of a teacher (each step one batched forward).
    TeacherSampling,
    /// A training step (forward + backward + optimiser).
    Training,
}

/// User-fixed thread count (`--threads`); 0 means "not fixed".
static FIXED_THREADS: AtomicI32 = AtomicI32::new(0);

/// Records a thread count the user asked for; [`ThreadPolicy::apply`] then never overrides it.
pub fn fix_threads(n: i32) {
    let n = n.max(1);
    FIXED_THREADS.store(n, Ordering::Relaxed);
    tch::set_num_threads(n);
}

/// The thread count fixed with [`fix_threads`], if any.
pub fn fixed_threads() -> Option<i32> {
    match FIXED_THREADS.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Cores available to this process.
pub fn cores() -> i32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i32)
}

/// Cores not busy with other work when first asked: `cores() − ⌊1-minute load average⌋`,
/// at least 1 (Linux; elsewhere all cores). Read once per process, before this process's own
/// threads add to the load.
pub fn free_cores() -> i32 {
    static FREE: OnceLock<i32> = OnceLock::new();
    *FREE.get_or_init(|| {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
        free_of(cores(), load)
    })
}

/// `cores − ⌊load⌋`, clamped to `1..=cores`; all cores when the load is unknown.
fn free_of(cores: i32, load: Option<f64>) -> i32 {
    let cores = cores.max(1);
    match load {
        Some(l) if l.is_finite() && l >= 0.0 => (cores - l.floor() as i32).clamp(1, cores),
        _ => cores,
    }
}

/// Batch below which one intra-op thread is used for a one-step student forward. Measured
/// (PyTorch 2.11's libtorch, the MNIST UNet, median of 40 forwards, 3 alternating rounds): at
/// batch 1 two threads took 925–1650 ms against 49–86 ms for one thread with libgomp's default
/// spin-waiting on a loaded 2-core machine, and 94–135 ms against 64–82 ms with
/// `OMP_WAIT_POLICY=passive`: one sample's per-layer work is too small to split.
pub const SMALL_BATCH: i64 = 8;

/// Intra-op threads for `site` at `batch` when `free` cores are idle: one thread for one-step
/// batches below [`SMALL_BATCH`], otherwise the idle cores. Threads beyond the idle cores do
/// not pay: at batch 64 on the loaded 2-core machine two threads took 6.9–8.1 s per forward
/// against 2.08–2.10 s for one (libgomp spin-waits for a descheduled partner).
pub fn threads_for(site: CallSite, batch: i64, free: i32) -> i32 {
    match site {
        CallSite::StudentOneStep if batch < SMALL_BATCH => 1,
        _ => free.max(1),
    }
}

/// Intra-op threads of a server whose `students` each run their batches on a thread of their
/// own, when `free` cores are idle: the idle cores shared among the students, at least one.
/// Threads beyond the idle cores do not pay (see [`threads_for`]), and K students each taking
/// all cores would oversubscribe them K times under load.
pub fn serve_threads(students: usize, free: i32) -> i32 {
    (free.max(1) / students.max(1) as i32).max(1)
}

/// Sets torch's intra-op threads for `site` at `batch` unless the user fixed them with
/// `--threads`; returns the count in effect. Threads are process-wide: call it where the work
/// of a site begins, not inside library loops.
pub fn apply_threads(site: CallSite, batch: i64) -> i32 {
    match fixed_threads() {
        Some(n) => n,
        None => {
            let n = threads_for(site, batch, free_cores());
            if tch::get_num_threads() != n {
                tch::set_num_threads(n);
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_policy_reads_the_environment_word() {
        // Only this test touches MSD_ALLOCATOR. The word `system` (any case) selects the C
        // library's defaults; anything else, or nothing, keeps reuse on.
        std::env::set_var(ALLOCATOR_ENV, "System");
        assert_eq!(AllocatorPolicy::from_env(), AllocatorPolicy::System);
        std::env::set_var(ALLOCATOR_ENV, "reuse");
        assert_eq!(AllocatorPolicy::from_env(), AllocatorPolicy::Reuse);
        std::env::remove_var(ALLOCATOR_ENV);
        assert_eq!(AllocatorPolicy::from_env(), AllocatorPolicy::Reuse);
        assert!(!configure_allocator(AllocatorPolicy::System));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn reuse_policy_is_accepted_by_glibc_and_large_blocks_still_work() {
        assert!(configure_allocator(AllocatorPolicy::Reuse));
        // A 64 MiB tensor (above glibc's largest mmap threshold) is now served from the heap;
        // allocate, write and free it twice to check the heap path end to end.
        for _ in 0..2 {
            let t = tch::Tensor::ones([16 << 20], (tch::Kind::Float, tch::Device::Cpu));
            assert_eq!(
                t.sum(tch::Kind::Double).double_value(&[]),
                (16 << 20) as f64
            );
        }
    }

    #[test]
    fn small_one_step_batches_get_one_thread_and_the_rest_the_idle_cores() {
        assert_eq!(threads_for(CallSite::StudentOneStep, 1, 2), 1);
        assert_eq!(threads_for(CallSite::StudentOneStep, 7, 16), 1);
        assert_eq!(threads_for(CallSite::StudentOneStep, 8, 2), 2);
        assert_eq!(threads_for(CallSite::StudentOneStep, 64, 2), 2);
        assert_eq!(threads_for(CallSite::TeacherSampling, 500, 2), 2);
        assert_eq!(threads_for(CallSite::TeacherSampling, 1, 2), 2);
        assert_eq!(threads_for(CallSite::Training, 8, 4), 4);
        assert_eq!(threads_for(CallSite::Training, 64, 0), 1);
    }

    #[test]
    fn a_server_shares_the_idle_cores_among_its_students() {
        assert_eq!(serve_threads(1, 2), 2);
        assert_eq!(serve_threads(2, 2), 1);
        assert_eq!(serve_threads(4, 2), 1);
        assert_eq!(serve_threads(2, 16), 8);
        assert_eq!(serve_threads(3, 13), 4);
        assert_eq!(serve_threads(0, 0), 1);
    }

    #[test]
    fn idle_cores_subtract_the_whole_part_of_the_load() {
        assert_eq!(free_of(2, Some(0.3)), 2);
        assert_eq!(free_of(2, Some(1.7)), 1);
        assert_eq!(free_of(2, Some(16.0)), 1);
        assert_eq!(free_of(16, Some(3.2)), 13);
        assert_eq!(free_of(4, None), 4);
        assert_eq!(free_of(4, Some(f64::NAN)), 4);
        assert_eq!(free_of(0, Some(0.0)), 1);
    }
}
