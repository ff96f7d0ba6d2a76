//! End-to-end checks of the DMD2-fidelity rules on a tiny UNet student job: networks built for
//! distillation run without dropout, pairs from another σ_max are refused, the regression
//! term's gradient share reaches `stats.jsonl`, and `export = "raw"` exports the generator.

use super::checks::without_dropout;
use super::export::Export;
use super::pairs::RegressionPairs;
use super::regression::RegressionDistance;
use super::{distill_student, DistillConfig, StageKind, StudentJob};
use crate::diffusion::SamplerConfig;
use crate::model::{EdmModel, ModelSpec};
use crate::nets::NetConfig;
use crate::partition::{Partition, Strategy};
use crate::train::checkpoint;
use std::path::Path;
use tch::Device;

fn teacher(dropout: f64) -> EdmModel {
    tch::manual_seed(0);
    EdmModel::from_spec(
        &ModelSpec {
            net: NetConfig::Unet(crate::test_support::plain_tiny_unet(2, dropout)),
            precond: Default::default(),
        },
        Device::Cpu,
    )
}

fn cfg() -> DistillConfig {
    DistillConfig {
        students: 1,
        iterations: 3,
        batch_size: 2,
        ttur: 1,
        regression_batch: 2,
        regression_pairs_per_class: 2,
        checkpoint_every: 3,
        log_every: 1,
        ..Default::default()
    }
}

fn pairs(t: &EdmModel, sigma_max: f64) -> RegressionPairs {
    let s = SamplerConfig {
        steps: 2,
        sigma_max,
        ..Default::default()
    };
    RegressionPairs::generate(t, 2, &s, 1, 64)
}

fn run(
    cfg: &DistillConfig,
    t: &EdmModel,
    p: &RegressionPairs,
    dir: &Path,
) -> crate::Result<(EdmModel, crate::teacher::TrainSummary)> {
    let part = Partition::build(Strategy::Contiguous, 2, 1, 0, None).unwrap();
    let job = StudentJob {
        teacher: t,
        partition: &part,
        student: 0,
        pairs: Some(p),
        dir,
        seed: 3,
        teacher_id: "t",
        generator_init: None,
        stage: StageKind::Dm,
        real_data: None,
        data_id: "d",
        resume_from: None,
    };
    distill_student(cfg, &job, &mut |_| {})
}

#[test]
fn students_of_a_dropout_teacher_train_without_dropout_and_log_the_regression_share() {
    let _g = crate::rng_guard();
    let t = teacher(0.3);
    let p = pairs(&t, 80.0);
    let d = tempfile::tempdir().unwrap();
    let (m, _) = run(&cfg(), &t, &p, d.path()).unwrap();
    assert_eq!(m.spec, without_dropout(&t.spec));
    assert_ne!(
        m.spec, t.spec,
        "the teacher had dropout, so the specs must differ"
    );
    let stats = std::fs::read_to_string(d.path().join("stats.jsonl")).unwrap();
    let shares: Vec<f64> = stats
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["reg_grad_share"].as_f64().expect("reg_grad_share logged")
        })
        .collect();
    assert_eq!(shares.len(), 3);
    // At the first step the fake score is the teacher, so the DM gradient is exactly 0 and the
    // regression term is the whole gradient; once the fake score has stepped, both contribute.
    assert_eq!(shares[0], 1.0, "{shares:?}");
    assert!(
        shares[1..].iter().all(|s| *s > 0.0 && *s < 1.0),
        "both terms reach the generator: {shares:?}"
    );
}

#[test]
fn pairs_from_another_sigma_max_are_refused_by_the_trainer() {
    let _g = crate::rng_guard();
    let t = teacher(0.0);
    let p = pairs(&t, 40.0);
    let d = tempfile::tempdir().unwrap();
    let e = match run(&cfg(), &t, &p, d.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("pairs from σ_max 40 accepted for a generator at 80"),
    };
    assert!(e.contains("distill.sigma_max"), "{e}");
    // Without the regression term the pairs are not used, so nothing is refused.
    let off = DistillConfig {
        regression_weight: 0.0,
        ..cfg()
    };
    assert!(run(&off, &t, &p, d.path()).is_ok());
}

