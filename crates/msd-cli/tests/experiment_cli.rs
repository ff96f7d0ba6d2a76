//! `msd experiment` end to end on a tiny synthetic 4-class IDX dataset with two training seeds:
//! every row of the table is trained, evaluated and reported with the fields the report promises
//! (means, FD std and per-seed values, claims with verdicts); a second invocation reuses
//! everything; a capacity-only experiment plans and reports only its rows; a bad `--only` is a
//! clean error.

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

/// 64 images of 8×8: class c is bright in quadrant c.
fn write_data(dir: &Path) {
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for i in 0..64usize {
        let c = i % 4;
        for r in 0..8usize {
            for col in 0..8usize {
                let q = (r / 4) * 2 + col / 4;
                px.push(if q == c {
                    200 + ((i + r) % 50) as u8
                } else {
                    ((i * 3 + col) % 30) as u8
                });
            }
        }
        labels.push(c as u8);
    }
    std::fs::write(dir.join("img.idx"), encode_images(64, 8, 8, &px)).unwrap();
    std::fs::write(dir.join("lab.idx"), encode_labels(&labels)).unwrap();
}

const NET: &str = r#"kind = "unet"
resolution = 8
num_classes = 4
channel_mult = [1, 2]
blocks_per_level = 1
attn_resolutions = [4]
emb_mult = 2
noise_freqs = 4
"#;

fn run_config() -> String {
    format!(
        r#"seed = 0
[data]
kind = "idx"
images = "img.idx"
labels = "lab.idx"
heldout = 8
[model.net]
base_channels = 8
{NET}
[teacher]
steps = 4
batch_size = 8
label_dropout = 0.2
checkpoint_every = 2
log_every = 1
[sampler]
steps = 2
guidance = 1.25
[distill]
iterations = 3
batch_size = 4
real_guidance = 1.25
regression_pairs_per_class = 2
regression_batch = 4
kmeans_samples_per_class = 2
checkpoint_every = 2
log_every = 1
[distill.adm]
iterations = 2
[distill.tsm]
steps = 2
batch_size = 4
checkpoint_every = 1
log_every = 1
"#
    )
}

fn experiment_config() -> String {
    format!(
        r#"run = "run.toml"
teacher = "t/teacher"
classifier = "clf"
n = 16
eval_batch = 8
student_counts = [1, 2]
capacity_counts = [1, 2]
equal_compute = [2]
latency_reps = 1
throughput_batch = 4
[small_net]
base_channels = 4
{NET}
[capacity_net]
base_channels = 4
{NET}"#
    )
}

