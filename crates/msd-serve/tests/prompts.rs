//! The prompt route on a real server: a prompt-conditional bundle (2 tiny UNet students taking
//! 384-d embeddings, a 2-quadrant partition of a few caption embeddings) answers
//! `POST /v1/generate {"prompt": ...}` for prompts it never saw (including non-ASCII) with the
//! student the partition assigns in `x-msd-students`, deterministically per seed; an empty prompt
//! is a 422, a 10 kB prompt a 413, class requests a 422; a server without the encoder refuses
//! to start; prompt requests go through the batchers (a full queue answers 503 + Retry-After).
//! Needs the all-MiniLM-L6-v2 folder (`scripts/setup-text-encoder.sh`).

mod common;

use common::{header, tiny_unet, TestServer};
use msd::bundle::Bundle;
use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::nets::text_encoder::{default_model_dir, TextEncoder};
use msd::nets::Conditioning;
use msd::partition::{Partition, Strategy};
use msd::text::prompt::embed_prompt;
use msd_serve::{ServeConfig, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::Device;

fn encoder() -> TextEncoder {
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
    TextEncoder::load(&dir, Device::Cpu).expect("the text encoder loads")
}

const TRAIN: [&str; 8] = [
    "a bold seven leaning right, large",
    "a thin seven, upright, small",
    "handwritten 1, thin strokes, upright, small",
    "handwritten 1, thick strokes, leaning left, large",
    "a bold zero leaning right, large",
    "a thin zero, upright, small",
    "handwritten 4, thin strokes, leaning right, medium",
    "a medium-thick four, upright, large",
];

/// A prompt bundle in `dir`; returns its path.
fn prompt_bundle(dir: &Path, enc: &TextEncoder) -> PathBuf {
    tch::set_num_threads(1);
    let points: Vec<Vec<f32>> = TRAIN
        .iter()
        .map(|t| embed_prompt(enc, t, "prompt").unwrap())
        .collect();
    let p = Partition::of_prompts(Strategy::Quadrants, &points, 2, 0).unwrap();
    let cfg = tiny_unet(10, Conditioning::Embedding { dim: 384 });
    let dirs: Vec<PathBuf> = (0..2)
        .map(|k| {
            tch::manual_seed(k);
            let m = EdmModel::new(&cfg, EdmPrecond::default(), Device::Cpu);
            // A fresh UNet outputs F = 0; perturb the output layer so students differ.
            tch::no_grad(|| {
                for (name, mut v) in m.vs.variables() {
                    if name.starts_with("conv_out") {
                        v.copy_(&(v.randn_like() * 0.1));
                    }
                }
            });
            let d = dir.join("students").join(k.to_string());
            m.save_dir(&d).unwrap();
            d
        })
        .collect();
    let path = dir.join("bundle.json");
    Bundle::assemble(&path, &p, &dirs, None, 80.0).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_are_routed_by_embedding_and_bad_prompts_get_clear_errors() {
    let enc = encoder();
    let dir = tempfile::tempdir().unwrap();
    let path = prompt_bundle(dir.path(), &enc);
    let reference = Bundle::load(&path, Device::Cpu).unwrap();
    let cfg = ServeConfig {
        max_n: 16,
        ..Default::default()
    };
    // Without the encoder the server does not start, and says why.
    let e = Server::new(Bundle::load(&path, Device::Cpu).unwrap(), cfg.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("text encoder"), "{e}");
    let server = Server::with_encoder(
        Bundle::load(&path, Device::Cpu).unwrap(),
        cfg,
        Some(encoder()),
    )
    .unwrap();
    let mut s = TestServer::serve(server, dir, path).await;
    let post = |body: Value| s.post("/v1/generate", body);

    let unseen = [
        "a thin eight",
        "eight, drawn with heavy strokes and tilted to the left",
        "une grosse huit penchée ✓ — 八",
    ];
    for p in unseen {
        let want = reference
            .route_prompt(&embed_prompt(&enc, p, "prompt").unwrap())
            .unwrap();
        let body = json!({"prompt": p, "n": 3, "seed": 5, "format": "npy"});
        let r = post(body.clone()).await;
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(header(&r, "x-msd-students"), want.to_string(), "{p}");
        assert_eq!(header(&r, "x-msd-samples"), "3");
        let a = r.bytes().await.unwrap();
        let b = post(body).await.bytes().await.unwrap();
        assert_eq!(a, b, "same prompt and seed, same bytes");
    }
    let png = post(json!({"prompt": "a small one", "n": 2})).await;
    assert_eq!(png.status(), 200);
    assert_eq!(header(&png, "content-type"), "image/png");

    let cases = [
        (json!({"prompt": ""}), 422, "empty_prompt"),
        (json!({"prompt": " \n "}), 422, "empty_prompt"),
        (
            json!({"prompt": "x".repeat(10_000)}),
            413,
            "prompt_too_large",
        ),
        (json!({"prompt": "a one", "n": 0}), 422, "n_out_of_range"),
        (json!({"prompt": "a one", "n": 17}), 422, "n_above_limit"),
        (json!({"prompt": 7}), 400, "malformed_json"),
        (json!({"class": 1, "n": 1}), 400, "malformed_json"),
    ];
    for (body, status, code) in cases {
        let r = post(body.clone()).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // No teacher comparison for prompts: the bundle description and the route both say why.
    let info = s.get_json("/v1/bundle").await;
    assert_eq!(info["teacher"]["available"], false, "{info}");
    let why = info["teacher"]["reason"].as_str().unwrap().to_string();
    assert!(why.contains("msd sample --prompt"), "{why}");
    let r = s.post("/v1/teacher", json!({"prompt": "a one"})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["message"].as_str()),
        (Some("no_teacher"), Some(why.as_str()))
    );
    s.shutdown();
    s.handle.take().unwrap().await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_requests_share_the_batchers_admission_control() {
    let enc = encoder();
    let dir = tempfile::tempdir().unwrap();
    let path = prompt_bundle(dir.path(), &enc);
    // One request at a time, each held 300 ms: concurrent prompts for one student overflow.
    let cfg = ServeConfig {
        max_batch: 1,
        max_wait: std::time::Duration::ZERO,
        queue_cap: 1,
        batch_delay: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let server =
        Server::with_encoder(Bundle::load(&path, Device::Cpu).unwrap(), cfg, Some(enc)).unwrap();
    let s = TestServer::serve(server, dir, path).await;
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 0..6 {
        let (c, url) = (common::client(), s.url("/v1/generate"));
        tasks.spawn(async move {
            let body = json!({"prompt": "a thin eight", "seed": seed, "format": "npy"});
            let r = c.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), header(&r, "retry-after"))
        });
    }
    let (mut ok, mut busy) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (200, _) => ok += 1,
            (503, retry) => {
                busy += 1;
                assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "{retry}");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} answered, {busy} refused");
}