#[test]
fn export_raw_writes_the_generator_and_ema_its_average() {
    let _g = crate::rng_guard();
    let t = teacher(0.0);
    let p = pairs(&t, 80.0);
    for (export, file) in [
        (Export::Raw, "generator.safetensors"),
        (Export::Ema, "ema.safetensors"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let c = DistillConfig {
            export,
            regression_distance: RegressionDistance::PseudoHuber,
            ..cfg()
        };
        run(&c, &t, &p, d.path()).unwrap();
        let (cdir, _) = checkpoint::CheckpointDir::new(d.path())
            .latest()
            .unwrap()
            .unwrap();
        let gen = checkpoint::read_tensors(&cdir.join("generator.safetensors")).unwrap();
        let ema = checkpoint::read_tensors(&cdir.join("ema.safetensors")).unwrap();
        assert!(
            gen.iter()
                .any(|(n, a)| ema.iter().any(|(m, b)| m == n && !a.equal(b))),
            "generator and EMA must differ for this test to tell them apart"
        );
        let want = checkpoint::read_tensors(&cdir.join(file)).unwrap();
        let got = checkpoint::read_tensors(&d.path().join("model.safetensors")).unwrap();
        assert_eq!(want.len(), got.len());
        for (n, a) in &want {
            let b = &got.iter().find(|(m, _)| m == n).expect("same names").1;
            assert!(a.equal(b), "{export:?}: tensor {n} differs from {file}");
        }
    }
}

#[test]
fn dmd2_presets_match_the_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for name in ["mnist-distill-dmd2.toml", "toy-dmd2.toml"] {
        let c = crate::config::RunConfig::load(&root.join(name)).unwrap();
        let d = &c.distill;
        for (o, warmup) in [
            (&d.generator_optimizer, 500 / d.ttur),
            (&d.fake_optimizer, 500),
        ] {
            assert_eq!((o.beta1, o.beta2), (0.9, 0.999), "{name}");
            assert_eq!(o.weight_decay, 0.01, "{name}");
            assert_eq!(o.warmup_steps, warmup, "{name}");
            assert_eq!(o.grad_clip, 10.0, "{name}");
        }
        assert_eq!(d.export, Export::Raw, "{name}");
        assert_eq!(d.regression_weight, 0.0, "{name}");
        assert_eq!(d.ttur, 5, "{name}");
        assert_eq!((d.t_min_index, d.t_max_index), (20, 980), "{name}");
        assert_eq!(d.sigma_max, 80.0, "{name}");
        assert!(d.adm.joint_clip, "{name}");
        if name.starts_with("mnist") {
            assert_eq!(
                (d.adm.generator_gan_weight, d.adm.discriminator_gan_weight),
                (3e-3, 1e-2)
            );
        }
    }
}

#[test]
fn a_perceptual_regression_trains_through_a_second_classifier_and_needs_one() {
    use crate::eval::classifier::{
        Classifier, ClassifierConfig, ClassifierRecord, ClassifierTrainConfig,
    };
    let _g = crate::rng_guard();
    let t = teacher(0.0);
    let mut p = pairs(&t, 80.0);
    let c = DistillConfig {
        regression_distance: RegressionDistance::Perceptual,
        ..cfg()
    };
    let d = tempfile::tempdir().unwrap();
    let e = match run(&c, &t, &p, &d.path().join("none")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("perceptual regression ran without a feature network"),
    };
    assert!(e.contains("distill.regression_distance"), "{e}");

    let run_root = d.path().join("run");
    let fdir = run_root.join(super::regression::REGRESSION_FEATURES_DIR);
    let ccfg = ClassifierConfig::new(1, 2);
    Classifier::new(&ccfg, Device::Cpu)
        .save_dir(
            &fdir,
            &ClassifierRecord {
                config: ccfg,
                train: ClassifierTrainConfig::default(),
                heldout_accuracy: 0.0,
                heldout_n: 0,
                train_seconds: 0.0,
                data_id: "test".into(),
            },
        )
        .unwrap();
    let mut some = Some(p);
    super::regression::attach_features(&mut some, c.regression_distance, &run_root, Device::Cpu)
        .unwrap();
    p = some.unwrap();
    assert!(p.features.is_some());
    let out = d.path().join("dm");
    run(&c, &t, &p, &out).unwrap();
    let stats = std::fs::read_to_string(out.join("stats.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    let share = last["reg_grad_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{share}");
}

#[test]
fn adm_joint_clip_clips_the_fake_score_and_head_by_their_joint_norm() {
    use crate::data::{ImageDataset, SplitConfig};
    let _g = crate::rng_guard();
    let t = teacher(0.0);
    let p = pairs(&t, 80.0);
    let px: Vec<u8> = (0..16 * 64).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<i64> = (0..16).map(|i| i % 2).collect();
    let data = ImageDataset::from_bytes(
        &px,
        [16, 1, 8, 8],
        &labels,
        Some(2),
        &SplitConfig {
            heldout: 2,
            split_seed: 1,
            pad: 0,
        },
        "test",
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let dm_dir = d.path().join("dm");
    run(&cfg(), &t, &p, &dm_dir).unwrap();
    let part = Partition::build(Strategy::Contiguous, 2, 1, 0, None).unwrap();
    let first_fake_norm = |joint: bool, name: &str| -> f64 {
        let mut c = cfg();
        c.adm.iterations = 1;
        c.adm.joint_clip = joint;
        let dir = d.path().join(name);
        let job = StudentJob {
            teacher: &t,
            partition: &part,
            student: 0,
            pairs: Some(&p),
            dir: &dir,
            seed: 3,
            teacher_id: "t",
            generator_init: None,
            stage: StageKind::Adm,
            real_data: Some(&data),
            data_id: "d",
            resume_from: Some(&dm_dir),
        };
        distill_student(&c, &job, &mut |_| {}).unwrap();
        let stats = std::fs::read_to_string(dir.join("stats.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(stats.lines().next().unwrap()).unwrap();
        v["fake_grad_norm"].as_f64().unwrap()
    };
    // Same start and seeds: the separate run reports the fake score's own norm, the joint run
    // the norm over fake score and head together, which is larger (the head has gradients).
    let sep = first_fake_norm(false, "adm-separate");
    let joint = first_fake_norm(true, "adm-joint");
    assert!(
        joint > sep * (1.0 + 1e-6),
        "joint {joint} vs separate {sep}"
    );
}
