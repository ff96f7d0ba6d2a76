//! Image students through the binary on tiny synthetic IDX data: DM then ADM (the discriminator
//! head on the fake score's bottleneck), with the DMD health signals logged and the bundle built
//! from the last stage.

use msd::data::idx::{encode_images, encode_labels};
use std::process::Command;

fn msd(args: &[&str], cwd: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
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

const CONFIG: &str = r#"
seed = 0
[data]
kind = "idx"
images = "data/img.idx"
labels = "data/lab.idx"
heldout = 4
[model.net]
kind = "unet"
resolution = 8
num_classes = 4
base_channels = 8
channel_mult = [1, 2]
blocks_per_level = 1
emb_mult = 2
noise_freqs = 4
[teacher]
steps = 4
batch_size = 8
checkpoint_every = 2
[distill]
students = 2
iterations = 6
batch_size = 8
regression_pairs_per_class = 2
regression_batch = 4
checkpoint_every = 3
# A multiple of ttur (5): the GAN/VSD gradient ratio must still be logged (regression test).
log_every = 5
[distill.adm]
iterations = 5
"#;

#[test]
fn dm_then_adm_on_a_tiny_unet() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("data")).unwrap();
    // 40 images of 8×8 in 4 classes: class c lights up row block c.
    let mut px = Vec::new();
    let labels: Vec<u8> = (0..40).map(|i| (i % 4) as u8).collect();
    for &c in &labels {
        for r in 0..8u8 {
            for _ in 0..8 {
                px.push(if r / 2 == c { 230 } else { 10 });
            }
        }
    }
    std::fs::write(p.join("data/img.idx"), encode_images(40, 8, 8, &px)).unwrap();
    std::fs::write(p.join("data/lab.idx"), encode_labels(&labels)).unwrap();
    std::fs::create_dir_all(p.join("configs")).unwrap();
    std::fs::write(
        p.join("configs/tiny.toml"),
        CONFIG.replace("\"data/", "\"../data/"),
    )
    .unwrap();

    let (ok, _, err) = msd(
        &[
            "train-teacher",
            "--config",
            "configs/tiny.toml",
            "--out",
            "runs/t",
        ],
        p,
    );
    assert!(ok, "{err}");
    // ADM before DM has nothing to start from.
    let (ok, _, err) = msd(&["distill", "--run", "runs/t", "--stages", "adm"], p);
    assert!(
        !ok && err.contains("no DM checkpoint") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, out, err) = msd(&["distill", "--run", "runs/t", "--stages", "dm,adm"], p);
    assert!(ok, "{err}");
    assert!(out.contains("(adm students)"), "{out}");
    let bundle = std::fs::read_to_string(p.join("runs/t/bundle.json")).unwrap();
    assert!(bundle.contains("students/1/adm"), "{bundle}");
    let stats = std::fs::read_to_string(p.join("runs/t/students/0/adm/stats.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    for key in [
        "vsd_loss",
        "fake_loss",
        "d_real_mean",
        "d_fake_mean",
        "gan_generator_loss",
        "gan_discriminator_loss",
        "gan_to_vsd_grad_ratio",
    ] {
        assert!(
            last[key].as_f64().is_some_and(f64::is_finite),
            "adm stats lack a finite {key}: {last}"
        );
    }
    assert!(last["gan_to_vsd_grad_ratio"].as_f64().unwrap() > 0.0);
    // The ADM generator is not the DM one: it kept training.
    let dm = std::fs::read(p.join("runs/t/students/0/dm/model.safetensors")).unwrap();
    let adm = std::fs::read(p.join("runs/t/students/0/adm/model.safetensors")).unwrap();
    assert_ne!(dm, adm);
    let (ok, out, err) = msd(
        &[
            "sample",
            "--bundle",
            "runs/t/bundle.json",
            "--class",
            "3",
            "--n",
            "4",
            "--out",
            "s.png",
        ],
        p,
    );
    assert!(ok && out.contains("students [1]"), "{out} {err}");
    // The bundle's evaluation: pooled metrics and a per-student breakdown.
    let (ok, out, err) = msd(
        &[
            "eval",
            "--bundle",
            "runs/t/bundle.json",
            "--n",
            "16",
            "--batch",
            "8",
            "--data",
            "idx:data/img.idx,data/lab.idx,heldout=4",
        ],
        p,
    );
    assert!(ok, "{out} {err}");
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("runs/t/eval/eval.json")).unwrap())
            .unwrap();
    assert_eq!(e["n"], 16);
    assert_eq!(e["nfe"], 1);
    assert_eq!(e["per_student"].as_array().unwrap().len(), 2);
    assert_eq!(e["per_class_accuracy"].as_array().unwrap().len(), 4);
    assert!(
        e["fd"].as_f64().is_some_and(f64::is_finite)
            && e["floor_fd"].as_f64().is_some_and(f64::is_finite)
    );
    let md = std::fs::read_to_string(p.join("runs/t/eval/eval.md")).unwrap();
    assert!(
        md.contains("Per student") && md.contains("Feature network"),
        "{md}"
    );
}
