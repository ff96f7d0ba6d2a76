//! `msd launch slurm` against a real Slurm: a private one-node cluster (Debian's `slurm-wlm` and
//! `munge`, started by scripts/slurm-cluster.sh in a temp directory and stopped by pid) runs the
//! students of a tiny toy run as a job array, and the bundle job that depends on it:
//! 1. the students come out byte-identical to the same run made locally;
//! 2. a student requeued mid-training (`scontrol requeue`) checkpoints on Slurm's SIGTERM, is
//!    requeued, and resumes from that checkpoint; another, warned of its time limit (SIGUSR1 to
//!    the batch shell), checkpoints and requeues itself; both end identical to a local run.
//!
//! Without Slurm the tests fail and say what to install (scripts/install-test-deps.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/slurm-cluster.sh"
);

/// A running private cluster; stopped (by pid) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let missing: Vec<&str> = [
            "slurmctld",
            "slurmd",
            "sbatch",
            "squeue",
            "scontrol",
            "munged",
        ]
        .into_iter()
        .filter(|b| {
            !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(b).exists())
        })
        .collect();
        assert!(
            missing.is_empty(),
            "the Slurm tests need Debian's `slurm-wlm` and `munge`, and {missing:?} were not found: \
             install them with `apt-get update && apt-get install -y slurm-wlm munge` \
             (scripts/install-test-deps.sh and .ci/run do this)"
        );
        let out = Command::new("bash")
            .args([SCRIPT, "start"])
            .arg(dir)
            .output()
            .unwrap();
        let c = Cluster {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
        };
        assert!(
            out.status.success(),
            "could not start a one-node Slurm cluster with {SCRIPT}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// A Slurm client command against this cluster.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the queue is empty (accounting is off: squeue is the record).
    fn wait_empty(&self, run: &Path, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let q = self.run("squeue", &["-h", "-o", "%i %T %r"]);
            if q.trim().is_empty() {
                return;
            }
            if t0.elapsed() > limit {
                panic!(
                    "jobs still queued after {limit:?}:\n{q}\nlogs:\n{}",
                    logs(run)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([SCRIPT, "stop"])
            .arg(&self.dir)
            .status();
    }
}

fn logs(run: &Path) -> String {
    let dir = run.join("launch/slurm/logs");
    let mut s = String::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        s += &format!(
            "--- {}\n{}\n",
            e.path().display(),
            std::fs::read_to_string(e.path()).unwrap_or_default()
        );
    }
    s
}

fn config(iterations: u64, checkpoint_every: u64) -> String {
    format!(
        r#"
seed = 2
[data]
kind = "toy2d"
[model.net]
kind = "mlp"
dim = 2
num_classes = 8
width = 32
depth = 2
[teacher]
steps = 60
batch_size = 64
checkpoint_every = 30
[distill]
students = 2
iterations = {iterations}
batch_size = 16
regression_pairs_per_class = 4
regression_batch = 8
checkpoint_every = {checkpoint_every}
log_every = 20
"#
    )
}

fn msd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "msd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A teacher in `slurm/`, copied to `local/` (the same run made two ways from here on).
fn two_runs(d: &Path, iterations: u64, checkpoint_every: u64) -> (PathBuf, PathBuf) {
    let cfg = d.join("cfg.toml");
    std::fs::write(&cfg, config(iterations, checkpoint_every)).unwrap();
    let (slurm, local) = (d.join("slurm"), d.join("local"));
    msd(&[
        "--threads",
        "1",
        "train-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        slurm.to_str().unwrap(),
    ]);
    std::fs::create_dir_all(local.join("teacher")).unwrap();
    std::fs::copy(slurm.join("config.toml"), local.join("config.toml")).unwrap();
    for f in ["model.json", "model.safetensors", "train.json"] {
        std::fs::copy(slurm.join("teacher").join(f), local.join("teacher").join(f)).unwrap();
    }
    (slurm, local)
}

/// `msd launch slurm` output → (array job id, bundle job id).
fn job_ids(out: &str) -> (String, String) {
    let id = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
            .to_string()
    };
    (id("array job: "), id("bundle job: "))
}

