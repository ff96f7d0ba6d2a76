//! Worker processes: runs prepared commands (e.g. `msd toy --worker` per (width, seed) group),
//! at most `jobs` at a time, each with its stdout and stderr in its own log file. libtorch's
//! generator is process-global, so parallel pieces of an experiment run as processes, not
//! threads, to stay reproducible.

use crate::{Error, Result};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// One worker: a label for messages, the command, and its log file.
pub struct WorkerTask {
    pub label: String,
    pub command: Command,
    pub log: PathBuf,
}

/// What happened to a worker.
pub enum WorkerEvent<'a> {
    Started {
        label: &'a str,
        log: &'a std::path::Path,
    },
    Finished {
        label: &'a str,
    },
}

/// Runs `tasks` in order, `jobs` (≥ 1) at a time, until all have ended; fails after all have
/// ended if any failed, naming each with its log. A stop request ([`crate::train::stop`], e.g.
/// SIGTERM) is passed on to the running workers as SIGTERM (each checkpoints and exits), no new
/// worker starts, and the call returns [`Error::Interrupted`] once they have ended.
pub fn run_workers(
    tasks: Vec<WorkerTask>,
    jobs: usize,
    on: &mut dyn FnMut(WorkerEvent),
) -> Result<()> {
    run_workers_until(tasks, jobs, &crate::train::stop::stop_requested, on)
}

/// [`run_workers`] with the stop request read from `stop` (tests pass their own).
pub fn run_workers_until(
    tasks: Vec<WorkerTask>,
    jobs: usize,
    stop: &dyn Fn() -> bool,
    on: &mut dyn FnMut(WorkerEvent),
) -> Result<()> {
    let mut queue = tasks;
    queue.reverse();
    let mut running: Vec<(String, Child, PathBuf)> = Vec::new();
    let mut failed = Vec::new();
    let mut stopping = false;
    while !queue.is_empty() || !running.is_empty() {
        if !stopping && stop() {
            stopping = true;
            queue.clear();
            for (_, child, _) in &running {
                // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        while running.len() < jobs.max(1) {
            let Some(mut t) = queue.pop() else { break };
            if let Some(d) = t.log.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            let file = std::fs::File::create(&t.log).map_err(|e| Error::io(&t.log, e))?;
            let err = file.try_clone().map_err(|e| Error::io(&t.log, e))?;
            t.command.stdout(file).stderr(err);
            let child = t
                .command
                .spawn()
                .map_err(|e| Error::Invalid(format!("starting worker {}: {e}", t.label)))?;
            on(WorkerEvent::Started {
                label: &t.label,
                log: &t.log,
            });
            running.push((t.label, child, t.log));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let status = running[i]
                .1
                .try_wait()
                .map_err(|e| Error::Invalid(format!("waiting for worker {}: {e}", running[i].0)))?;
            if let Some(status) = status {
                let (label, _, log) = running.remove(i);
                if status.success() {
                    on(WorkerEvent::Finished { label: &label });
                } else {
                    failed.push(format!("{label} (see {})", log.display()));
                }
            } else {
                i += 1;
            }
        }
    }
    if stopping {
        return Err(Error::Interrupted { step: 0 });
    }
    if !failed.is_empty() {
        return Err(Error::Invalid(format!(
            "workers failed: {}",
            failed.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(label: &str, script: &str, log: PathBuf) -> WorkerTask {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        WorkerTask {
            label: label.into(),
            command,
            log,
        }
    }

    #[test]
    fn runs_every_task_logs_it_and_names_the_failures() {
        let d = tempfile::tempdir().unwrap();
        let tasks = vec![
            sh(
                "a",
                "echo out-a; echo err-a >&2",
                d.path().join("logs/a.log"),
            ),
            sh("b", "exit 3", d.path().join("logs/b.log")),
            sh("c", "echo out-c", d.path().join("logs/c.log")),
        ];
        let mut started = Vec::new();
        let mut finished = Vec::new();
        let e = run_workers(tasks, 2, &mut |ev| match ev {
            WorkerEvent::Started { label, .. } => started.push(label.to_string()),
            WorkerEvent::Finished { label } => finished.push(label.to_string()),
        })
        .unwrap_err()
        .to_string();
        assert_eq!(started, ["a", "b", "c"]);
        finished.sort();
        assert_eq!(finished, ["a", "c"]);
        assert!(
            e.contains("b (see") && e.contains("b.log") && !e.contains("a (see"),
            "{e}"
        );
        let a = std::fs::read_to_string(d.path().join("logs/a.log")).unwrap();
        assert!(a.contains("out-a") && a.contains("err-a"), "{a}");
    }

    #[test]
    fn a_stop_request_terminates_the_running_workers_and_starts_no_more() {
        let d = tempfile::tempdir().unwrap();
        let task = |i: usize| {
            let mut c = Command::new("sh");
            // Exits 75 on SIGTERM (as a trainer does after its checkpoint), else sleeps long.
            c.args(["-c", "trap 'exit 75' TERM; sleep 60 & wait"]);
            WorkerTask {
                label: format!("w{i}"),
                command: c,
                log: d.path().join(format!("w{i}.log")),
            }
        };
        let t0 = std::time::Instant::now();
        let mut started = Vec::new();
        let stop_after = std::time::Instant::now() + Duration::from_millis(600);
        let r = run_workers_until(
            (0..4).map(task).collect(),
            2,
            &|| std::time::Instant::now() > stop_after,
            &mut |e| {
                if let WorkerEvent::Started { label, .. } = e {
                    started.push(label.to_string())
                }
            },
        );
        assert!(matches!(r, Err(Error::Interrupted { .. })), "{:?}", r.err());
        // Only the first two ever started, and they ended on the signal, not after 60 s.
        assert_eq!(started, vec!["w0", "w1"]);
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    }
}
