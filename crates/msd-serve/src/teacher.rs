//! The teacher comparison: the bundle's teacher (when it references one) on its own thread and
//! bounded queue, sampling with the teacher's own sampler settings as the bundle records them
//! (e.g. Heun-18 with classifier-free guidance 1.25; `msd::diffusion::sample` applies the
//! guidance) from the same seeded noise as the students. One request at a time.

use crate::metrics::Metrics;
use msd::diffusion::{sample, SamplerConfig};
use msd::model::EdmModel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

/// A teacher request: labels, flattened noise, where to answer.
struct TeacherJob {
    labels: Vec<i64>,
    z: Vec<f32>,
    reply: oneshot::Sender<Result<(Vec<f32>, Duration), String>>,
}

/// The teacher's queue and thread.
pub struct Teacher {
    tx: Option<SyncSender<TeacherJob>>,
    thread: Option<JoinHandle<()>>,
    /// Network evaluations per sample (per guidance branch).
    pub nfe: usize,
    /// The sampler used, guidance included.
    pub sampler: SamplerConfig,
}

/// Why a teacher request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    #[error("the teacher is busy; retry later")]
    Busy,
    #[error("the server is shutting down")]
    Closed,
    #[error("teacher sampling failed: {0}")]
    Failed(String),
}

impl Teacher {
    /// Starts the teacher thread sampling with `sampler`; the model must produce samples of
    /// `sample_shape`.
    pub fn spawn(
        model: EdmModel,
        sampler: SamplerConfig,
        queue_cap: usize,
        sample_shape: Vec<i64>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let cfg = sampler.clone();
        let nfe = cfg.nfe();
        let (tx, rx) = sync_channel::<TeacherJob>(queue_cap);
        let thread = std::thread::Builder::new()
            .name("msd-teacher".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    if job.reply.is_closed() {
                        continue;
                    }
                    let t0 = Instant::now();
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        run(&model, &cfg, &sample_shape, &job.labels, &job.z)
                    }))
                    .unwrap_or_else(|_| Err("the teacher's sampler panicked".into()));
                    let dt = t0.elapsed();
                    metrics.teacher_seconds.observe(dt.as_secs_f64());
                    let _ = job.reply.send(r.map(|x| (x, dt)));
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            nfe,
            sampler,
        })
    }

    /// Samples one output per label from the flattened noise `z`; returns them and the time.
    pub async fn generate(
        &self,
        labels: Vec<i64>,
        z: Vec<f32>,
    ) -> Result<(Vec<f32>, Duration), TeacherError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(TeacherError::Closed)?;
        match tx.try_send(TeacherJob { labels, z, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(TeacherError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(TeacherError::Closed),
        }
        rx.await
            .map_err(|_| TeacherError::Closed)?
            .map_err(TeacherError::Failed)
    }
}

fn run(
    model: &EdmModel,
    cfg: &SamplerConfig,
    shape: &[i64],
    labels: &[i64],
    z: &[f32],
) -> Result<Vec<f32>, String> {
    let device = model.device();
    let mut full = vec![labels.len() as i64];
    full.extend(shape);
    let zt = Tensor::from_slice(z)
        .view(full.as_slice())
        .to_device(device);
    let lt = Tensor::from_slice(labels).to_device(device);
    let x = sample(model, &zt, &lt, cfg)
        .map_err(|e| e.to_string())?
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view(-1);
    Vec::<f32>::try_from(&x).map_err(|e| e.to_string())
}

impl Drop for Teacher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
