//! The distillation pipeline as a library call (no CLI): a tiny toy run distilled through
//! `msd::pipeline::Distiller` into DM and CD students and a bundle; each stage's hash covers
//! only its own settings, so editing another stage's settings (or the logging cadence) after a
//! stage finished keeps it.

use msd::bundle::Bundle;
use msd::config::RunConfig;
use msd::pipeline::{DistillOptions, Distiller, Observer, StageDone, StageKind};
use msd::teacher::{train_teacher, Progress};
use std::path::Path;
use tch::Device;

const TINY: &str = r#"
seed = 1
[data]
kind = "toy2d"
[model.net]
kind = "mlp"
dim = 2
num_classes = 8
width = 32
depth = 2
[teacher]
steps = 40
batch_size = 64
checkpoint_every = 20
[distill]
students = 2
iterations = 12
batch_size = 32
regression_pairs_per_class = 4
checkpoint_every = 6
log_every = 4
[distill.cd]
iterations = 10
batch_size = 32
levels = 8
"#;

/// Counts what the pipeline reports.
#[derive(Default)]
struct Count {
    started: Vec<(usize, StageKind)>,
    trained_steps: u64,
    finished: Vec<(usize, StageKind, u64)>,
    bundles: usize,
}

impl Observer for Count {
    fn stage_started(&mut self, student: usize, stage: StageKind, _: u64) {
        self.started.push((student, stage));
    }
    fn training(&mut self, event: Progress) {
        if let Progress::Step { .. } = event {
            self.trained_steps += 1;
        }
    }
    fn stage_finished(&mut self, d: &StageDone) {
        self.finished.push((d.student, d.stage, d.summary.steps));
    }
    fn bundle_written(&mut self, _: &Path, _: StageKind) {
        self.bundles += 1;
    }
}

fn make_run(root: &Path) {
    let cfg = RunConfig::from_toml(TINY, Path::new("tiny.toml")).unwrap();
    std::fs::create_dir_all(root).unwrap();
    cfg.save(&root.join("config.toml")).unwrap();
    let data = cfg.data.open(root).unwrap();
    train_teacher(
        &cfg.model,
        &cfg.teacher,
        data.as_ref(),
        &cfg.data.id(),
        &root.join("teacher"),
        cfg.seed,
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
}

fn opts(stages: &[StageKind]) -> DistillOptions {
    DistillOptions {
        students: vec![],
        stages: stages.to_vec(),
        device: Device::Cpu,
    }
}

#[test]
fn distils_a_toy_run_without_the_cli_and_keeps_finished_stages_when_others_change() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("run");
    make_run(&root);
    let distiller = Distiller::new(&root);

    // DM for both students, then the bundle.
    let mut seen = Count::default();
    let manifest = distiller
        .run(&opts(&[StageKind::Dm]), &mut seen)
        .unwrap()
        .expect("every student finished: a bundle");
    assert_eq!(manifest.students.len(), 2);
    assert_eq!(
        seen.finished,
        vec![(0, StageKind::Dm, 12), (1, StageKind::Dm, 12)]
    );
    assert_eq!(
        seen.trained_steps,
        2 * 3,
        "12 iterations logged every 4, per student"
    );
    assert_eq!(seen.bundles, 1);
    let bundle = Bundle::load(&root.join("bundle.json"), Device::Cpu).unwrap();
    let (x, owners) = bundle
        .generate(&[0, 7], &bundle.noise(2, 3, Device::Cpu))
        .unwrap();
    assert_eq!((x.size(), owners), (vec![2, 2], vec![0, 1]));
    let dm_model = std::fs::read(root.join("students/0/dm/model.safetensors")).unwrap();
    // Every stage draws its losses next to its log.
    let png = image::open(root.join("students/0/dm/loss.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);

    // Edit another stage's settings and the cadence: the finished DM stage is kept.
    let path = root.join("config.toml");
    let mut cfg = RunConfig::load(&path).unwrap();
    cfg.distill.adm.generator_lr *= 3.0;
    cfg.distill.adm.iterations += 1;
    cfg.distill.tsm.steps += 7;
    cfg.distill.cd.optimizer.lr *= 2.0;
    cfg.distill.log_every = 3;
    cfg.distill.checkpoint_every = 5;
    cfg.save(&path).unwrap();
    let mut again = Count::default();
    distiller
        .run(&opts(&[StageKind::Dm]), &mut again)
        .unwrap()
        .unwrap();
    assert_eq!(
        again.trained_steps, 0,
        "the finished DM stage was retrained"
    );
    assert_eq!(
        std::fs::read(root.join("students/0/dm/model.safetensors")).unwrap(),
        dm_model
    );

    // A DM setting is part of the DM stage: changing it refuses the finished directory.
    cfg.distill.generator_optimizer.lr *= 2.0;
    cfg.save(&path).unwrap();
    let e = distiller
        .run(&opts(&[StageKind::Dm]), &mut Count::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("another config"), "{e}");

    // Consistency distillation through the same pipeline: its own directories and bundle.
    let mut cd = Count::default();
    let manifest = distiller
        .run(&opts(&[StageKind::Cd]), &mut cd)
        .unwrap()
        .unwrap();
    assert_eq!(
        cd.finished,
        vec![(0, StageKind::Cd, 10), (1, StageKind::Cd, 10)]
    );
    assert!(manifest.students.iter().all(|s| s.dir.ends_with("cd")));
    let stats = std::fs::read_to_string(root.join("students/1/cd/stats.jsonl")).unwrap();
    assert!(
        stats.contains("\"stage\":\"cd\"") && stats.contains("cd_loss"),
        "{stats}"
    );

    // Stage order is checked.
    let e = distiller
        .run(
            &opts(&[StageKind::Dm, StageKind::Cd]),
            &mut Count::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("consecutive stages"), "{e}");
}
