//! One batcher per student: a bounded queue of jobs and a dedicated thread that owns the
//! student's model. The thread takes the first waiting job, then keeps packing jobs until the
//! batch holds `max_batch` samples or `max_wait` has passed, evaluates the batch with one network
//! call per `max_batch` samples (`tch::no_grad`), and hands every job its own rows. A batch
//! never mixes students because each queue belongs to one student. A full queue refuses new jobs
//! at once (the server answers 503) instead of growing.

use crate::metrics::Metrics;
use msd::model::EdmModel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

/// A request's share of work for one student: its labels and noise rows, and where to answer.
pub struct Job {
    /// One class per sample.
    pub labels: Vec<i64>,
    /// Noise, `labels.len()` samples of the student's sample shape, flattened.
    pub z: Vec<f32>,
    /// Receives the samples (same layout as `z`) or a message saying why evaluation failed.
    pub reply: oneshot::Sender<Result<JobOutput, String>>,
    /// When the job entered the queue.
    pub enqueued: Instant,
}

/// The result of one job.
#[derive(Debug)]
pub struct JobOutput {
    /// Samples, flattened like the job's noise.
    pub x: Vec<f32>,
    /// Time of the network evaluation(s) of the batch the job rode in.
    pub generate: Duration,
    /// Samples in that batch (all jobs together).
    pub batch_rows: usize,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds `queue_cap` jobs already.
    Full,
    /// The batcher has stopped (the server is shutting down).
    Closed,
}

/// Settings shared by all batchers of a server.
#[derive(Clone, Debug)]
pub struct BatchSettings {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue_cap: usize,
    pub delay: Duration,
    pub sigma_max: f64,
    pub sample_shape: Vec<i64>,
}

/// The sending side of a student's queue.
pub struct Batcher {
    id: usize,
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the batcher thread of student `id`, which owns `model`.
    pub fn spawn(
        id: usize,
        model: EdmModel,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(settings.queue_cap);
        let m = metrics.clone();
        let handle = std::thread::Builder::new()
            .name(format!("msd-student-{id}"))
            .spawn(move || worker(id, model, settings, rx, m))?;
        Ok((Self { id, tx, metrics }, handle))
    }

    /// Queues a job without waiting; refuses it when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let label = self.id.to_string();
        let depth = self
            .metrics
            .queue_depth
            .with_label_values(&[label.as_str()]);
        depth.inc();
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                depth.dec();
                self.metrics
                    .queue_full
                    .with_label_values(&[label.as_str()])
                    .inc();
                Err(SubmitError::Full)
            }
            Err(TrySendError::Disconnected(_)) => {
                depth.dec();
                Err(SubmitError::Closed)
            }
        }
    }
}

/// Collects the next batch: the first job (blocking), then more until full or `max_wait` is up.
/// A job that would overflow the batch is carried to the next one. `None` when the queue closed.
fn next_batch(
    rx: &Receiver<Job>,
    carry: &mut Option<Job>,
    s: &BatchSettings,
    on_dequeue: &dyn Fn(),
) -> Option<Vec<Job>> {
    let first = match carry.take() {
        Some(j) => j,
        None => {
            let j = rx.recv().ok()?;
            on_dequeue();
            j
        }
    };
    let mut rows = first.labels.len();
    let mut jobs = vec![first];
    let deadline = Instant::now() + s.max_wait;
    while rows < s.max_batch {
        let now = Instant::now();
        let next = if now >= deadline {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(deadline - now).ok()
        };
        let Some(j) = next else { break };
        on_dequeue();
        if rows + j.labels.len() > s.max_batch {
            *carry = Some(j);
            break;
        }
        rows += j.labels.len();
        jobs.push(j);
    }
    Some(jobs)
}

fn worker(id: usize, model: EdmModel, s: BatchSettings, rx: Receiver<Job>, metrics: Arc<Metrics>) {
    let label = id.to_string();
    let l = [label.as_str()];
    let depth = metrics.queue_depth.with_label_values(&l);
    let on_dequeue = || depth.dec();
    let mut carry = None;
    while let Some(mut jobs) = next_batch(&rx, &mut carry, &s, &on_dequeue) {
        // Clients that went away need no samples.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        if !s.delay.is_zero() {
            std::thread::sleep(s.delay);
        }
        let labels: Vec<i64> = jobs.iter().flat_map(|j| j.labels.iter().copied()).collect();
        let z: Vec<f32> = jobs.iter().flat_map(|j| j.z.iter().copied()).collect();
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            evaluate(&model, &s, &labels, &z, |rows, secs| {
                metrics
                    .batch_size
                    .with_label_values(&l)
                    .observe(rows as f64);
                metrics.generate_seconds.with_label_values(&l).observe(secs);
            })
        }))
        .unwrap_or_else(|_| Err(format!("student {id}: the network evaluation panicked")));
        let generate = t0.elapsed();
        match result {
            Ok(x) => {
                metrics
                    .samples
                    .with_label_values(&l)
                    .inc_by(labels.len() as u64);
                let per = if labels.is_empty() {
                    0
                } else {
                    z.len() / labels.len()
                };
                let mut off = 0;
                for j in jobs {
                    let len = j.labels.len() * per;
                    let out = JobOutput {
                        x: x[off..off + len].to_vec(),
                        generate,
                        batch_rows: labels.len(),
                    };
                    off += len;
                    metrics
                        .student_latency
                        .with_label_values(&l)
                        .observe(j.enqueued.elapsed().as_secs_f64());
                    let _ = j.reply.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                for j in jobs {
                    let _ = j.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One-step generation of `labels.len()` samples from `z`, in chunks of at most `max_batch`
/// samples; calls `observe(rows, seconds)` per network evaluation.
fn evaluate(
    model: &EdmModel,
    s: &BatchSettings,
    labels: &[i64],
    z: &[f32],
    observe: impl Fn(usize, f64),
) -> Result<Vec<f32>, String> {
    let per: usize = s.sample_shape.iter().product::<i64>() as usize;
    if z.len() != labels.len() * per {
        return Err(format!(
            "noise holds {} values, expected {} samples of {per}",
            z.len(),
            labels.len()
        ));
    }
    let device = model.device();
    let mut out = Vec::with_capacity(z.len());
    tch::no_grad(|| {
        for start in (0..labels.len()).step_by(s.max_batch.max(1)) {
            let m = s.max_batch.min(labels.len() - start);
            let t = Instant::now();
            let mut shape = vec![m as i64];
            shape.extend(&s.sample_shape);
            let zt = Tensor::from_slice(&z[start * per..(start + m) * per])
                .view(shape.as_slice())
                .to_device(device);
            let lt = Tensor::from_slice(&labels[start..start + m]).to_device(device);
            let x = model
                .generate(&zt, &lt, s.sigma_max)
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .view(-1);
            let v = Vec::<f32>::try_from(&x).map_err(|e| e.to_string())?;
            out.extend(v);
            observe(m, t.elapsed().as_secs_f64());
        }
        Ok(out)
    })
}
