//! Bad input to the `msd` binary gives a one-line `error:` and a non-zero exit, never a panic.

use std::path::Path;
use std::process::Command;

fn msd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), err)
}

fn assert_clean_error(args: &[&str], needle: &str) {
    let (ok, err) = msd(args);
    assert!(!ok, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.starts_with("error:") && err.trim_end().lines().count() == 1,
        "{args:?}: not one error line: {err}"
    );
    assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
}

const TINY: &str = r#"
seed = 0
[data]
kind = "toy2d"
[model.net]
kind = "mlp"
dim = 2
num_classes = 8
width = 16
depth = 1
[teacher]
steps = 4
batch_size = 8
checkpoint_every = 2
"#;

fn tiny_teacher(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let out = dir.join("run");
    let (ok, err) = msd(&[
        "train-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    out.join("teacher")
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let t = tiny_teacher(d.path());
    let ts = t.to_str().unwrap();
    let png = d.path().join("x.png");
    let png = png.to_str().unwrap();

    // Missing checkpoint directory.
    assert_clean_error(
        &["sample", "--teacher", "/nonexistent/teacher", "--out", png],
        "/nonexistent/teacher",
    );
    // Unknown class.
    assert_clean_error(
        &["sample", "--teacher", ts, "--class", "8", "--out", png],
        "unknown class 8",
    );
    // Unknown sampler and device.
    assert_clean_error(
        &["sample", "--teacher", ts, "--method", "rk4", "--out", png],
        "--method",
    );
    assert_clean_error(
        &["sample", "--teacher", ts, "--method", "rk4", "--out", png],
        "(expected one of: euler, heun)",
    );
    assert_clean_error(
        &["sample", "--teacher", ts, "--device", "tpu", "--out", png],
        "--device",
    );
    assert_clean_error(
        &["sample", "--teacher", ts, "--device", "tpu", "--out", png],
        "expected cpu, cuda or cuda:N",
    );

    // Corrupt weights.
    let broken = d.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(t.join("model.json"), broken.join("model.json")).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"garbage").unwrap();
    assert_clean_error(
        &[
            "sample",
            "--teacher",
            broken.to_str().unwrap(),
            "--out",
            png,
        ],
        "model.safetensors",
    );

    // Weights that do not match the config: name the tensor and both shapes.
    let json = std::fs::read_to_string(t.join("model.json"))
        .unwrap()
        .replace("\"width\": 16", "\"width\": 24");
    std::fs::write(broken.join("model.json"), json).unwrap();
    std::fs::copy(
        t.join("model.safetensors"),
        broken.join("model.safetensors"),
    )
    .unwrap();
    assert_clean_error(
        &[
            "sample",
            "--teacher",
            broken.to_str().unwrap(),
            "--out",
            png,
        ],
        "[16",
    );

    // Malformed config: name the field.
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, TINY.replace("width = 16", "width = \"wide\"")).unwrap();
    assert_clean_error(
        &[
            "train-teacher",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            d.path().join("r2").to_str().unwrap(),
        ],
        "width",
    );
    assert_clean_error(
        &[
            "train-teacher",
            "--config",
            "/nonexistent.toml",
            "--out",
            "/tmp/x",
        ],
        "/nonexistent.toml",
    );
}

#[test]
fn sample_writes_picture_and_points() {
    let d = tempfile::tempdir().unwrap();
    let t = tiny_teacher(d.path());
    let png = d.path().join("pts.png");
    let csv = d.path().join("pts.csv");
    let (ok, err) = msd(&[
        "sample",
        "--teacher",
        t.to_str().unwrap(),
        "--class",
        "3",
        "--n",
        "50",
        "--steps",
        "4",
        "--out",
        png.to_str().unwrap(),
        "--points",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image::open(&png).unwrap();
    assert_eq!(img.width(), 512);
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(rows.len(), 50);
    assert!(rows
        .iter()
        .all(|r| r.ends_with(",3") && r.split(',').count() == 3));
}