#[test]
fn experiment_trains_evaluates_and_reports_every_row_then_reuses_them() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    std::fs::write(p.join("run.toml"), run_config()).unwrap();
    std::fs::write(p.join("exp.toml"), experiment_config()).unwrap();
    let (ok, _, err) = msd(
        &[
            "train-classifier",
            "--data",
            "idx:img.idx,lab.idx,heldout=8",
            "--out",
            "clf",
            "--steps",
            "20",
            "--batch-size",
            "16",
        ],
        p,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = msd(&["train-teacher", "--config", "run.toml", "--out", "t"], p);
    assert!(ok, "{err}");

    let args = [
        "experiment",
        "tiny",
        "--config",
        "exp.toml",
        "--out",
        "res",
        "--seeds",
        "0,1",
    ];
    let (ok, out, err) = msd(&args, p);
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("21 of 21 rows evaluated"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("res/report.json")).unwrap()).unwrap();
    assert_eq!(j["seeds"], serde_json::json!([0, 1]));
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 21);
    let teacher_params = j["sizes"]["teacher_params"].as_i64().unwrap();
    let small_params = j["sizes"]["small_params"].as_i64().unwrap();
    assert!(small_params < teacher_params);
    for r in rows {
        assert_eq!(r["status"], "done", "{r}");
        for k in [
            "fd",
            "fd_std",
            "kid",
            "precision",
            "recall",
            "class_accuracy",
            "latency_ms_b1",
            "images_per_s",
            "train_seconds",
        ] {
            assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k} in {r}");
        }
        for k in ["name", "students", "size", "stages", "partition", "bundle"] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
        assert!(r["batch_per_student"].as_u64().is_some(), "{r}");
        assert_eq!(r["n"], 16);
        assert!(p.join(r["grid"].as_str().unwrap()).exists(), "{r}");
        let per_seed = r["fd_per_seed"].as_array().unwrap();
        let fd = r["fd"].as_f64().unwrap();
        let mean =
            per_seed.iter().map(|x| x.as_f64().unwrap()).sum::<f64>() / per_seed.len() as f64;
        assert!((fd - mean).abs() < 1e-9, "{r}");
        let params = r["params_per_student"].as_i64().unwrap();
        match r["size"].as_str().unwrap() {
            "teacher" => assert_eq!(per_seed.len(), 1, "{r}"),
            size => {
                assert_eq!(per_seed.len(), 2, "{r}");
                assert!(r["iterations_per_student"].as_u64().unwrap() > 0, "{r}");
                assert!(
                    Path::new(p).join(r["bundle"].as_str().unwrap()).exists(),
                    "{r}"
                );
                if size == "same" {
                    assert_eq!(params, teacher_params, "{r}");
                } else {
                    assert!(params < teacher_params, "{r}");
                }
            }
        }
    }
    let by = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap();
    assert_eq!(
        by("4 smaller students, DM → ADM (no TSM)")["params_per_student"],
        small_params
    );
    assert_eq!(
        by("4 smaller students, TSM → DM → ADM")["stages"],
        serde_json::json!(["tsm", "dm", "adm"])
    );
    assert_eq!(by("K = 2, DM")["students"], 2);
    assert_eq!(by("K = 4, kmeans partition, DM")["partition"], "kmeans");
    assert_eq!(
        by("K = 2, capacity-bound students, TSM → DM → ADM")["size"],
        "capacity"
    );
    // Equal total compute: the single student has twice the iterations.
    assert_eq!(
        by("1 student, DM, 2·N iterations")["iterations_per_student"].as_u64(),
        by("1 student, DM")["iterations_per_student"]
            .as_u64()
            .map(|x| 2 * x)
    );
    // The DM continuation runs DM for the DM and ADM budgets.
    assert_eq!(
        by("1 student, DM continued for the ADM iterations")["iterations_per_student"],
        by("1 student, DM → ADM")["iterations_per_student"]
    );
    // Rows on the same students share one evaluation per seed.
    assert_eq!(
        by("K = 1, DM")["fd_per_seed"],
        by("1 student, DM")["fd_per_seed"]
    );
    let claims = j["claims"].as_array().unwrap();
    assert!(claims.len() >= 8);
    for c in claims {
        // Two seeds: too few for a verdict.
        assert_eq!(c["verdict"], "pending", "{c}");
        assert!(c["ours"].as_str().unwrap().contains("±"), "{c}");
    }
    let md = std::fs::read_to_string(p.join("res/report.md")).unwrap();
    assert!(
        md.contains("Hardware")
            && md.contains("| 4 students, DM → ADM | 4 |")
            && md.contains("## Claims")
            // Every row evaluated (an unevaluated row reads `pending | —`, a claim without
            // figures `pending | pending`); the claims themselves are pending on two seeds.
            && !md.contains("pending | —")
            && !md.contains("| pending | pending |")
            && md.contains("| pending |"),
        "{md}"
    );
    assert!(p.join("res/fd_vs_k.png").exists());
    assert!(p.join("res/fd_vs_iterations.png").exists());
    // Every evaluated row also carries the FD of its samples scored on raw values.
    for r in rows.iter().filter(|r| r["fd"].is_number()) {
        assert!(r["fd_raw"].as_f64().is_some_and(f64::is_finite), "{r}");
    }
    // The regression term's gradient share, per run with a regression term, within [0, 1].
    let shares = j["grad_share"].as_array().unwrap();
    assert!(!shares.is_empty());
    for g in shares {
        assert!(g["regression_weight"].as_f64().unwrap() > 0.0, "{g}");
        let v = g["share"].as_array().unwrap();
        assert!(!v.is_empty(), "{g}");
        assert!(v
            .iter()
            .all(|x| x.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))));
    }
    assert!(p.join("res/grad_share.png").exists());
    assert!(md.contains("share of the generator's gradient"), "{md}");
    // Issue 16: the report names the optimisation preset its rows used.
    assert!(
        md.contains("Optimisation preset of every row (`") && md.contains("(generator: AdamW"),
        "{md}"
    );
    assert!(j["preset"].as_str().is_some_and(|s| !s.is_empty()), "{j}");

    // --report-only trains and evaluates nothing: into a fresh folder, every row is pending.
    let report_only = [
        "experiment",
        "tiny",
        "--config",
        "exp.toml",
        "--out",
        "res-report-only",
        "--report-only",
    ];
    let (ok, out, err) = msd(&report_only, p);
    assert!(ok, "{err}");
    assert!(
        !out.contains("evaluating") && !out.contains("experiment: run"),
        "{out}"
    );
    let empty: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.join("res-report-only/report.json")).unwrap(),
    )
    .unwrap();
    assert!(empty["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "pending"));

    // A second invocation evaluates nothing again and reports the same figures.
    let (ok, out, err) = msd(&args, p);
    assert!(ok, "{err}");
    assert!(!out.contains("evaluating"), "{out}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("res/report.json")).unwrap()).unwrap();
    for (a, b) in rows.iter().zip(again["rows"].as_array().unwrap()) {
        assert_eq!(
            (&a["fd_per_seed"], &a["train_seconds"]),
            (&b["fd_per_seed"], &b["train_seconds"])
        );
    }

    // --retime measures the timings again and touches nothing else.
    let retime: Vec<&str> = args.iter().copied().chain(["--retime"]).collect();
    let (ok, out, err) = msd(&retime, p);
    assert!(ok, "{err}");
    assert!(
        !out.contains("evaluating") && out.contains("21 of 21 rows"),
        "{out}"
    );
    let third: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("res/report.json")).unwrap()).unwrap();
    for (a, b) in rows.iter().zip(third["rows"].as_array().unwrap()) {
        assert_eq!(a["fd"], b["fd"]);
        assert!(b["latency_ms_b1"].as_f64().is_some_and(|x| x > 0.0));
    }

    // A fresh clone has the committed evals/ but no run directories: nothing is trained or
    // evaluated again, and the report keeps every figure.
    std::fs::remove_dir_all(p.join("res/runs")).unwrap();
    let (ok, out, err) = msd(&args, p);
    assert!(ok, "{err}");
    assert!(
        !out.contains("evaluating")
            && !out.contains("experiment: run k2 seed 0 —")
            && out.contains("experiment: run k2 seed 0 is evaluated under this plan")
            && out.contains("21 of 21 rows"),
        "{out}"
    );
    let fourth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("res/report.json")).unwrap()).unwrap();
    for (a, b) in rows.iter().zip(fourth["rows"].as_array().unwrap()) {
        assert_eq!(a["fd_per_seed"], b["fd_per_seed"]);
    }
    // A row made under another plan (here: a tampered plan key) is trained again.
    let row = p.join("res/evals/k2-dm/s0/row.json");
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&row).unwrap()).unwrap();
    let plan_key = r["plan_key"].clone();
    assert!(plan_key.is_string(), "{r}");
    r["plan_key"] = "another plan".into();
    std::fs::write(&row, r.to_string()).unwrap();
    let only_k2 = [
        "experiment",
        "tiny",
        "--config",
        "exp.toml",
        "--out",
        "res",
        "--seeds",
        "0",
        "--only",
        "k2",
    ];
    let (ok, out, err) = msd(&only_k2, p);
    assert!(ok, "{err}");
    assert!(out.contains("experiment: run k2 seed 0 —"), "{out}");
    assert!(p.join("res/runs/k2/s0/partition.json").exists());
    // Trained again, its students have the recorded hashes: the evaluation stands and the row
    // gets today's plan key back.
    assert!(!out.contains("evaluating"), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&row).unwrap()).unwrap();
    assert_eq!(r["plan_key"], plan_key);
    // That call covered seed 0 of one run only: the report it rewrote still covers seeds 0 and 1
    // (it used to keep only the call's seed, dropping seed 1 from every figure).
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("res/report.json")).unwrap()).unwrap();
    assert_eq!(j["seeds"], serde_json::json!([0, 1]));

    // A capacity-only experiment (same_size_rows = false, so no [small_net] needed): the K
    // sweep at twice the budget, one student at N and 2N for its FD against iterations; the
    // sweep's K = 1 is that 2N run.
    let full = experiment_config().replace(
        "equal_compute = [2]",
        "equal_compute = []\nsame_size_rows = false\ncapacity_budgets = [2]\ncapacity_k1_budgets = [1, 2]",
    );
    let (head, tail) = full.split_once("[small_net]").expect("a [small_net] table");
    let cap = format!(
        "{head}{}",
        &tail[tail.find("[capacity_net]").expect("then")..]
    );
    // The config drops c2-x2: a call over every part skips it and the report says `dropped`,
    // with the reason, where it would say `pending`.
    std::fs::write(
        p.join("cap.toml"),
        format!("{cap}\n[dropped]\nc2-x2 = \"too dear for this test\"\n"),
    )
    .unwrap();
    let cap_args = ["experiment", "tiny", "--config", "cap.toml", "--out", "cap"];
    let mut every = cap_args.to_vec();
    every.extend(["--seeds", "0"]);
    let (ok, out, err) = msd(&every, p);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains("4 of 5 rows evaluated (1 dropped by the config)"),
        "{out}"
    );
    assert!(!p.join("cap/runs/c2-x2").exists());
    let md = std::fs::read_to_string(p.join("cap/report.md")).unwrap();
    assert!(md.contains("| c2-x2 | too dear for this test |"), "{md}");
    // Every row records the machine that timed it, and the report says which rows that is.
    let row: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.join("cap/evals/c1-adm/s0/row.json")).unwrap(),
    )
    .unwrap();
    let machine = row["hardware"].as_str().expect("the row's machine");
    assert!(machine.contains("torch threads"), "{machine}");
    assert!(md.contains(&format!("- {machine}: ")), "{md}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("cap/report.json")).unwrap()).unwrap();
    let k2 = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == "c2-x2")
        .expect("the dropped run's row");
    assert_eq!(k2["status"], "dropped");
    // Its iters/student cell counts the TSM steps apart from the generator iterations.
    let cell = format!(
        "| {} + {} TSM |",
        k2["iterations_per_student"], k2["tsm_steps_per_student"]
    );
    assert!(
        k2["tsm_steps_per_student"].as_u64() > Some(0) && md.contains(&cell),
        "{md}"
    );
    assert_eq!(k2["dropped"], "too dear for this test");
    assert_eq!(c["claims"][0]["ours"], "dropped (c2-x2)");
    assert_eq!(c["claims"][0]["dropped"], true);
    // Named with --only, a dropped run is trained; its row then has figures like any other.
    let only = |runs: &'static str| {
        let mut a = cap_args.to_vec();
        a.extend(["--seeds", "0", "--only", runs]);
        a
    };
    let (ok, out, err) = msd(&only("c1,c1-x2,c2-x2"), p);
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("5 of 5 rows evaluated →"), "{out}");
    let md = std::fs::read_to_string(p.join("cap/report.md")).unwrap();
    assert!(!md.contains("## Dropped runs"), "{md}");
    let (ok, _, err) = msd(&only("k2"), p);
    assert!(!ok && err.contains("--only k2"), "{err}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("cap/report.json")).unwrap()).unwrap();
    assert!(c["sizes"]["small_params"].is_null(), "{}", c["sizes"]);
    let crows = c["rows"].as_array().unwrap();
    assert!(crows
        .iter()
        .all(|r| ["teacher", "capacity"].contains(&r["size"].as_str().unwrap())));
    let cby = |name: &str| crows.iter().find(|r| r["name"] == name).unwrap();
    let at_2n = cby("K = 2, capacity-bound students, 2·N iterations each");
    let k1_n = cby("1 capacity-bound student, N iterations");
    assert_eq!(
        at_2n["iterations_per_student"].as_u64(),
        k1_n["iterations_per_student"].as_u64().map(|x| 2 * x)
    );
    assert_eq!(
        cby("K = 1, capacity-bound students, 2·N iterations each")["fd_per_seed"],
        cby("1 capacity-bound student, 2·N iterations")["fd_per_seed"]
    );
    let cclaims = c["claims"].as_array().unwrap();
    assert_eq!(cclaims.len(), 1, "{cclaims:?}");
    assert!(p.join("cap/fd_vs_k.png").exists() && p.join("cap/fd_vs_iterations.png").exists());

    let (ok, _, err) = msd(
        &[
            "experiment",
            "tiny",
            "--config",
            "exp.toml",
            "--out",
            "res",
            "--only",
            "k3",
        ],
        p,
    );
    assert!(
        !ok && err.contains("--only k3") && !err.contains("panicked"),
        "{err}"
    );
}
