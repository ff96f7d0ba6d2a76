//! One batcher per student: a bounded queue of jobs and a dedicated thread that owns the
//! student's model. The thread takes the first waiting job, then keeps packing jobs until the
//! batch holds `max_batch` samples or `max_wait` has passed, evaluates the batch (`tch::no_grad`)
//! in chunks of exactly `eval_chunk` rows (the last one padded), and hands every job its own rows.
//! Fixed evaluation shapes make a sample's value independent of what it was batched with, so an
//! answer is byte-identical whatever the load. A batch never mixes students because each queue
//! belongs to one student.
//!
//! Admission is by time: the batcher keeps the number of samples admitted and not yet answered,
//! and the measured time of one chunk evaluation (a moving average, first measured at start-up).
//! A job is refused at once (the server answers 503 with `Retry-After`) when the samples ahead of
//! it plus its own would take longer than `max_queue`, or when `queue_cap` jobs wait already; a
//! job for an idle student is always admitted.

use crate::metrics::Metrics;
use msd::model::EdmModel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// The expected wait is above `max_queue`, or `queue_cap` jobs wait already; a retry makes
    /// sense after about `retry_after_s` seconds (the expected wait of the work ahead).
    Full { retry_after_s: u64 },
    /// The batcher has stopped (the server is shutting down).
    Closed,
}

/// Settings shared by all batchers of a server.
#[derive(Clone, Debug)]
pub struct BatchSettings {
    pub max_batch: usize,
    /// Rows of every network evaluation.
    pub eval_chunk: usize,
    pub max_wait: Duration,
    pub queue_cap: usize,
    /// Admission bound on the expected wait.
    pub max_queue: Duration,
    pub delay: Duration,
    pub sigma_max: f64,
    pub sample_shape: Vec<i64>,
}

/// What a batcher holds: samples admitted and not yet answered, and the cost of one chunk.
#[derive(Debug, Default)]
pub struct Load {
    queued: AtomicUsize,
    chunk_ns: AtomicU64,
}

impl Load {
    /// Samples admitted and not yet answered (queued or being evaluated).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// The measured time of one chunk evaluation (zero before the first measurement).
    pub fn chunk_cost(&self) -> Duration {
        Duration::from_nanos(self.chunk_ns.load(Ordering::Relaxed))
    }

    /// Expected time to evaluate `samples` samples in chunks of `chunk`.
    pub fn expected(&self, samples: usize, chunk: usize) -> Duration {
        self.chunk_cost() * samples.div_ceil(chunk.max(1)) as u32
    }

    fn observe_chunk(&self, d: Duration) {
        let new = d.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.chunk_ns.load(Ordering::Relaxed);
        // A moving average that follows the machine's load within a few batches.
        let v = if old == 0 {
            new
        } else {
            (old / 10) * 7 + (new / 10) * 3
        };
        self.chunk_ns.store(v.max(1), Ordering::Relaxed);
    }

    fn done(&self, samples: usize) {
        self.queued.fetch_sub(samples, Ordering::SeqCst);
    }
}

/// Every batcher bumps this after each batch; the idle trimmer watches it.
pub static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// The sending side of a student's queue.
pub struct Batcher {
    id: usize,
    tx: SyncSender<Job>,
    load: Arc<Load>,
    eval_chunk: usize,
    max_queue: Duration,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the batcher thread of student `id`, which owns `model`; returns once the thread
    /// has timed its first chunk evaluations (the admission estimate starts from them).
    pub fn spawn(
        id: usize,
        model: EdmModel,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(settings.queue_cap);
        let m = metrics.clone();
        let load = Arc::new(Load::default());
        let (eval_chunk, max_queue) = (settings.eval_chunk, settings.max_queue);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let l = load.clone();
        let handle = std::thread::Builder::new()
            .name(format!("msd-student-{id}"))
            .spawn(move || worker(id, model, settings, rx, m, l, ready_tx))?;
        let _ = ready.recv();
        Ok((
            Self {
                id,
                tx,
                load,
                eval_chunk,
                max_queue,
                metrics,
            },
            handle,
        ))
    }

