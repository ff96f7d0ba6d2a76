//! The bad-input corpus as a table: every case drives the `msd` binary (or a running `msd serve`)
//! with one bad number, file or request, and asserts a non-zero exit (or the HTTP status), one
//! `error:` line that names the culprit, and no `panicked at`. Tiny fixtures; runs in seconds.

use msd::bundle::Bundle;
use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::nets::{MlpConfig, NetConfig};
use msd::partition::Partition;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn msd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err)
}

fn mlp(classes: i64, seed: i64) -> EdmModel {
    tch::manual_seed(seed);
    EdmModel::new(
        &NetConfig::Mlp(MlpConfig {
            dim: 2,
            num_classes: classes,
            width: 8,
            depth: 1,
            noise_freqs: 4,
            cond: Default::default(),
        }),
        EdmPrecond::default(),
        tch::Device::Cpu,
    )
}

/// A valid 2-student bundle over 4 classes in `dir/name`; returns the bundle path.
fn bundle(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    let dirs: Vec<PathBuf> = (0..2)
        .map(|k| {
            let d = root.join(format!("s{k}"));
            mlp(4, k).save_dir(&d).unwrap();
            d
        })
        .collect();
    let path = root.join("bundle.json");
    Bundle::assemble(&path, &Partition::contiguous(4, 2), &dirs, None, 80.0).unwrap();
    path
}

/// Rewrites a bundle's JSON with `edit`.
fn edit_bundle(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    msd::data::idx::encode_labels(labels)
}

