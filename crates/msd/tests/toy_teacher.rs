//! End-to-end on the toy: a small teacher trains in seconds, its Heun-18 samples sit in their own
//! class's modes, and an interrupted run resumes to exactly the result of an uninterrupted one.

mod common;

use msd::data::{Toy2d, TrainingData};
use msd::diffusion::{sample, SamplerConfig};
use msd::model::{EdmModel, ModelSpec};
use msd::teacher::{train_teacher, TeacherTrainConfig};
use msd::train::AdamWConfig;
use tch::{Device, Kind, Tensor};

fn spec() -> ModelSpec {
    common::mlp_spec(8, 96, 3, 16)
}

fn cfg(steps: u64) -> TeacherTrainConfig {
    TeacherTrainConfig {
        steps,
        batch_size: 256,
        optimizer: AdamWConfig {
            lr: 3e-3,
            warmup_steps: 100,
            ..Default::default()
        },
        ema_decay: 0.99,
        label_dropout: 0.0,
        sigma: Default::default(),
        checkpoint_every: 100,
        log_every: 50,
    }
}

#[test]
fn teacher_samples_sit_in_their_class_modes() {
    let _g = common::global_lock();
    let toy = Toy2d::standard();
    let dir = tempfile::tempdir().unwrap();
    let (teacher, _) = train_teacher(
        &spec(),
        &cfg(2500),
        &toy,
        "toy",
        dir.path(),
        0,
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    tch::manual_seed(5);
    let per = 200;
    let labels: Vec<i64> = (0..8).flat_map(|c| std::iter::repeat_n(c, per)).collect();
    let z = Tensor::randn([labels.len() as i64, 2], (Kind::Float, Device::Cpu));
    let x = sample(
        &teacher,
        &z,
        &Tensor::from_slice(&labels),
        &SamplerConfig::default(),
    )
    .unwrap();
    let pts: Vec<f32> = Vec::try_from(x.flatten(0, -1)).unwrap();
    let mut own = 0;
    let mut other_better = 0;
    for (p, &c) in pts.chunks(2).zip(&labels) {
        // Distance in units of each mode's std to the nearest mode of the class.
        let near = |cls: usize| {
            toy.classes[cls]
                .iter()
                .map(|m| ((p[0] as f64 - m.mean[0]).hypot(p[1] as f64 - m.mean[1])) / m.std)
                .fold(f64::INFINITY, f64::min)
        };
        if near(c as usize) < 4.0 {
            own += 1;
        } else if (0..8).any(|k| k != c as usize && near(k) < 4.0) {
            other_better += 1;
        }
    }
    let n = labels.len();
    assert!(
        own as f64 > 0.85 * n as f64,
        "{own}/{n} samples within 4 std of a mode of their class"
    );
    assert!(
        other_better < n / 20,
        "{other_better} samples landed in another class's modes only"
    );
    assert_eq!(toy.num_classes(), 8);
}

#[test]
fn interrupted_training_resumes_to_the_same_result() {
    let _g = common::global_lock();
    let toy = Toy2d::standard();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (ma, sa) = train_teacher(
        &spec(),
        &cfg(300),
        &toy,
        "toy",
        a.path(),
        1,
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let (_, sb0) = train_teacher(
        &spec(),
        &cfg(300),
        &toy,
        "toy",
        b.path(),
        1,
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        sa.final_loss, sb0.final_loss,
        "two fresh runs with one seed agree"
    );
    // Roll b back to its step-200 checkpoint, as if the process had died after writing it.
    for f in ["train.json", "model.json", "model.safetensors"] {
        std::fs::remove_file(b.path().join(f)).unwrap();
    }
    std::fs::remove_dir_all(b.path().join("checkpoints/step-000000300")).unwrap();
    std::fs::write(
        b.path().join("checkpoints/latest.json"),
        r#"{"dir":"step-000000200"}"#,
    )
    .unwrap();
    let mut steps_seen = vec![];
    let (mb, sb) = train_teacher(
        &spec(),
        &cfg(300),
        &toy,
        "toy",
        b.path(),
        1,
        Device::Cpu,
        &mut |p| {
            if let msd::teacher::Progress::Start { step, .. } = p {
                steps_seen.push(step)
            }
        },
    )
    .unwrap();
    assert_eq!(steps_seen, vec![200], "must resume at the checkpoint");
    assert_eq!(sa.steps, sb.steps);
    assert_eq!(sa.final_loss, sb.final_loss, "same final loss after resume");
    for (name, ta) in ma.vs.variables() {
        let tb = &mb.vs.variables()[&name];
        assert!(ta.equal(tb), "weights of `{name}` differ after resume");
    }
    // The stats log has no duplicated steps.
    let log = std::fs::read_to_string(b.path().join("stats.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        std::fs::read_to_string(a.path().join("stats.jsonl"))
            .unwrap()
            .lines()
            .count()
    );
    // A different seed in the same directory is refused, not silently mixed.
    let e = train_teacher(
        &spec(),
        &cfg(400),
        &toy,
        "toy",
        b.path(),
        2,
        Device::Cpu,
        &mut |_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("another config"), "{e}");
}

#[test]
fn reloaded_teacher_denoises_identically() {
    let _g = common::global_lock();
    let toy = Toy2d::standard();
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = train_teacher(
        &spec(),
        &cfg(20),
        &toy,
        "toy",
        dir.path(),
        3,
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let r = EdmModel::load_dir(dir.path(), Device::Cpu).unwrap();
    let x = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
    let s = Tensor::full([16], 0.7, (Kind::Float, Device::Cpu));
    let l = Tensor::zeros([16], (Kind::Int64, Device::Cpu));
    assert!(m
        .denoise_t(&x, &s, &l, false)
        .equal(&r.denoise_t(&x, &s, &l, false)));
}

#[test]
fn tsm_learns_the_teacher_denoiser_on_its_classes() {
    use msd::teacher::{train_denoiser, DenoiserJob};
    let _g = common::global_lock();
    let toy = Toy2d::standard();
    // The ideal denoiser of the toy plays the teacher; the student is a smaller MLP.
    let ideal = toy.ideal_denoiser();
    let small = common::mlp_spec(8, 48, 2, 16);
    let classes = vec![2i64, 3];
    let err = |m: &EdmModel, sigma: f64| {
        tch::manual_seed(9);
        let n = 2000;
        let l = Tensor::from_slice(&(0..n).map(|i| classes[i % 2]).collect::<Vec<_>>());
        let mut rng = rand_chacha::rand_core::SeedableRng::seed_from_u64(4);
        let (x, _) = toy.batch(n, &classes, &mut rng, Device::Cpu).unwrap();
        let s = Tensor::full([n as i64], sigma, (Kind::Float, Device::Cpu));
        let xn = &x + x.randn_like() * sigma;
        use msd::diffusion::Denoiser;
        (m.denoise(&xn, &s, &l) - ideal.denoise(&xn, &s, &l))
            .square()
            .mean(Kind::Float)
            .double_value(&[])
    };
    let dir = tempfile::tempdir().unwrap();
    let job = DenoiserJob {
        spec: &small,
        cfg: &cfg(1500),
        data: &toy,
        data_id: "toy",
        classes: classes.clone(),
        target_teacher: Some((&ideal, "ideal")),
        sigma_max_share: 0.1,
        sigma_max: 80.0,
        init: None,
        dir: dir.path(),
        seed: 0,
        device: Device::Cpu,
        stage: "tsm",
    };
    let init = EdmModel::from_spec(&small, Device::Cpu);
    let (m, _) = train_denoiser(&job, &mut |_| {}).unwrap();
    for sigma in [0.05, 0.5, 80.0] {
        let (before, after) = (err(&init, sigma), err(&m, sigma));
        assert!(
            after < 0.2 * before,
            "σ = {sigma}: squared error to the teacher {before:.4} → {after:.4}"
        );
    }
    // At σ_max the generator's output must be near the class mean the teacher predicts.
    assert!(err(&m, 80.0) < 0.05, "σ_max error {}", err(&m, 80.0));
}
