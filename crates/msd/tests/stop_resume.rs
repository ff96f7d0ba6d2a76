//! A stop request (SIGTERM in the binary) during a distillation stage: the runner writes a
//! checkpoint at the current step and returns `Error::Interrupted`; rerunning resumes there and
//! ends with exactly the weights of an uninterrupted run. The stop flag is process-wide, so these
//! tests live in their own test binary and run one at a time.

mod common;

use msd::distill::{distill_student, DistillConfig, StageKind, StudentJob};
use msd::model::EdmModel;
use msd::partition::{Partition, Strategy};
use msd::teacher::Progress;
use msd::train::{stop, CheckpointDir};
use msd::Error;
use std::path::Path;
use tch::Device;

fn teacher() -> EdmModel {
    tch::manual_seed(0);
    let spec = common::mlp_spec(4, 16, 1, 4);
    EdmModel::from_spec(&spec, Device::Cpu)
}

fn cfg() -> DistillConfig {
    DistillConfig {
        students: 2,
        iterations: 17,
        batch_size: 16,
        ttur: 3,
        regression_weight: 0.0,
        checkpoint_every: 10,
        log_every: 4,
        ..Default::default()
    }
}

/// Runs the DM stage of student 1 in `dir`; `stop_at` requests a stop when the log line of that
/// step is reported.
fn dm(
    teacher: &EdmModel,
    partition: &Partition,
    dir: &Path,
    stop_at: Option<u64>,
) -> msd::Result<EdmModel> {
    let job = StudentJob {
        teacher,
        partition,
        student: 1,
        pairs: None,
        dir,
        seed: 5,
        teacher_id: "t",
        generator_init: None,
        stage: StageKind::Dm,
        real_data: None,
        data_id: "none",
        resume_from: None,
    };
    distill_student(&cfg(), &job, &mut |p| {
        if let (Progress::Step { step, .. }, Some(s)) = (p, stop_at) {
            if step == s {
                stop::request_stop();
            }
        }
    })
    .map(|(m, _)| m)
}

fn same_weights(a: &EdmModel, b: &EdmModel) -> bool {
    let vb = b.vs.variables();
    a.vs.variables().iter().all(|(n, t)| t.equal(&vb[n]))
}

#[test]
fn a_stopped_dm_stage_checkpoints_and_resumes_to_the_uninterrupted_result() {
    let _g = common::global_lock();
    stop::reset();
    let t = teacher();
    let partition = Partition::build(Strategy::Contiguous, 4, 2, 0, None).unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let full = dm(&t, &partition, a.path(), None).unwrap();

    // Stop after step 8 (a log step, between checkpoints 0 and 10).
    let e = dm(&t, &partition, b.path(), Some(8)).err().unwrap();
    assert!(matches!(e, Error::Interrupted { step: 8 }), "{e}");
    let (_, state) = CheckpointDir::new(b.path()).latest().unwrap().unwrap();
    assert_eq!(
        state.step, 8,
        "the checkpoint is at the step where it stopped"
    );
    assert!(!b.path().join("model.safetensors").exists());
    assert!(stop::stop_requested());

    // While the flag is still set, a rerun stops at once without training or a new checkpoint.
    let e = dm(&t, &partition, b.path(), None).err().unwrap();
    assert!(matches!(e, Error::Interrupted { step: 8 }), "{e}");

    stop::reset();
    let resumed = dm(&t, &partition, b.path(), None).unwrap();
    assert!(
        same_weights(&full, &resumed),
        "a stopped and resumed DM stage differs from an uninterrupted one"
    );
    let log = |d: &Path| std::fs::read_to_string(d.join("stats.jsonl")).unwrap();
    assert_eq!(log(a.path()).lines().count(), log(b.path()).lines().count());
}