    /// The batcher's load (samples held, chunk cost).
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// Queues a job without waiting; refuses it when the expected wait is above `max_queue` or
    /// the queue holds `queue_cap` jobs.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let label = self.id.to_string();
        let n = job.labels.len();
        let before = self.load.queued.fetch_add(n, Ordering::SeqCst);
        let retry = |ahead: usize| {
            let s = self.load.expected(ahead, self.eval_chunk).as_secs_f64();
            (s.ceil() as u64).clamp(1, 60)
        };
        let refuse = |ahead: usize| {
            self.load.done(n);
            self.metrics
                .queue_full
                .with_label_values(&[label.as_str()])
                .inc();
            Err(SubmitError::Full {
                retry_after_s: retry(ahead),
            })
        };
        if before > 0 && self.load.expected(before + n, self.eval_chunk) > self.max_queue {
            return refuse(before);
        }
        let depth = self
            .metrics
            .queue_depth
            .with_label_values(&[label.as_str()]);
        depth.inc();
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                depth.dec();
                refuse(before)
            }
            Err(TrySendError::Disconnected(_)) => {
                depth.dec();
                self.load.done(n);
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

fn worker(
    id: usize,
    model: EdmModel,
    s: BatchSettings,
    rx: Receiver<Job>,
    metrics: Arc<Metrics>,
    load: Arc<Load>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let label = id.to_string();
    let l = [label.as_str()];
    // Two warm-up chunks (the first pays one-off costs); the second's time seeds the estimate.
    let warm = s.sample_shape.iter().product::<i64>() as usize * s.eval_chunk;
    for _ in 0..2 {
        let t = Instant::now();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            evaluate(
                &model,
                &s,
                &vec![0; s.eval_chunk],
                &vec![0.0; warm],
                |_, _| {},
            )
        }));
        load.chunk_ns
            .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    let _ = ready.send(());
    let depth = metrics.queue_depth.with_label_values(&l);
    let on_dequeue = || depth.dec();
    let mut carry = None;
    while let Some(mut jobs) = next_batch(&rx, &mut carry, &s, &on_dequeue) {
        // Clients that went away need no samples.
        jobs.retain(|j| {
            let keep = !j.reply.is_closed();
            if !keep {
                load.done(j.labels.len());
            }
            keep
        });
        if jobs.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        if !s.delay.is_zero() {
            std::thread::sleep(s.delay);
        }
        let labels: Vec<i64> = jobs.iter().flat_map(|j| j.labels.iter().copied()).collect();
        let z: Vec<f32> = jobs.iter().flat_map(|j| j.z.iter().copied()).collect();
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
        // The whole batch (copies and pauses included) per chunk: what the queue really costs.
        load.observe_chunk(generate / labels.len().div_ceil(s.eval_chunk.max(1)).max(1) as u32);
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
                    load.done(j.labels.len());
                    let _ = j.reply.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                for j in jobs {
                    load.done(j.labels.len());
                    let _ = j.reply.send(Err(e.clone()));
                }
            }
        }
        metrics
            .queued_samples
            .with_label_values(&l)
            .set(load.queued() as i64);
        metrics
            .chunk_seconds
            .with_label_values(&l)
            .set(load.chunk_cost().as_secs_f64());
        ACTIVITY.fetch_add(1, Ordering::Relaxed);
    }
}

/// One-step generation of `labels.len()` samples from `z`, in chunks of exactly `eval_chunk`
/// rows (the last padded with copies of its first row, whose outputs are dropped); calls
/// `observe(rows, seconds)` per network evaluation with the real rows it held.
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
    let chunk = s.eval_chunk.max(1);
    let mut shape = vec![chunk as i64];
    shape.extend(&s.sample_shape);
    let mut out = Vec::with_capacity(z.len());
    let (mut zc, mut lc) = (Vec::new(), Vec::new());
    tch::no_grad(|| {
        for start in (0..labels.len()).step_by(chunk) {
            let m = chunk.min(labels.len() - start);
            let t = Instant::now();
            let (zs, ls): (&[f32], &[i64]) = if m == chunk {
                (
                    &z[start * per..(start + m) * per],
                    &labels[start..start + m],
                )
            } else {
                zc.clear();
                lc.clear();
                zc.extend_from_slice(&z[start * per..(start + m) * per]);
                lc.extend_from_slice(&labels[start..start + m]);
                for _ in m..chunk {
                    zc.extend_from_slice(&z[start * per..(start + 1) * per]);
                    lc.push(labels[start]);
                }
                (&zc, &lc)
            };
            let zt = Tensor::from_slice(zs)
                .view(shape.as_slice())
                .to_device(device);
            let lt = Tensor::from_slice(ls).to_device(device);
            let x = model
                .generate(&zt, &lt, s.sigma_max)
                .narrow(0, 0, m as i64)
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
