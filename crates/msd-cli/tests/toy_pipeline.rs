//! End to end through the binary: train-teacher → partition → distill (one student per job) →
//! bundle → sample --bundle, and `msd toy --quick` (report schema and finiteness, not the trend).

use std::path::Path;
use std::process::Command;

fn msd(args: &[&str]) -> (bool, String, String) {
    msd_in(Path::new("."), args)
}

fn msd_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = msd(args);
    assert!(ok, "{args:?} failed: {err}");
    out
}

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
steps = 60
batch_size = 64
checkpoint_every = 30
[distill]
students = 2
iterations = 20
batch_size = 32
regression_pairs_per_class = 4
checkpoint_every = 10
log_every = 5
"#;

#[test]
fn teacher_to_bundle_to_routed_samples() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let run = d.path().join("run");
    let r = run.to_str().unwrap();
    ok(&[
        "train-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        r,
    ]);
    let out = ok(&["partition", "--run", r]);
    assert!(
        out.contains("student 0: classes [0, 1, 2, 3]")
            && out.contains("student 1: classes [4, 5, 6, 7]"),
        "{out}"
    );
    // Students are independent jobs; the bundle appears once both exist.
    ok(&["distill", "--run", r, "--student", "1"]);
    assert!(run.join("students/1/dm/model.safetensors").exists());
    assert!(
        !run.join("students/0").exists(),
        "training student 1 must not touch student 0"
    );
    assert!(!run.join("bundle.json").exists());
    ok(&["distill", "--run", r, "--student", "0"]);
    assert!(run.join("bundle.json").exists());
    let stats = std::fs::read_to_string(run.join("students/0/dm/stats.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(stats.lines().next().unwrap()).unwrap();
    for key in [
        "vsd_loss",
        "fake_loss",
        "regression_loss",
        "generator_grad_norm",
        "fake_grad_norm",
        "images_per_s",
    ] {
        assert!(
            first[key].as_f64().is_some_and(f64::is_finite),
            "stats lack a finite {key}: {first}"
        );
    }
    // Rerunning a finished student reuses it.
    let before = std::fs::metadata(run.join("students/0/dm/model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    ok(&["distill", "--run", r, "--student", "0"]);
    assert_eq!(
        before,
        std::fs::metadata(run.join("students/0/dm/model.safetensors"))
            .unwrap()
            .modified()
            .unwrap()
    );

    let out = ok(&["bundle", "--run", r]);
    assert!(out.contains("validated"), "{out}");
    let png = d.path().join("b.png");
    let b = run.join("bundle.json");
    let out = ok(&[
        "sample",
        "--bundle",
        b.to_str().unwrap(),
        "--class",
        "6",
        "--n",
        "10",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.contains("students [1]"),
        "class 6 must be served by student 1: {out}"
    );
    let out = ok(&[
        "sample",
        "--bundle",
        b.to_str().unwrap(),
        "--class",
        "0,7",
        "--n",
        "10",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.contains("students [0, 1]"), "{out}");
    let (good, _, err) = msd(&[
        "sample",
        "--bundle",
        b.to_str().unwrap(),
        "--class",
        "8",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        !good && err.contains("unknown class 8") && !err.contains("panicked"),
        "{err}"
    );
    let (good, _, err) = msd(&["distill", "--run", r, "--student", "5"]);
    assert!(!good && err.contains("--student 5"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn smaller_students_go_through_tsm_then_dm() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let run = d.path().join("run");
    let r = run.to_str().unwrap();
    ok(&[
        "train-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        r,
    ]);
    // Without a smaller network TSM has nothing to do: a clear error.
    let (good, _, err) = msd(&["distill", "--run", r, "--stages", "tsm,dm"]);
    assert!(!good && err.contains("student_net"), "{err}");
    let (good, _, err) = msd(&["distill", "--run", r, "--stages", "dm,tsm"]);
    assert!(!good && err.contains("--stages"), "{err}");
    let mut c: toml::Table = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let distill = c["distill"].as_table_mut().unwrap();
    distill.insert(
        "student_net".into(),
        toml::toml! { kind = "mlp" dim = 2 num_classes = 8 width = 16 depth = 1 }.into(),
    );
    let tsm = distill["tsm"].as_table_mut().unwrap();
    tsm.insert("steps".into(), 20.into());
    tsm.insert("batch_size".into(), 32.into());
    tsm.insert("checkpoint_every".into(), 10.into());
    std::fs::write(run.join("config.toml"), toml::to_string(&c).unwrap()).unwrap();
    let out = ok(&["distill", "--run", r, "--stages", "tsm,dm"]);
    assert!(out.contains("TSM 20 steps"), "{out}");
    let bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("bundle.json")).unwrap()).unwrap();
    let teacher: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("teacher/train.json")).unwrap())
            .unwrap();
    let student_params = bundle["students"][0]["params"].as_i64().unwrap();
    assert!(
        student_params < teacher["params"].as_i64().unwrap() / 2,
        "students must be the smaller network: {student_params}"
    );
    let stats = std::fs::read_to_string(run.join("students/1/tsm/stats.jsonl")).unwrap();
    assert!(stats.contains("\"stage\":\"tsm\""), "{stats}");
    // The other copy proves a run directory can be moved and still resumed.
    copy_dir(&run, &d.path().join("moved"));
    let out = ok(&["bundle", "--run", d.path().join("moved").to_str().unwrap()]);
    assert!(out.contains("validated"));
}

fn finite(v: &serde_json::Value, path: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {v}"));
    assert!(x.is_finite(), "{path} = {x}");
    x
}

#[test]
fn toy_quick_sweeps_widths_and_seeds_in_workers_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("toy");
    let args = [
        "--threads",
        "1",
        "toy",
        "--quick",
        "--students",
        "1,2",
        "--seeds",
        "0,1",
        "--widths",
        "32,128",
        "--samples",
        "500",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    let first = ok(&args);
    let text = std::fs::read_to_string(out.join("toy_report.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["seeds"], serde_json::json!([0, 1]));
    let floor = finite(&r["noise_floor_l1"], "noise_floor_l1");
    assert!((0.0..=2.0).contains(&floor));
    finite(&r["teacher"]["l1_to_data"], "teacher.l1_to_data");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let teacher_params = r["teacher"]["params"].as_i64().unwrap();
    for (run, (w, k)) in runs.iter().zip([(32, 1), (32, 2), (128, 1), (128, 2)]) {
        assert_eq!(
            (run["width"].as_i64(), run["students"].as_u64()),
            (Some(w), Some(k))
        );
        assert_eq!(run["method"], "dm");
        assert_eq!(run["init"], if w == 128 { "teacher" } else { "tsm" });
        for key in [
            "l1_to_teacher",
            "l1_to_teacher_std",
            "l1_to_data",
            "train_seconds",
        ] {
            finite(&run[key], key);
        }
        let per_seed: Vec<f64> = run["l1_to_teacher_per_seed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| finite(x, "per seed"))
            .collect();
        assert_eq!(per_seed.len(), 2);
        let mean = (per_seed[0] + per_seed[1]) / 2.0;
        assert!((mean - finite(&run["l1_to_teacher"], "mean")).abs() < 1e-12);
        // Different training seeds give different students.
        assert_ne!(per_seed[0], per_seed[1], "{run}");
        let params = run["params_per_student"].as_i64().unwrap();
        if w == 128 {
            assert_eq!(params, teacher_params);
        } else {
            assert!(params > 0 && params < teacher_params);
        }
        let per = run["per_class_l1_to_teacher"].as_array().unwrap();
        assert_eq!(per.len(), 8);
        // ℓ1 between two normalised histograms is at most 2 (disjoint supports), up to rounding.
        per.iter().for_each(|x| {
            let v = finite(x, "per_class");
            assert!((0.0..=2.0 + 1e-9).contains(&v), "per-class ℓ1 {v}");
        });
    }
    let claims = r["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 2);
    for c in claims {
        // Two seeds: too few for a verdict.
        assert_eq!(c["verdict"], "pending", "{c}");
    }
    assert!(out.join("toy.png").exists() && out.join("toy_report.md").exists());
    // Issue 16: the report names the optimisation preset of its runs.
    let md = std::fs::read_to_string(out.join("toy_report.md")).unwrap();
    assert!(md.contains("Optimisation preset of every run: "), "{md}");
    assert!(
        r["preset"].as_str().is_some_and(|p| p.contains("AdamW")),
        "{r}"
    );
    assert!(first.contains("worker: width 32, seed 1 done"), "{first}");

    // Everything is reused: the same figures, no worker trains again. Run from a folder
    // outside any checkout, the report still cites the commit the binary was built from.
    let (good, second, err) = msd_in(
        d.path(),
        &args[..args.len() - 4]
            .iter()
            .copied()
            .chain(["--out", out.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(good, "{err}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("toy_report.json")).unwrap())
            .unwrap();
    assert_eq!(again["runs"], r["runs"], "{second}");
    let built_from = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(again["provenance"]["commit"], built_from.as_str());

    // An unknown method is a clean error that names the value (dm and cd both exist).
    let (good, _, err) = msd(&[
        "toy",
        "--quick",
        "--method",
        "xyz",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !good && err.contains("xyz") && err.contains("--method") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn an_imported_teacher_is_reused_and_a_mismatched_one_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let a = d.path().join("a");
    ok(&[
        "train-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    let b = d.path().join("b");
    let out = ok(&[
        "import-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--teacher",
        a.join("teacher").to_str().unwrap(),
    ]);
    assert!(out.contains("trained 60 steps"), "{out}");
    // train-teacher with the same config reuses it: no training happens, no stats are written.
    ok(&[
        "train-teacher",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(
        !b.join("teacher/stats.jsonl").exists(),
        "the imported teacher was retrained"
    );
    assert_eq!(
        std::fs::read(a.join("teacher/model.safetensors")).unwrap(),
        std::fs::read(b.join("teacher/model.safetensors")).unwrap()
    );
    // A config whose network differs is refused, naming the file.
    let other = d.path().join("other.toml");
    std::fs::write(&other, TINY.replace("width = 32", "width = 48")).unwrap();
    let (good, _, err) = msd(&[
        "import-teacher",
        "--config",
        other.to_str().unwrap(),
        "--out",
        d.path().join("c").to_str().unwrap(),
        "--teacher",
        a.join("teacher").to_str().unwrap(),
    ]);
    assert!(
        !good && err.contains("model.json") && !err.contains("panicked"),
        "{err}"
    );
}
