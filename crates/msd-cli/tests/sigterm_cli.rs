//! A real SIGTERM (what Slurm and Kubernetes send before killing a job) to `msd train-teacher`
//! and `msd distill`: the process writes a checkpoint, exits with status 75, and rerunning the
//! same command ends with weights identical to an uninterrupted run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CFG: &str = r#"
seed = 4
[data]
kind = "toy2d"
[model.net]
kind = "mlp"
dim = 2
num_classes = 8
width = 32
depth = 2
[teacher]
steps = 1500
batch_size = 32
checkpoint_every = 100
log_every = 100
[distill]
students = 2
iterations = 500
batch_size = 16
regression_pairs_per_class = 4
regression_batch = 8
checkpoint_every = 50
log_every = 50
"#;

fn msd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_msd"));
    c.arg("--threads").arg("1").args(args);
    c
}

fn ok(args: &[&str]) {
    let out = msd(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn latest_step(stage: &Path) -> Option<u64> {
    let l: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stage.join("checkpoints/latest.json")).ok()?)
            .ok()?;
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            stage
                .join("checkpoints")
                .join(l["dir"].as_str()?)
                .join("state.json"),
        )
        .ok()?,
    )
    .ok()?;
    s["step"].as_u64()
}

/// Starts `args`, waits for the stage's first checkpoint, sends SIGTERM, and checks the exit
/// status and the off-cadence checkpoint it leaves. Returns the step it stopped at.
fn terminate_during(args: &[&str], stage: &Path, total: u64) -> u64 {
    let mut child = msd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while latest_step(stage).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint in {} after 300 s",
            stage.display()
        );
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(75),
        "SIGTERM must end {args:?} with status 75 (stopped and checkpointed): {err}"
    );
    assert!(err.contains("interrupted at step"), "{err}");
    let step = latest_step(stage).unwrap();
    assert!(
        step > 0 && step < total,
        "checkpoint at step {step} of {total}"
    );
    assert!(!stage.join("model.safetensors").exists(), "not finished");
    step
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn sigterm_checkpoints_exits_75_and_the_rerun_matches_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg.toml");
    std::fs::write(&cfg, CFG).unwrap();
    let cfg = cfg.to_str().unwrap();
    let (cut, full) = (d.path().join("cut"), d.path().join("full"));
    let (c, f) = (cut.to_str().unwrap(), full.to_str().unwrap());

    // Teacher.
    let args = ["train-teacher", "--config", cfg, "--out", c];
    terminate_during(&args, &cut.join("teacher"), 1500);
    ok(&args);
    ok(&["train-teacher", "--config", cfg, "--out", f]);
    same_bytes(
        &cut.join("teacher/model.safetensors"),
        &full.join("teacher/model.safetensors"),
    );

    // A student (DM stage).
    let args = ["distill", "--run", c, "--student", "1"];
    terminate_during(&args, &cut.join("students/1/dm"), 500);
    let out = msd(&args).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resuming from the checkpoint at step"),
        "{err}"
    );
    ok(&["distill", "--run", f, "--student", "1"]);
    same_bytes(
        &cut.join("students/1/dm/model.safetensors"),
        &full.join("students/1/dm/model.safetensors"),
    );
}
