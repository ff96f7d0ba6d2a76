//! Process memory: the resident set size from `/proc` (Linux), and giving freed heap memory back
//! to the system once the server is idle. glibc keeps freed memory in its arenas (one per busy
//! thread), so after a burst of large batches the RSS would otherwise stay near its peak;
//! `malloc_trim(0)` returns the free pages of every arena. Only called when no batch has run for
//! a while, so it never delays a request.

use crate::batcher::ACTIVITY;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Resident set size now and its peak (`VmRSS`, `VmHWM` of `/proc/<pid>/status`), in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rss {
    pub current: u64,
    pub peak: u64,
}

/// Reads the RSS of process `pid` (`None` off Linux or when the process is gone).
pub fn rss_of(pid: u32) -> Option<Rss> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Reads this process's RSS.
pub fn rss() -> Option<Rss> {
    rss_of(std::process::id())
}

fn parse_status(s: &str) -> Option<Rss> {
    let kb = |key: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|v| v * 1024)
    };
    Some(Rss {
        current: kb("VmRSS:")?,
        peak: kb("VmHWM:")?,
    })
}

/// Returns free heap memory to the system (glibc); a no-op elsewhere.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A thread that calls [`trim`] once no batch has run for `idle` (and something ran since the
/// last trim). Stops when the returned guard is dropped.
pub struct Trimmer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trimmer {
    pub fn start(idle: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let tick = (idle / 2).max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("msd-trim".into())
            .spawn(move || {
                let mut seen = ACTIVITY.load(Ordering::Relaxed);
                let mut quiet = Duration::ZERO;
                let mut dirty = false;
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let now = ACTIVITY.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, quiet, dirty) = (now, Duration::ZERO, true);
                        continue;
                    }
                    quiet += tick;
                    if dirty && quiet >= idle {
                        trim();
                        dirty = false;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_and_this_process_has_a_size() {
        let s = "Name:\tmsd\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            parse_status(s),
            Some(Rss {
                current: 1024 * 1024,
                peak: 2048 * 1024
            })
        );
        assert_eq!(parse_status("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            let r = rss().unwrap();
            assert!(r.current > 0 && r.peak >= r.current, "{r:?}");
        }
    }
}
