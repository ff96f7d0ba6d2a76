//! The seeded text experiment end to end on a tiny configuration: 240 MNIST images (60 held
//! out), a 1-level UNet on 384-d caption embeddings trained 2 steps as the shared teacher, and
//! per seed (0, 1) 1 student and 2 students (quadrants, k-means) distilled 2 DM + 1 ADM
//! iterations; 20 prompts × 2 samples per row. Checks that a partial first call, the full call
//! and a re-run share their work (nothing is trained or evaluated twice; a deleted evaluation
//! is made again with the same numbers), and what `report.json` holds: every row with per-seed
//! values, per-group FDs with floors, partition sizes, and `pending` verdicts with 2 seeds.
//!
//! Needs the all-MiniLM-L6-v2 folder (`scripts/setup-text-encoder.sh`, run here if missing).

use msd::data::idx::{encode_images, encode_labels, read_pair};
use msd::experiment::stats::Verdict;
use msd::experiment::{Observer, Provenance};
use msd::nets::text_encoder::{default_model_dir, TextEncoder};
use msd::text::experiment::driver::{run_text_experiment, TextExperimentOptions};
use msd::text::experiment::TextExperimentConfig;
use msd::text::pipeline::TextRun;
use std::path::{Path, PathBuf};
use tch::Device;

fn encoder_dir() -> PathBuf {
    let dir: PathBuf = default_model_dir().expect("neither MSD_TORCH_HOME nor HOME is set");
    if !dir.join(".msd-complete").exists() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-text-encoder.sh");
        let ok = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the text encoder is missing and {} failed",
            script.display()
        );
    }
    dir
}

