//! The image pipeline through the binary on a tiny synthetic IDX dataset: train-classifier,
//! train-teacher (UNet, sample grid + loss curve), eval (eval.json fields, eval.md), and clean
//! errors for bad --data and a missing teacher.

use msd::data::idx::{encode_images, encode_labels};
use std::path::Path;
use std::process::Command;

fn msd(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(["--threads", "1"])
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 48 images of 8×8: class 0 bright on the left half, class 1 on the right.
fn write_data(dir: &Path) {
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for i in 0..48usize {
        let c = (i % 2) as u8;
        for r in 0..8usize {
            for col in 0..8usize {
                let bright = (col < 4) == (c == 0);
                px.push(if bright {
                    200 + ((i + r) % 50) as u8
                } else {
                    ((i * 3 + col) % 30) as u8
                });
            }
        }
        labels.push(c);
    }
    std::fs::write(dir.join("img.idx"), encode_images(48, 8, 8, &px)).unwrap();
    std::fs::write(dir.join("lab.idx"), encode_labels(&labels)).unwrap();
}

const CONFIG: &str = r#"
seed = 0
[data]
kind = "idx"
images = "img.idx"
labels = "lab.idx"
heldout = 8
[model.net]
kind = "unet"
resolution = 8
num_classes = 2
base_channels = 8
channel_mult = [1, 2]
blocks_per_level = 1
attn_resolutions = [4]
emb_mult = 2
noise_freqs = 4
[teacher]
steps = 4
batch_size = 8
checkpoint_every = 2
log_every = 1
label_dropout = 0.1
[sampler]
steps = 2
guidance = 1.5
"#;

#[test]
fn classifier_teacher_and_eval_on_tiny_idx_data() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    std::fs::write(p.join("tiny.toml"), CONFIG).unwrap();
    let data = "idx:img.idx,lab.idx,heldout=8";

    let (ok, out, err) = msd(
        &[
            "train-classifier",
            "--data",
            data,
            "--out",
            "clf",
            "--steps",
            "30",
            "--batch-size",
            "16",
        ],
        p,
    );
    assert!(ok, "{err}");
    assert!(out.contains("held-out accuracy"), "{out}");
    assert!(
        p.join("clf/classifier.json").exists() && p.join("clf/classifier.safetensors").exists()
    );

    let (ok, out, err) = msd(
        &["train-teacher", "--config", "tiny.toml", "--out", "run"],
        p,
    );
    assert!(ok, "{err}");
    assert!(out.contains("4 steps"), "{out}");
    let grid = image::open(p.join("run/teacher/samples/step-0000004.png")).unwrap();
    // Two rows (classes) of 8 images of 8×8 with 2-pixel gutters.
    assert_eq!((grid.width(), grid.height()), (8 * 10 + 2, 2 * 10 + 2));
    assert!(p.join("run/teacher/loss.png").exists());

    let (ok, out, err) = msd(
        &[
            "eval",
            "--teacher",
            "run/teacher",
            "--steps",
            "2",
            "--n",
            "20",
            "--classifier",
            "clf",
            "--data",
            data,
            "--batch",
            "8",
        ],
        p,
    );
    assert!(ok, "{err}");
    assert!(out.contains("class accuracy"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("run/eval/eval.json")).unwrap())
            .unwrap();
    for k in [
        "n",
        "fd",
        "kid",
        "precision",
        "recall",
        "class_accuracy",
        "per_class_accuracy",
        "floor_fd",
        "feature_net",
    ] {
        assert!(j.get(k).is_some(), "eval.json lacks {k}: {j}");
    }
    assert_eq!(j["n"], 20);
    assert_eq!(j["per_class_accuracy"].as_array().unwrap().len(), 2);
    assert_eq!(j["feature_net"]["path"], "clf");
    assert!(j["feature_net"]["heldout_accuracy"].as_f64().unwrap() > 0.5);
    assert!(j["floor_fd"].as_f64().unwrap() >= 0.0);
    // Scored as 8-bit images, and the FD says which network made it (not Inception FID).
    assert!(
        j["samples_as"].as_str().unwrap().starts_with("uint8"),
        "{j}"
    );
    // ... with the raw-value FD of the same samples beside it (the pre-quantisation figure).
    assert!(j["fd_raw"].as_f64().is_some_and(f64::is_finite), "{j}");
    assert!(j["feature_net"]["kind"]
        .as_str()
        .unwrap()
        .contains("not Inception FID"));
    assert_eq!(j["sampler"]["steps"], 2);
    assert!(out.contains("not Inception FID"), "{out}");
    let md = std::fs::read_to_string(p.join("run/eval/eval.md")).unwrap();
    assert!(
        md.contains("| FD (msd CNN `clf`, not Inception FID) |"),
        "{md}"
    );
    assert!(md.contains("on their raw values: FD "), "{md}");
    assert!(
        md.contains("Feature network")
            && md.contains("Hardware")
            && md.contains("| teacher samples | 20 |"),
        "{md}"
    );
    assert!(p.join("run/eval/samples.png").exists());

    // Regression: without --data/--steps/--guidance, a run's teacher is scored against the
    // run's own data (here the tiny IDX set, not MNIST-10k) with the run's sampler.
    let (ok, out, err) = msd(
        &[
            "eval",
            "--teacher",
            "run/teacher",
            "--n",
            "20",
            "--classifier",
            "clf",
            "--batch",
            "8",
            "--out",
            "eval-defaults",
        ],
        p,
    );
    assert!(ok, "{err}");
    assert!(!out.contains("no run config"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("eval-defaults/eval.json")).unwrap())
            .unwrap();
    let data = j["data"].as_str().unwrap();
    assert!(
        data.starts_with("idx:img.idx,lab.idx") && data.contains("heldout=8"),
        "{data}"
    );
    assert_eq!(j["sampler"]["steps"], 2);
    assert_eq!(j["sampler"]["guidance"], 1.5);
}

