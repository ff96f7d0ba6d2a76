//! Shared by the integration tests: a tiny bundle (6 classes, 3 MLP students, contiguous
//! partition, optionally a teacher), a tiny UNet config, a real server on a free loopback port,
//! and the HTTP calls and checks the tests repeat.

#![allow(dead_code)]

use msd::bundle::Bundle;
use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::nets::{MlpConfig, NetConfig};
use msd::partition::Partition;
use msd_serve::metrics::Metrics;
use msd_serve::{ServeConfig, Server};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Tensor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CLASSES: usize = 6;
pub const STUDENTS: usize = 3;
pub const SIGMA_MAX: f64 = 80.0;

/// The tiny teacher's sampler as its bundle records it: 4 Heun steps, guidance 1.25.
pub fn teacher_sampler() -> msd::diffusion::SamplerConfig {
    msd::diffusion::SamplerConfig {
        steps: 4,
        guidance: 1.25,
        ..Default::default()
    }
}

pub fn mlp(seed: i64) -> EdmModel {
    tch::manual_seed(seed);
    EdmModel::new(
        &NetConfig::Mlp(MlpConfig {
            dim: 2,
            num_classes: CLASSES as i64,
            width: 16,
            depth: 1,
            noise_freqs: 4,
            cond: Default::default(),
        }),
        EdmPrecond::default(),
        Device::Cpu,
    )
}

/// Writes the tiny bundle into `dir`; returns the path of `bundle.json`.
pub fn tiny_bundle(dir: &Path, teacher: bool) -> PathBuf {
    tch::set_num_threads(1);
    let p = Partition::contiguous(CLASSES, STUDENTS);
    let dirs: Vec<PathBuf> = (0..STUDENTS)
        .map(|k| {
            let d = dir.join("students").join(k.to_string());
            mlp(10 + k as i64).save_dir(&d).unwrap();
            d
        })
        .collect();
    let t = dir.join("teacher");
    if teacher {
        mlp(99).save_dir(&t).unwrap();
    }
    let path = dir.join("bundle.json");
    let sampler = teacher_sampler();
    let t = teacher.then_some(msd::bundle::TeacherRef {
        dir: &t,
        sampler: &sampler,
    });
    Bundle::assemble(&path, &p, &dirs, t, SIGMA_MAX).unwrap();
    path
}

/// A tiny UNet on 8×8 grey images: `num_classes` classes, conditioned by `cond`.
pub fn tiny_unet(num_classes: i64, cond: msd::nets::Conditioning) -> NetConfig {
    NetConfig::Unet(msd::nets::UNetConfig {
        in_channels: 1,
        resolution: 8,
        num_classes,
        base_channels: 8,
        channel_mult: vec![1, 2],
        blocks_per_level: 1,
        attn_resolutions: vec![],
        heads: 1,
        dropout: 0.0,
        emb_mult: 2,
        noise_freqs: 4,
        cond,
    })
}

/// An image bundle: 3 classes, 2 tiny UNet students on 8×8 grey images.
pub fn unet_bundle(dir: &Path) -> PathBuf {
    tch::set_num_threads(1);
    let cfg = tiny_unet(3, Default::default());
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
    Bundle::assemble(&path, &Partition::contiguous(3, 2), &dirs, None, SIGMA_MAX).unwrap();
    path
}

/// The owner of class c in the tiny bundle.
pub fn owner(c: i64) -> usize {
    Partition::contiguous(CLASSES, STUDENTS).route(c).unwrap()
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub bundle_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(cfg: ServeConfig, teacher: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = tiny_bundle(dir.path(), teacher);
        Self::start_bundle(cfg, dir, path).await
    }

    /// Serves the bundle at `path` (inside `dir`, which the server keeps alive).
    pub async fn start_bundle(cfg: ServeConfig, dir: tempfile::TempDir, path: PathBuf) -> Self {
        let bundle = Bundle::load(&path, Device::Cpu).unwrap();
        Self::serve(Server::new(bundle, cfg).unwrap(), dir, path).await
    }

    /// Runs `server` (made from the bundle at `path`, inside `dir`).
    pub async fn serve(server: Server, dir: tempfile::TempDir, path: PathBuf) -> Self {
        let metrics = server.metrics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics,
            bundle_path: path,
            stop: Some(stop),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the graceful shutdown (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        client()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path`; the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        let r = client().get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// GETs `path`; the body as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = client().get(self.url(path)).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// A second copy of the bundle's models, to compute expected outputs directly.
    pub fn reference(&self) -> Bundle {
        Bundle::load(&self.bundle_path, Device::Cpu).unwrap()
    }
}

/// Reads an `.npy` body into a tensor.
pub fn read_npy(bytes: &[u8]) -> Tensor {
    let f = tempfile::Builder::new().suffix(".npy").tempfile().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    Tensor::read_npy(f.path()).unwrap()
}

/// What the bundle should answer for `labels` with the request's seed: noise from the seed,
/// each row through its owner.
pub fn expected(b: &Bundle, labels: &[i64], seed: u64) -> Tensor {
    let z = msd_serve::noise::noise(labels.len(), &[2], seed);
    let z = Tensor::from_slice(&z).view([labels.len() as i64, 2]);
    tch::no_grad(|| b.generate(labels, &z).unwrap().0)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response header as text (empty when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Checks a 503 of a full queue of student 0: `Retry-After: 1` and the JSON error naming it.
pub fn assert_busy(retry: &str, body: &[u8]) {
    assert_eq!(retry, "1");
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["error"]["code"], "queue_full");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("student 0"));
}
