//! `msd sample --prompt` on a tiny prompt-conditional bundle (2 UNet students taking 384-d
//! embeddings, a 2-quadrant partition): prompts never seen (including non-ASCII) are routed and
//! drawn; an empty prompt, a 10 kB prompt, `--class` with a prompt bundle and `--prompt` with a
//! class bundle are refused with errors naming the flag. Needs the all-MiniLM-L6-v2 folder
//! (`scripts/setup-text-encoder.sh`).

use msd::bundle::Bundle;
use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::nets::text_encoder::{default_model_dir, TextEncoder};
use msd::nets::{Conditioning, NetConfig, UNetConfig};
use msd::partition::{Partition, Strategy};
use msd::text::prompt::embed_prompt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Device;

fn encoder() -> TextEncoder {
    let dir: PathBuf = default_model_dir().expect("neither MSD_TORCH_HOME nor HOME is set");
    if !dir.join(".msd-complete").exists() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-text-encoder.sh");
        let ok = Command::new("bash")
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
    TextEncoder::load(&dir, Device::Cpu).expect("the text encoder loads")
}

fn bundle(dir: &Path, cond: Conditioning) -> PathBuf {
    let enc = encoder();
    let points: Vec<Vec<f32>> = [
        "a bold seven leaning right",
        "a thin one, upright",
        "handwritten 4, thick strokes",
        "a small zero",
    ]
    .iter()
    .map(|t| embed_prompt(&enc, t, "prompt").unwrap())
    .collect();
    let p = match cond {
        Conditioning::Class => Partition::contiguous(10, 2),
        _ => Partition::of_prompts(Strategy::Quadrants, &points, 2, 0).unwrap(),
    };
    let cfg = NetConfig::Unet(UNetConfig {
        in_channels: 1,
        resolution: 8,
        num_classes: 10,
        base_channels: 8,
        channel_mult: vec![1, 2],
        blocks_per_level: 1,
        attn_resolutions: vec![],
        heads: 1,
        dropout: 0.0,
        emb_mult: 2,
        noise_freqs: 4,
        cond,
    });
    let dirs: Vec<PathBuf> = (0..2)
        .map(|k| {
            tch::manual_seed(k);
            let d = dir.join("students").join(k.to_string());
            EdmModel::new(&cfg, EdmPrecond::default(), Device::Cpu)
                .save_dir(&d)
                .unwrap();
            d
        })
        .collect();
    let path = dir.join("bundle.json");
    Bundle::assemble(&path, &p, &dirs, None, 80.0).unwrap();
    path
}

fn msd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sample_with_prompts_routes_unseen_wordings_and_refuses_bad_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), Conditioning::Embedding { dim: 384 });
    let b = b.to_str().unwrap();
    let png = dir.path().join("s.png");
    let png = png.to_str().unwrap();
    let (ok, out, err) = msd(&[
        "sample",
        "--bundle",
        b,
        "--prompt",
        "a thin eight",
        "--prompt",
        "une grosse huit penchée ✓ — 八",
        "--n",
        "2",
        "--out",
        png,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("prompt 0 \"a thin eight\" → student"), "{out}");
    assert!(
        out.contains("prompt 1 \"une grosse huit penchée ✓ — 八\" → student"),
        "{out}"
    );
    assert!(Path::new(png).exists());

    let long = "eight ".repeat(1700);
    for (args, want) in [
        (vec!["--prompt", "   "], "`--prompt`: is empty"),
        (vec!["--prompt", long.as_str()], "at most 1024"),
        (
            vec!["--prompt", "a one", "--class", "1"],
            "exclude each other",
        ),
        (vec![], "take prompts, not class labels"),
    ] {
        let mut a = vec!["sample", "--bundle", b, "--n", "1", "--out", png];
        a.extend(args);
        let (ok, _, err) = msd(&a);
        assert!(!ok && err.contains(want), "{want}: {err}");
    }

    let cdir = tempfile::tempdir().unwrap();
    let c = bundle(cdir.path(), Conditioning::Class);
    let (ok, _, err) = msd(&[
        "sample",
        "--bundle",
        c.to_str().unwrap(),
        "--prompt",
        "a one",
        "--n",
        "1",
        "--out",
        png,
    ]);
    assert!(!ok && err.contains("take classes, not prompts"), "{err}");
}

#[test]
fn text_experiment_names_its_config_and_reports_what_exists() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.toml");
    let out = d.path().join("out");
    let (ok, _, err) = msd(&[
        "text",
        "experiment",
        "--config",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("--config") && err.contains("nope.toml"),
        "{err}"
    );
    // With nothing trained, --report-only writes a report of pending rows and claims (it needs
    // neither the teacher nor the encoder).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = d.path().join("experiment-text.toml");
    std::fs::write(
        &cfg,
        format!(
            "run = \"{}\"\nteacher = \"absent\"\nclassifier = \"absent\"\n",
            root.join("configs/text-mnist.toml").display()
        ),
    )
    .unwrap();
    let (ok, stdout, err) = msd(&[
        "text",
        "experiment",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report-only",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("0 of 6 rows"), "{stdout}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| 4 quadrant students beat 1 (DM → ADM) | pending | pending |"),
        "{md}"
    );
    assert!(md.contains("DM 100 iterations then ADM 50"), "{md}");
    // Training needs the teacher, and says which.
    let (ok, _, err) = msd(&[
        "text",
        "experiment",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--only",
        "k1",
    ]);
    assert!(!ok && err.contains("absent"), "{err}");
}