#[test]
fn bad_data_and_missing_teacher_are_clean_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for (args, needle) in [
        (
            vec!["train-classifier", "--data", "png:x", "--out", "c"],
            "--data",
        ),
        (
            vec![
                "train-classifier",
                "--data",
                "idx:nope.idx,lab.idx",
                "--out",
                "c",
            ],
            "nope.idx",
        ),
        (
            vec!["eval", "--teacher", "missing-teacher"],
            "missing-teacher",
        ),
    ] {
        let (ok, _, err) = msd(&args, p);
        assert!(
            !ok && err.starts_with("error:") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
    }
}

#[test]
fn captions_write_the_level_check_grid() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // 90 images of 8×8, digits i mod 10 (captions need every digit): a vertical bar 1–3 px wide.
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    for i in 0..90usize {
        let w = 1 + (i / 10) % 3;
        for r in 0..8usize {
            for col in 0..8usize {
                let ink = (1..7).contains(&r) && (3..3 + w).contains(&col);
                px.push(if ink { 255 } else { 0 });
            }
        }
        labels.push((i % 10) as u8);
    }
    std::fs::write(p.join("img.idx"), encode_images(90, 8, 8, &px)).unwrap();
    std::fs::write(p.join("lab.idx"), encode_labels(&labels)).unwrap();
    let (ok, out, err) = msd(
        &[
            "captions",
            "--data",
            "idx:img.idx,lab.idx,heldout=10",
            "--out",
            "caps",
            "--no-embed",
        ],
        p,
    );
    assert!(ok, "{out}{err}");
    for f in ["captions.jsonl", "thresholds.json", "captions.json"] {
        assert!(p.join("caps").join(f).exists(), "{f}");
    }
    // levels.png: 9 rows (3 attributes × 3 levels) of 8-px images with 2-px gutters.
    let img = image::open(p.join("caps/levels.png")).unwrap();
    assert_eq!(img.height(), 9 * (8 + 2) + 2);
    assert!(img.width() > 8);
}
