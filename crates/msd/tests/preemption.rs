//! Preemption-safe teacher training: a stop request (what the binary's SIGTERM handler sends)
//! makes `train_denoiser` (teacher and TSM) write a checkpoint at the current step (off the
//! checkpoint cadence) and return `Error::Interrupted`; rerunning resumes there and ends with
//! bytes identical to an uninterrupted run. (The distillation stages: tests/stop_resume.rs.)

mod common;

use msd::data::Toy2d;
use msd::model::{EdmModel, ModelSpec};
use msd::teacher::{train_teacher, Progress, TeacherTrainConfig};
use msd::train::{stop, CheckpointDir};
use msd::Error;
use std::path::Path;
use tch::Device;

fn spec() -> ModelSpec {
    common::mlp_spec(8, 32, 2, 8)
}

fn teacher_cfg() -> TeacherTrainConfig {
    TeacherTrainConfig {
        steps: 40,
        batch_size: 64,
        optimizer: Default::default(),
        ema_decay: 0.9,
        label_dropout: 0.0,
        sigma: Default::default(),
        checkpoint_every: 10,
        log_every: 1,
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn latest_step(dir: &Path) -> u64 {
    CheckpointDir::new(dir).latest().unwrap().unwrap().1.step
}

fn teacher(dir: &Path, stop_at: Option<u64>) -> msd::Result<EdmModel> {
    train_teacher(
        &spec(),
        &teacher_cfg(),
        &Toy2d::standard(),
        "toy",
        dir,
        3,
        Device::Cpu,
        &mut |p| {
            if let Progress::Step { step, .. } = p {
                if Some(step) == stop_at {
                    stop::request_stop();
                }
            }
        },
    )
    .map(|(m, _)| m)
}

#[test]
fn a_stopped_teacher_checkpoints_off_cadence_and_resumes_bit_identically() {
    let _g = common::global_lock();
    stop::reset();
    let d = tempfile::tempdir().unwrap();
    let (full, cut) = (d.path().join("full"), d.path().join("cut"));
    teacher(&full, None).unwrap();

    let e = teacher(&cut, Some(7))
        .err()
        .expect("a stop request must interrupt training");
    stop::reset();
    assert!(matches!(e, Error::Interrupted { step: 7 }), "{e}");
    assert_eq!(latest_step(&cut), 7, "the checkpoint is at the stop step");
    assert!(
        !cut.join("model.safetensors").exists(),
        "an interrupted stage is not finished"
    );

    teacher(&cut, None).unwrap();
    assert_eq!(
        bytes(&full.join("model.safetensors")),
        bytes(&cut.join("model.safetensors")),
        "the resumed teacher differs from the uninterrupted one"
    );
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    assert_eq!(
        lines(&full.join("stats.jsonl")),
        lines(&cut.join("stats.jsonl")),
        "one log line per step either way"
    );
}