/// The first 240 MNIST-10k images and labels as uncompressed IDX files in `dir`.
fn tiny_data(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist10k");
    let (im, lb) = read_pair(
        &src.join("images-idx3-ubyte.gz"),
        &src.join("labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let n = 240;
    let px = &im.pixels[..n * im.rows * im.cols];
    std::fs::write(
        dir.join("images.idx"),
        encode_images(n, im.rows, im.cols, px),
    )
    .unwrap();
    std::fs::write(dir.join("labels.idx"), encode_labels(&lb[..n])).unwrap();
}

const RUN: &str = r#"
seed = 0
[data]
kind = "idx"
images = "images.idx"
labels = "labels.idx"
heldout = 60
split_seed = 1000
[model.net]
kind = "unet"
resolution = 28
num_classes = 10
base_channels = 4
channel_mult = [1]
blocks_per_level = 1
emb_mult = 2
noise_freqs = 4
cond = { kind = "embedding", dim = 384 }
[teacher]
steps = 2
batch_size = 4
label_dropout = 0.2
checkpoint_every = 1
[sampler]
steps = 2
guidance = 1.5
[distill]
students = 4
partition = "quadrants"
iterations = 50
batch_size = 8
ttur = 1
regression_weight = 0.0
checkpoint_every = 1
[distill.adm]
iterations = 50
"#;

/// Counts training steps and evaluations.
#[derive(Default)]
struct Count {
    steps: usize,
    evaluations: Vec<String>,
}

impl Observer for Count {
    fn note(&mut self, msg: &str) {
        if let Some(what) = msg.strip_prefix("text experiment: evaluating ") {
            self.evaluations.push(what.to_string());
        }
    }
    fn step(&mut self, _step: u64) {
        self.steps += 1;
    }
}

fn options(d: &Path, seeds: &[u64], only: &[&str], report_only: bool) -> TextExperimentOptions {
    let path = d.join("experiment.toml");
    TextExperimentOptions {
        exp: TextExperimentConfig::load(&path).unwrap(),
        config_path: path,
        out: d.join("out"),
        seeds: Some(seeds.to_vec()),
        only: only.iter().map(|s| s.to_string()).collect(),
        report_only,
        encoder: Some(encoder_dir()),
        device: Device::Cpu,
        provenance: Provenance::default(),
    }
}

#[test]
fn the_seeded_text_experiment_runs_resumes_and_reports_per_seed_values() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    tiny_data(d);
    std::fs::write(d.join("run.toml"), RUN).unwrap();
    // The shared teacher, trained as `msd text teacher` does.
    let troot = d.join("teacher-run");
    msd::run::RunDir::new(&troot)
        .create(&d.join("run.toml"), None)
        .unwrap();
    let enc = TextEncoder::load(&encoder_dir(), Device::Cpu).unwrap();
    TextRun::new(&troot, enc)
        .train_teacher(None, &mut |_| {})
        .unwrap();
    let classifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results/mnist-classifier");
    std::fs::write(
        d.join("experiment.toml"),
        format!(
            "run = \"run.toml\"\nteacher = \"teacher-run/teacher\"\nclassifier = \"{}\"\n\
             students = 2\ndm_iterations = 2\nadm_iterations = 1\nbatch_size = 2\n\
             prompts_per_digit = 1\nsamples_per_prompt = 2\ngrid_per_prompt = 2\n",
            classifier.display()
        ),
    )
    .unwrap();

    // A partial first call (as an interrupted one leaves it): the teacher and 1 student, seed 0.
    let mut c = Count::default();
    let r = run_text_experiment(&options(d, &[0], &["teacher", "k1"], false), &mut c).unwrap();
    assert!(c.steps > 0);
    assert_eq!(c.evaluations.len(), 3, "{:?}", c.evaluations);
    assert_eq!(r.rows_done, 3, "teacher, k1 DM, k1 ADM");

    // The full call reuses them and does the rest.
    let mut c = Count::default();
    let r = run_text_experiment(&options(d, &[0, 1], &[], false), &mut c).unwrap();
    // Seed 1 of k1 (2 rows) and both seeds of 3 rows of the 2-student runs.
    assert_eq!(c.evaluations.len(), 2 + 2 * 3, "{:?}", c.evaluations);
    assert!(!c.evaluations.iter().any(|e| e.starts_with("teacher")));
    assert_eq!(r.rows.len(), 6);
    assert_eq!(r.rows_done, 6);
    let out = d.join("out");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in &rows[1..] {
        assert_eq!(
            row["seeds_done"],
            serde_json::json!([0, 1]),
            "{}",
            row["name"]
        );
        let fd = &row["fd"];
        // Overall, then the 2 quadrant groups, each with its per-seed FDs and a floor.
        assert_eq!(fd.as_array().unwrap().len(), 3, "{}", row["name"]);
        for g in fd.as_array().unwrap() {
            assert_eq!(g["fd_all"]["per_seed"].as_array().unwrap().len(), 2);
            assert!(g["floor"].as_f64().unwrap() >= 0.0);
        }
        assert_eq!(fd[0]["generated"], 40);
        assert_eq!(fd[0]["heldout"], 60);
        assert_eq!(fd[0]["n"], 40);
        let groups: u64 = fd.as_array().unwrap()[1..]
            .iter()
            .map(|g| g["generated"].as_u64().unwrap())
            .sum();
        assert_eq!(groups, 40, "every sample in exactly one group");
        assert_eq!(row["digit_all"]["per_seed"].as_array().unwrap().len(), 2);
    }
    assert!(rows[0]["seeds_done"].as_array().unwrap().is_empty());
    assert_eq!(rows[0]["status"], "done");
    // Both partitions' sizes over the 180 training captions, per seed.
    for row in rows.iter().filter(|r| r["students"] == 2) {
        for sizes in row["partition_sizes"].as_array().unwrap() {
            let s: Vec<u64> = serde_json::from_value(sizes.clone()).unwrap();
            assert_eq!((s.len(), s.iter().sum::<u64>()), (2, 180));
        }
    }
    // Two seeds: every claim is pending, whatever the gap.
    assert!(!r.claims.is_empty());
    for claim in &r.claims {
        assert_eq!(claim.verdict, Some(Verdict::Pending), "{}", claim.claim);
    }
    assert!(json["claims"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["verdict"] == "pending"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("not Inception FID") && md.contains("pending"),
        "{md}"
    );
    assert!(out.join("evals/k2-quadrants-adm/s1/prompts.png").exists());

    // A re-run finds everything done; a deleted evaluation is made again, with the same
    // numbers (the evaluation noise is seeded).
    let eval = out.join("evals/k2-quadrants-adm/s1/eval.json");
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eval).unwrap()).unwrap();
    std::fs::remove_file(&eval).unwrap();
    let mut c = Count::default();
    run_text_experiment(&options(d, &[0, 1], &[], false), &mut c).unwrap();
    assert_eq!(c.steps, 0, "nothing is trained again");
    assert_eq!(c.evaluations, vec!["k2-quadrants-adm seed 1".to_string()]);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eval).unwrap()).unwrap();
    assert_eq!(before["fd"], after["fd"]);
    assert_eq!(before["summaries"], after["summaries"]);

    // --report-only rewrites the report from what exists, training nothing.
    std::fs::remove_file(out.join("report.json")).unwrap();
    let mut c = Count::default();
    let again = run_text_experiment(&options(d, &[0, 1], &[], true), &mut c).unwrap();
    assert_eq!((c.steps, c.evaluations.len()), (0, 0));
    assert_eq!(again.rows_done, 6);
    assert!(out.join("report.json").exists());
    // A third seed that does not exist yet: rows are partial.
    let partial = run_text_experiment(&options(d, &[0, 1, 2], &[], true), &mut c).unwrap();
    assert_eq!(partial.rows_done, 1, "only the teacher is complete");
    assert!(run_text_experiment(&options(d, &[0], &["k9"], false), &mut c).is_err());
    // A run directory holding another teacher is refused, not silently reused.
    let copy = out.join("runs/k1/s0/teacher/train.json");
    let text = std::fs::read_to_string(&copy).unwrap();
    let mut t: serde_json::Value = serde_json::from_str(&text).unwrap();
    t["config_hash"] = "another".into();
    std::fs::write(&copy, t.to_string()).unwrap();
    let e = run_text_experiment(&options(d, &[0], &["k1"], false), &mut c)
        .expect_err("a stale teacher copy is an error")
        .to_string();
    assert!(e.contains("teacher") && e.contains("runs/k1/s0"), "{e}");
}