fn launch(c: &Cluster, run: &Path) -> (String, String) {
    let out = c
        .cmd(env!("CARGO_BIN_EXE_msd"))
        .args(["launch", "slurm", "--run"])
        .arg(run)
        .args(["--cpus-per-task", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "msd launch slurm failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for k in 0..2 {
        assert!(stdout.contains(&format!("student-{k}.log")), "{stdout}");
    }
    job_ids(&stdout)
}

fn same_students(a: &Path, b: &Path) {
    for k in 0..2 {
        let f = format!("students/{k}/dm/model.safetensors");
        let (x, y) = (std::fs::read(a.join(&f)), std::fs::read(b.join(&f)));
        let (x, y) = (
            x.unwrap_or_else(|e| panic!("{}: {e}\n{}", a.join(&f).display(), logs(a))),
            y.unwrap(),
        );
        assert!(
            x == y,
            "student {k}: the cluster's weights differ from the local run's"
        );
    }
}

fn bundle_ok(c: &Cluster, run: &Path, bundle_job: &str) {
    let log = std::fs::read_to_string(run.join("launch/slurm/logs/bundle.log")).unwrap_or_default();
    assert!(
        log.contains("validated"),
        "bundle job: {log}\n{}",
        logs(run)
    );
    let job = c.run("scontrol", &["show", "job", bundle_job]);
    assert!(job.contains("JobState=COMPLETED"), "{job}");
    assert!(run.join("bundle.json").exists());
}

#[test]
fn a_job_array_distils_the_students_identically_to_a_local_run() {
    let d = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&d.path().join("cluster"));
    let (slurm, local) = two_runs(d.path(), 60, 20);
    let (array, bundle) = launch(&cluster, &slurm);
    assert!(slurm.join("partition.json").exists() && slurm.join("pairs.safetensors").exists());
    msd(&[
        "--threads",
        "1",
        "distill",
        "--run",
        local.to_str().unwrap(),
    ]);
    cluster.wait_empty(&slurm, Duration::from_secs(600));
    for k in 0..2 {
        let job = cluster.run("scontrol", &["show", "job", &format!("{array}_{k}")]);
        assert!(job.contains("JobState=COMPLETED"), "{job}");
    }
    bundle_ok(&cluster, &slurm, &bundle);
    same_students(&slurm, &local);
}