/// The bad inputs and what their one error line must name.
struct Fixtures {
    _dir: tempfile::TempDir,
    cases: Vec<(String, Vec<String>, &'static str)>,
    /// A run directory the test holds locked while the cases run.
    busy: PathBuf,
}

/// A tiny toy run config (2 teacher steps, 2 DM iterations), with `edit` applied to its text.
const TINY: &str = "seed = 0\n[data]\nkind = \"toy2d\"\n[model.net]\nkind = \"mlp\"\ndim = 2\nnum_classes = 8\nwidth = 16\ndepth = 1\n[teacher]\nsteps = 2\nbatch_size = 8\ncheckpoint_every = 2\n[sampler]\nsteps = 4\n[distill]\nstudents = 4\niterations = 2\nbatch_size = 8\nttur = 1\nregression_pairs_per_class = 4\nregression_batch = 4\ncheckpoint_every = 2\nkmeans_samples_per_class = 4\n";

/// `TINY` with `from` replaced by `to` (or `to` appended when `from` is empty), written to `path`.
fn tiny_config(path: &Path, from: &str, to: &str) -> PathBuf {
    let text = if from.is_empty() {
        format!("{TINY}{to}\n")
    } else {
        assert!(TINY.contains(from), "{from}");
        TINY.replacen(from, to, 1)
    };
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn fixtures() -> Fixtures {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let good = bundle(d, "good");
    let teacher = d.join("good").join("s0");
    let png = p(&d.join("x.png"));
    // sigma_max out of range.
    let huge = bundle(d, "huge");
    edit_bundle(&huge, |v| v["sigma_max"] = serde_json::json!(1e308));
    let negative = bundle(d, "negative");
    edit_bundle(&negative, |v| v["sigma_max"] = serde_json::json!(-1.0));
    // Two students on the same weights.
    let same = bundle(d, "same");
    edit_bundle(&same, |v| {
        v["students"][1]["dir"] = v["students"][0]["dir"].clone()
    });
    // A partition over 6 classes for 4-class students.
    let wide = bundle(d, "wide");
    edit_bundle(&wide, |v| {
        let p = Partition::contiguous(6, 2);
        v["partition"] = serde_json::to_value(&p).unwrap();
        v["students"][0]["classes"] = serde_json::json!(p.classes_of(0));
        v["students"][1]["classes"] = serde_json::json!(p.classes_of(1));
    });
    // NaN weights.
    let nan = bundle(d, "nan");
    {
        let s1 = d.join("nan").join("s1");
        let mut m = EdmModel::load_dir(&s1, tch::Device::Cpu).unwrap();
        tch::no_grad(|| {
            for (_, mut t) in m.vs.variables() {
                let _ = t.fill_(f64::NAN);
            }
        });
        m.vs.unfreeze();
        m.save_dir(&s1).unwrap();
    }
    // IDX files: a stray label, a gzip bomb, a huge pad.
    let images = d.join("images.idx");
    std::fs::write(&images, msd::data::idx::encode_images(3, 4, 4, &[0u8; 48])).unwrap();
    let stray = d.join("stray.idx");
    std::fs::write(&stray, idx_labels(&[0, 1, 200])).unwrap();
    let labels = d.join("labels.idx");
    std::fs::write(&labels, idx_labels(&[0, 1, 1])).unwrap();
    let bomb = d.join("bomb.gz");
    {
        let mut body = msd::data::idx::encode_images(3, 4, 4, &[0u8; 48]);
        body.resize(body.len() + (32 << 20), 0);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        std::fs::write(&bomb, e.finish().unwrap()).unwrap();
    }
    let folder = d.join("folder");
    std::fs::create_dir_all(folder.join("a")).unwrap();
    image::GrayImage::new(4, 4)
        .save(folder.join("a").join("0.png"))
        .unwrap();
    let clf = p(&d.join("clf"));
    let idx = |i: &Path, l: &Path, extra: &str| format!("idx:{},{}{extra}", p(i), p(l));

    let b = p(&good);
    let t = p(&teacher);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut cases: Vec<(String, Vec<String>, &'static str)> = vec![
        (
            "threads 0".into(),
            s(&["--threads", "0", "serve", "--bundle", &b]),
            "--threads",
        ),
        (
            "threads 1e6".into(),
            s(&["--threads", "1000000", "serve", "--bundle", &b]),
            "--threads",
        ),
        (
            "max-wait-ms 2^64-1".into(),
            s(&[
                "serve",
                "--bundle",
                &b,
                "--max-wait-ms",
                "18446744073709551615",
            ]),
            "--max-wait-ms",
        ),
        (
            "max-wait-ms -1".into(),
            s(&["serve", "--bundle", &b, "--max-wait-ms", "-1"]),
            "--max-wait-ms",
        ),
        (
            "max-wait-ms NaN".into(),
            s(&["serve", "--bundle", &b, "--max-wait-ms", "NaN"]),
            "--max-wait-ms",
        ),
        (
            "max-queue-ms 0".into(),
            s(&["serve", "--bundle", &b, "--max-queue-ms", "0"]),
            "--max-queue-ms",
        ),
        (
            "read-timeout-s 0".into(),
            s(&["serve", "--bundle", &b, "--read-timeout-s", "0"]),
            "--read-timeout-s",
        ),
        (
            "max-batch 0".into(),
            s(&["serve", "--bundle", &b, "--max-batch", "0"]),
            "--max-batch",
        ),
        (
            "eval-chunk 0".into(),
            s(&["serve", "--bundle", &b, "--eval-chunk", "0"]),
            "--eval-chunk",
        ),
        (
            "max-n 2^40".into(),
            s(&["serve", "--bundle", &b, "--max-n", "1099511627776"]),
            "--max-n",
        ),
        (
            "max-connections 0".into(),
            s(&["serve", "--bundle", &b, "--max-connections", "0"]),
            "--max-connections",
        ),
        (
            "serve-bench clients 0".into(),
            s(&["serve-bench", "--bundle", &b, "--load", "--clients", "0"]),
            "--clients",
        ),
        (
            "sample n -5".into(),
            s(&["sample", "--bundle", &b, "--n", "-5", "--out", &png]),
            "--n",
        ),
        (
            "sample class -1".into(),
            s(&["sample", "--bundle", &b, "--class", "-1", "--out", &png]),
            "-1",
        ),
        (
            "sample seed -1".into(),
            s(&["sample", "--bundle", &b, "--seed", "-1", "--out", &png]),
            "--seed",
        ),
        (
            "sample guidance NaN".into(),
            s(&[
                "sample",
                "--teacher",
                &t,
                "--guidance",
                "NaN",
                "--out",
                &png,
            ]),
            "--guidance",
        ),
        (
            "sample guidance inf".into(),
            s(&[
                "sample",
                "--teacher",
                &t,
                "--guidance",
                "inf",
                "--out",
                &png,
            ]),
            "--guidance",
        ),
        (
            "sample churn -inf".into(),
            s(&["sample", "--teacher", &t, "--churn=-inf", "--out", &png]),
            "--churn",
        ),
        (
            "eval batch 0".into(),
            s(&["eval", "--teacher", &t, "--batch", "0"]),
            "--batch",
        ),
        (
            "eval guidance NaN".into(),
            s(&["eval", "--teacher", &t, "--guidance", "NaN"]),
            "--guidance",
        ),
        (
            "bundle sigma_max 1e308".into(),
            s(&["sample", "--bundle", &p(&huge), "--out", &png]),
            // In short form, not 309 digits.
            "sigma_max must be a finite number in (0, 1000], got 1e308",
        ),
        (
            "bundle sigma_max -1".into(),
            s(&["serve", "--bundle", &p(&negative)]),
            "sigma_max",
        ),
        (
            "bundle same weights".into(),
            s(&["serve", "--bundle", &p(&same)]),
            "same weights",
        ),
        (
            "bundle partition wider than students".into(),
            s(&["serve", "--bundle", &p(&wide)]),
            "6 conditions",
        ),
        (
            "bundle NaN weights".into(),
            s(&["sample", "--bundle", &p(&nan), "--out", &png]),
            "NaN",
        ),
        (
            "idx label 200".into(),
            s(&[
                "train-classifier",
                "--data",
                &idx(&images, &stray, ""),
                "--out",
                &clf,
            ]),
            "label 200",
        ),
        (
            "idx gzip bomb".into(),
            s(&[
                "train-classifier",
                "--data",
                &idx(&bomb, &labels, ""),
                "--out",
                &clf,
            ]),
            "trailing",
        ),
        (
            "idx pad 100000".into(),
            s(&[
                "train-classifier",
                "--data",
                &idx(&images, &labels, ",heldout=1,pad=100000"),
                "--out",
                &clf,
            ]),
            "data.pad",
        ),
        (
            "folder size 100000".into(),
            s(&[
                "train-classifier",
                "--data",
                &format!("folder:{},size=100000", p(&folder)),
                "--out",
                &clf,
            ]),
            "data.size",
        ),
    ];
    // Out-of-range config fields: each refused at load, naming the field, before any work.
    let configs: [(&str, &str, &str, &'static str); 13] = [
        (
            "batch_size 1e12",
            "batch_size = 8",
            "batch_size = 1000000000000",
            "teacher.batch_size",
        ),
        (
            "width 1e12",
            "width = 16",
            "width = 1000000000000",
            "net.width",
        ),
        (
            "regression_pairs_per_class 1e12",
            "regression_pairs_per_class = 4",
            "regression_pairs_per_class = 1000000000000",
            "distill.regression_pairs_per_class",
        ),
        ("toy dim 3", "dim = 2", "dim = 3", "model.net"),
        (
            "sigma_data 0",
            "",
            "[model.precond]\nsigma_data = 0.0",
            "sigma_data",
        ),
        (
            "sigma_data -1",
            "",
            "[model.precond]\nsigma_data = -1.0",
            "sigma_data",
        ),
        (
            "lr -1",
            "",
            "[teacher.optimizer]\nlr = -1.0",
            "teacher.optimizer.lr",
        ),
        (
            "ema_decay 2",
            "checkpoint_every = 2\n[sampler]",
            "checkpoint_every = 2\nema_decay = 2.0\n[sampler]",
            "teacher.ema_decay",
        ),
        (
            "ema_decay -3",
            "checkpoint_every = 2\n[sampler]",
            "checkpoint_every = 2\nema_decay = -3.0\n[sampler]",
            "teacher.ema_decay",
        ),
        (
            "distill ema_decay 2",
            "ttur = 1",
            "ttur = 1\nema_decay = 2.0",
            "distill.ema_decay",
        ),
        (
            "regression_weight -1",
            "ttur = 1",
            "ttur = 1\nregression_weight = -1.0",
            "distill.regression_weight",
        ),
        (
            "sampler.steps 0",
            "[sampler]\nsteps = 4",
            "[sampler]\nsteps = 0",
            "sampler.steps",
        ),
        (
            "distill lr NaN",
            "",
            "[distill.fake_optimizer]\nlr = nan",
            "distill.fake_optimizer.lr",
        ),
    ];
    for (i, (what, from, to, needle)) in configs.into_iter().enumerate() {
        let c = tiny_config(&d.join(format!("bad{i}.toml")), from, to);
        let out = d.join(format!("bad-run{i}"));
        cases.push((
            format!("config {what}"),
            s(&["train-teacher", "--config", &p(&c), "--out", &p(&out)]),
            needle,
        ));
    }
    cases.push((
        "sample n 1e12".into(),
        s(&[
            "sample",
            "--teacher",
            &t,
            "--n",
            "1000000000000",
            "--out",
            &png,
        ]),
        "--n 1000000000000",
    ));
    let existing = d.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    cases.push((
        "sample --out an existing directory".into(),
        s(&["sample", "--teacher", &t, "--out", &p(&existing)]),
        "is a directory",
    ));
    cases.push((
        "sample --out without a picture extension".into(),
        s(&["sample", "--teacher", &t, "--out", &p(&d.join("noext"))]),
        "--out",
    ));
    // A run directory in use (held exclusively by the test): every writer refuses it.
    let busy = d.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let cfg = tiny_config(&busy.join("config.toml"), "", "");
    for (what, args) in [
        (
            "train-teacher",
            vec!["train-teacher", "--config", &p(&cfg), "--out", &p(&busy)],
        ),
        (
            "import-teacher",
            vec![
                "import-teacher",
                "--config",
                &p(&cfg),
                "--out",
                &p(&busy),
                "--teacher",
                &t,
            ],
        ),
        ("distill", vec!["distill", "--run", &p(&busy)]),
        ("partition", vec!["partition", "--run", &p(&busy)]),
        ("bundle", vec!["bundle", "--run", &p(&busy)]),
    ] {
        cases.push((format!("{what} on a locked run"), s(&args), "in use"));
    }
    Fixtures {
        _dir: dir,
        cases,
        busy,
    }
}

#[test]
fn every_bad_input_is_one_clear_error_line() {
    tch::set_num_threads(1);
    let f = fixtures();
    // Held for the locked-directory cases.
    let _lock = msd::train::lock::RunLock::acquire(&f.busy).unwrap();
    let mut failures = Vec::new();
    for (what, args, needle) in &f.cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = msd(&argv);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        let ok = code.is_some_and(|c| c != 0)
            && !err.contains("panicked at")
            && errors.len() == 1
            && errors[0].contains(needle);
        if !ok {
            failures.push(format!(
                "{what}: exit {code:?}, wanted one error line naming `{needle}`, got:\n{err}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        f.cases.len(),
        failures.join("\n")
    );
}

/// Sends raw bytes and reads until the server closes the connection (30 s guard).
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(addr: &str, body: &str) -> String {
    raw(
        addr,
        format!(
            "POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn bad_http_requests_get_clear_answers_and_the_server_stays_up() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), "b");
    let mut child = Command::new(env!("CARGO_BIN_EXE_msd"))
        .args([
            "--threads",
            "1",
            "serve",
            "--bundle",
            b.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
            "--read-timeout-s",
            "0.5",
            "--body-limit",
            "1024",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown class", post(&addr, r#"{"class": 99}"#), "HTTP/1.1 422"),
        ("negative class", post(&addr, r#"{"class": -1}"#), "HTTP/1.1 422"),
        ("n = 1e12", post(&addr, r#"{"class": 1, "n": 1000000000000}"#), "HTTP/1.1 422"),
        ("n float", post(&addr, r#"{"class": 1, "n": 1e3}"#), "HTTP/1.1 400"),
        ("seed -1", post(&addr, r#"{"class": 1, "seed": -1}"#), "HTTP/1.1 400"),
        ("truncated JSON", post(&addr, r#"{"class": "#), "HTTP/1.1 400"),
        (
            "declared 100 MB body, 11 bytes sent",
            raw(&addr, b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n{\"class\": 1"),
            "HTTP/1.1 413",
        ),
        (
            "body that stops short",
            raw(&addr, b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{\"class\": 1"),
            "HTTP/1.1 408",
        ),
        (
            "headers never finished",
            raw(&addr, b"POST /v1/generate HTTP/1.1\r\nhost: x\r\n"),
            "",
        ),
    ];
    let ok = post(&addr, r#"{"class": 3, "n": 2, "format": "npy"}"#);
    let _ = msd_serve_stop(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    for (what, resp, want) in &cases {
        assert!(resp.starts_with(want), "{what}: {resp}");
        if want.is_empty() {
            assert!(!resp.contains("HTTP/1.1 200"), "{what}: {resp}");
        }
    }
    assert!(ok.starts_with("HTTP/1.1 200"), "still serving: {ok}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
}

fn msd_serve_stop(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    child.wait()
}

/// The "other" class of the corpus, on a tiny real run: a killed teacher's debris (a temp file,
/// a missing preview, no final files) is cleaned and redone on resume; `msd partition --students
/// 2` followed by `msd distill --student 0` (the documented flow) trains that student; a diverging
/// learning rate names its suspects.
#[test]
fn resume_cleans_kill_debris_and_the_partition_flow_works() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let run = d.join("run");
    let cfg = tiny_config(&d.join("tiny.toml"), "", "");
    let teach = || msd(&["train-teacher", "--config", &p(&cfg), "--out", &p(&run)]);
    let (code, err) = teach();
    assert_eq!(code, Some(0), "{err}");
    let teacher = run.join("teacher");
    let preview = teacher.join("samples").join("step-0000002.png");
    assert!(preview.exists());
    // What a kill -9 after the last checkpoint leaves: no final files, no preview, a temp file.
    let tmp = teacher
        .join("checkpoints")
        .join("model.safetensors.999999.tmp");
    std::fs::write(&tmp, b"partial").unwrap();
    for f in [&preview, &teacher.join("train.json")] {
        std::fs::remove_file(f).unwrap();
    }
    let (code, err) = teach();
    assert_eq!(code, Some(0), "{err}");
    assert!(preview.exists(), "the missing preview is redone on resume");
    assert!(!tmp.exists(), "kill debris is removed on resume");
    assert!(!err.contains("panicked at"), "{err}");

    // The documented flow: repartition for 2 students, then train student 0.
    let (code, err) = msd(&["partition", "--run", &p(&run), "--students", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = msd(&["distill", "--run", &p(&run), "--student", "0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(run
        .join("students")
        .join("0")
        .join("dm")
        .join("model.safetensors")
        .exists());
    let (code, err) = msd(&["distill", "--run", &p(&run), "--student", "2"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--student 2"), "{err}");

    // A learning rate that makes the loss blow up: the error names the suspect.
    let hot = tiny_config(
        &d.join("hot.toml"),
        "checkpoint_every = 2\n[sampler]",
        "checkpoint_every = 2\n[teacher.optimizer]\nlr = 1e30\n[sampler]",
    );
    let (code, err) = msd(&[
        "train-teacher",
        "--config",
        &p(&hot),
        "--out",
        &p(&d.join("hot")),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not finite") && err.contains("`lr`"), "{err}");
    assert!(!err.contains("panicked at"), "{err}");
}