/// Calls `act(k)` for each student of `ks` as soon as it has a checkpoint (still training).
fn when_mid_training(run: &Path, ks: &[usize], mut act: impl FnMut(usize)) {
    let mut left = ks.to_vec();
    let t0 = Instant::now();
    while !left.is_empty() {
        left.retain(|&k| {
            let stage = run.join(format!("students/{k}/dm"));
            if !stage.join("checkpoints/latest.json").exists() {
                return true;
            }
            assert!(
                !stage.join("model.safetensors").exists(),
                "student {k} finished before it could be interrupted; raise its iterations"
            );
            act(k);
            false
        });
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "students {left:?} wrote no checkpoint in 300 s:\n{}",
            logs(run)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A requeued job is held for ~2 minutes before it may start again; release it now.
fn release(c: &Cluster, run: &Path, task: &str) {
    let t0 = Instant::now();
    loop {
        let st = c.run("squeue", &["-h", "-j", task, "-o", "%T"]);
        if st.trim() == "PENDING"
            && c.cmd("scontrol")
                .args(["update", &format!("JobId={task}"), "StartTime=now"])
                .status()
                .unwrap()
                .success()
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{task} never became pending after its requeue (state {st}):\n{}",
            logs(run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks student `k`'s log: two attempts, the first ended by a checkpoint (status 75), the
/// second resumed from a checkpoint step > 0 and succeeded.
fn resumed(run: &Path, k: usize, iterations: u64) -> String {
    let log =
        std::fs::read_to_string(run.join(format!("launch/slurm/logs/student-{k}.log"))).unwrap();
    assert!(
        log.contains("attempt 1,") && log.contains("attempt 2,"),
        "{log}"
    );
    assert!(
        log.contains("exited with status 75"),
        "student {k}'s first attempt did not checkpoint and exit with 75:\n{log}"
    );
    assert!(log.contains("exited with status 0"), "{log}");
    let step = log
        .lines()
        .find_map(|l| l.split("resuming from the checkpoint at step ").nth(1))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("student {k}'s second attempt did not resume:\n{log}"));
    assert!(step > 0 && step < iterations, "resumed at {step}");
    log
}

/// Student 1 is requeued by `scontrol requeue` (SIGTERM to the job, as on preemption); student
/// 0 gets the time-limit warning (`--signal=B:USR1`, sent here with `scancel --signal=USR1
/// --batch`) and requeues itself. Both resume and end identical to the local run.
#[test]
fn requeued_students_resume_from_their_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&d.path().join("cluster"));
    let (slurm, local) = two_runs(d.path(), 1000, 25);
    let (array, bundle) = launch(&cluster, &slurm);
    let (t0, t1) = (format!("{array}_0"), format!("{array}_1"));
    when_mid_training(&slurm, &[0, 1], |k| {
        if k == 1 {
            cluster.run("scontrol", &["requeue", &t1]);
        } else {
            cluster.run("scancel", &["--signal=USR1", "--batch", &t0]);
        }
    });
    release(&cluster, &slurm, &t1);
    release(&cluster, &slurm, &t0);
    msd(&[
        "--threads",
        "1",
        "distill",
        "--run",
        local.to_str().unwrap(),
    ]);
    cluster.wait_empty(&slurm, Duration::from_secs(900));
    for t in [&t0, &t1] {
        let job = cluster.run("scontrol", &["show", "job", t]);
        assert!(
            job.contains("Restarts=1") && job.contains("JobState=COMPLETED"),
            "{job}"
        );
    }
    resumed(&slurm, 1, 1000);
    let log0 = resumed(&slurm, 0, 1000);
    assert!(
        log0.contains("checkpointed before its time limit; requeueing"),
        "{log0}"
    );
    bundle_ok(&cluster, &slurm, &bundle);
    same_students(&slurm, &local);
}

/// No scheduler needed: `--dry-run` writes the Slurm scripts and `launch k8s` the manifests,
/// both after making the shared artifacts.
#[test]
fn dry_runs_write_scripts_and_manifests_without_a_scheduler() {
    let d = tempfile::tempdir().unwrap();
    let (run, _) = two_runs(d.path(), 20, 10);
    let r = run.to_str().unwrap();
    let out = msd(&[
        "launch",
        "slurm",
        "--run",
        r,
        "--students",
        "1",
        "--dry-run",
    ]);
    assert!(out.contains("dry run: nothing submitted"), "{out}");
    let script = std::fs::read_to_string(run.join("launch/slurm/students.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=1\n"), "{script}");
    assert!(run.join("partition.json").exists() && run.join("pairs.safetensors").exists());
    let out = msd(&[
        "launch", "k8s", "--run", r, "--image", "msd:test", "--volume", "runs", "--gpus", "1",
    ]);
    assert!(out.contains("Indexed Job, 2 completions"), "{out}");
    let yaml = std::fs::read_to_string(run.join("launch/k8s/students.yaml")).unwrap();
    for want in [
        "completionMode: \"Indexed\"",
        "completions: 2",
        "\"$(JOB_COMPLETION_INDEX)\"",
        "claimName: \"runs\"",
        "nvidia.com/gpu: \"1\"",
        "\"cuda\"",
    ] {
        assert!(yaml.contains(want), "{want} missing from\n{yaml}");
    }
    // A student that does not exist is refused with the flag named.
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args([
            "launch",
            "slurm",
            "--run",
            r,
            "--students",
            "0-2",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--students 0-2"));
}
