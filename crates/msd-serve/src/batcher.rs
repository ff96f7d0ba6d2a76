//! One batcher per student: a bounded queue of jobs and a dedicated thread that owns the
//! student's model. The thread takes the first waiting job, then keeps packing jobs until the
//! batch holds `max_batch` samples or `max_wait` has passed, evaluates the batch (`tch::no_grad`)
//! in chunks of exactly `eval_chunk` rows (the last one padded), and hands every job its own rows.
//! Fixed evaluation shapes make a sample's value independent of what it was batched with, so an
//! answer is byte-identical whatever the load. A batch never mixes students because each queue
//! belongs to one student.
//!
//! Admission is by time (the arithmetic is in [`crate::admission`]): the batcher keeps the number
//! of samples admitted and not yet answered, and the recent measured times of one chunk
//! evaluation (first measured at start-up with all students evaluating at once, as under load).
//! A job is refused at once (the server answers 503 with `Retry-After`) when the samples ahead of
//! it plus its own would take longer than `max_queue` at the slow end of recent chunk times, or
//! when `queue_cap` jobs wait already; a job for an idle student is always admitted. A queued job
//! that the batcher finds can no longer be answered within `max_queue` (the machine slowed down
//! after it was admitted) is shed with the same 503 instead of being answered late.

use crate::admission::{self, ServiceTime};
use crate::metrics::Metrics;
use msd::model::EdmModel;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

/// A request's share of work for one student: its conditions and noise rows, and where to answer.
pub struct Job {
    /// One class per sample (for a student that takes embeddings: any value, one per sample).
    pub labels: Vec<i64>,
    /// For a student that takes embeddings (`BatchSettings::embedding_dim` > 0): one embedding
    /// per sample, flattened; empty otherwise.
    pub cond: Vec<f32>,
    /// Noise, `labels.len()` samples of the student's sample shape, flattened.
    pub z: Vec<f32>,
    /// Receives the samples (same layout as `z`), or why there are none.
    pub reply: oneshot::Sender<Result<JobOutput, JobError>>,
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

/// Why an admitted job got no samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Shed before evaluation: it could no longer be answered within `max_queue`; a retry makes
    /// sense after about `retry_after_s` seconds.
    Late { retry_after_s: u64 },
    /// The evaluation failed (the message says why).
    Failed(String),
}

/// A job in the queue, and whether it was admitted to an idle student (never shed).
struct Queued {
    job: Job,
    alone: bool,
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
    /// Width of the students' embedding condition (prompt bundles); 0: they take class labels.
    pub embedding_dim: usize,
}

/// What a batcher holds: samples admitted and not yet answered, and the recent chunk times.
#[derive(Debug, Default)]
pub struct Load {
    queued: AtomicUsize,
    service: Mutex<ServiceTime>,
}

impl Load {
    /// Samples admitted and not yet answered (queued or being evaluated).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// The cost of one chunk evaluation that admission uses (zero before the first
    /// measurement): see [`ServiceTime::per_chunk`].
    pub fn chunk_cost(&self) -> Duration {
        self.service().per_chunk()
    }

    /// Expected time to evaluate `samples` samples in chunks of `chunk`, at [`Load::chunk_cost`].
    pub fn expected(&self, samples: usize, chunk: usize) -> Duration {
        admission::cost(self.chunk_cost(), samples, chunk)
    }

    fn service(&self) -> std::sync::MutexGuard<'_, ServiceTime> {
        self.service.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe_chunk(&self, d: Duration) {
        self.service().observe(d);
    }

    fn done(&self, samples: usize) {
        self.queued.fetch_sub(samples, Ordering::SeqCst);
    }
}

/// Every batcher bumps this after each batch; the idle trimmer watches it.
pub static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// The start-up handshake of a batcher thread: it sends on `reported` when its first warm-up
/// chunk (one-off costs) is done, waits for `go`, times a second chunk that every student
/// evaluates at once, and sends on `reported` again. Dropping `go` unsent (another student's
/// thread failed to start) ends the thread instead of leaving it waiting.
pub struct WarmUp {
    pub reported: Receiver<()>,
    pub go: Sender<()>,
}

/// The sending side of a student's queue.
pub struct Batcher {
    id: usize,
    tx: SyncSender<Queued>,
    load: Arc<Load>,
    eval_chunk: usize,
    max_queue: Duration,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the batcher thread of student `id`, which owns `model`. The thread evaluates a
    /// first chunk, reports it through the returned [`WarmUp`] and waits for its `go` (sent when
    /// every student got that far), then times a second chunk
    /// that they all evaluate at once (the admission estimate starts from it, so it sees the
    /// students share the machine); the returned receiver gets `()` then.
    pub fn spawn(
        id: usize,
        model: EdmModel,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>, WarmUp)> {
        let (tx, rx) = sync_channel(settings.queue_cap);
        let m = metrics.clone();
        let load = Arc::new(Load::default());
        let (eval_chunk, max_queue) = (settings.eval_chunk, settings.max_queue);
        let (reported_tx, reported) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let l = load.clone();
        let handle = std::thread::Builder::new()
            .name(format!("msd-student-{id}"))
            .spawn(move || worker(id, model, settings, rx, m, l, (reported_tx, go_rx)))?;
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
            WarmUp { reported, go },
        ))
    }

    /// The batcher's load (samples held, chunk cost).
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// Queues a job without waiting; refuses it when the work ahead plus its own would take
    /// longer than `max_queue` (see [`admission::admit`]) or the queue holds `queue_cap` jobs.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let label = self.id.to_string();
        let n = job.labels.len();
        let before = self.load.queued.fetch_add(n, Ordering::SeqCst);
        let per_chunk = self.load.chunk_cost();
        let refuse = |retry_after_s: u64| {
            self.load.done(n);
            self.metrics
                .queue_full
                .with_label_values(&[label.as_str()])
                .inc();
            Err(SubmitError::Full { retry_after_s })
        };
        if let Err(retry) = admission::admit(per_chunk, before, n, self.eval_chunk, self.max_queue)
        {
            return refuse(retry);
        }
        let depth = self
            .metrics
            .queue_depth
            .with_label_values(&[label.as_str()]);
        depth.inc();
        let alone = before == 0;
        match self.tx.try_send(Queued { job, alone }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                depth.dec();
                refuse(admission::retry_after_s(per_chunk, before, self.eval_chunk))
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
    rx: &Receiver<Queued>,
    carry: &mut Option<Queued>,
    s: &BatchSettings,
    on_dequeue: &dyn Fn(),
) -> Option<Vec<Queued>> {
    let first = match carry.take() {
        Some(j) => j,
        None => {
            let j = rx.recv().ok()?;
            on_dequeue();
            j
        }
    };
    let mut rows = first.job.labels.len();
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
        if rows + j.job.labels.len() > s.max_batch {
            *carry = Some(j);
            break;
        }
        rows += j.job.labels.len();
        jobs.push(j);
    }
    Some(jobs)
}

fn worker(
    id: usize,
    model: EdmModel,
    s: BatchSettings,
    rx: Receiver<Queued>,
    metrics: Arc<Metrics>,
    load: Arc<Load>,
    (reported, go): (Sender<()>, Receiver<()>),
) {
    let label = id.to_string();
    let l = [label.as_str()];
    // Two warm-up chunks (the first pays one-off costs); the second, evaluated by all students
    // at once, seeds the estimate.
    let warm = s.sample_shape.iter().product::<i64>() as usize * s.eval_chunk;
    for i in 0..2 {
        if i == 1 {
            let _ = reported.send(());
            if go.recv().is_err() {
                return; // another student failed to start: the router is not built
            }
        }
        let t = Instant::now();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            evaluate(
                &model,
                &s,
                &vec![0; s.eval_chunk],
                &vec![0.0; s.embedding_dim * s.eval_chunk],
                &vec![0.0; warm],
                |_, _| {},
            )
        }));
        if i == 1 {
            *load.service() = ServiceTime::seeded(t.elapsed());
        }
    }
    let _ = reported.send(());
    let depth = metrics.queue_depth.with_label_values(&l);
    let on_dequeue = || depth.dec();
    let mut carry = None;
    while let Some(batch) = next_batch(&rx, &mut carry, &s, &on_dequeue) {
        // Clients that went away need no samples.
        let batch: Vec<Queued> = batch
            .into_iter()
            .filter(|q| {
                let keep = !q.job.reply.is_closed();
                if !keep {
                    load.done(q.job.labels.len());
                }
                keep
            })
            .collect();
        let jobs = shed_late(batch, &s, &load, &metrics, &l);
        if jobs.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        if !s.delay.is_zero() {
            std::thread::sleep(s.delay);
        }
        let labels: Vec<i64> = jobs.iter().flat_map(|j| j.labels.iter().copied()).collect();
        let z: Vec<f32> = jobs.iter().flat_map(|j| j.z.iter().copied()).collect();
        let cond: Vec<f32> = jobs.iter().flat_map(|j| j.cond.iter().copied()).collect();
        let result = catch_unwind(AssertUnwindSafe(|| {
            evaluate(&model, &s, &labels, &cond, &z, |rows, secs| {
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
                    let _ = j.reply.send(Err(JobError::Failed(e.clone())));
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

/// Answers 503 to the jobs of `batch` that would be answered after `max_queue` (see
/// [`admission::late`]; never those admitted to an idle student); returns the others.
fn shed_late(
    batch: Vec<Queued>,
    s: &BatchSettings,
    load: &Load,
    metrics: &Metrics,
    label: &[&str],
) -> Vec<Job> {
    let rows: usize = batch.iter().map(|q| q.job.labels.len()).sum();
    let per_chunk = load.chunk_cost();
    let mut kept = Vec::with_capacity(batch.len());
    for q in batch {
        let waited = q.job.enqueued.elapsed();
        if q.alone || !admission::late(per_chunk, waited, rows, s.eval_chunk, s.max_queue) {
            kept.push(q.job);
            continue;
        }
        load.done(q.job.labels.len());
        metrics.queue_full.with_label_values(label).inc();
        metrics.shed_late.with_label_values(label).inc();
        let retry_after_s = admission::retry_after_s(per_chunk, load.queued(), s.eval_chunk);
        let _ = q.job.reply.send(Err(JobError::Late { retry_after_s }));
    }
    kept
}

/// One-step generation of `labels.len()` samples from `z`, conditioned on `labels` (or, for a
/// student that takes embeddings, on the rows of `cond`), in chunks of exactly `eval_chunk` rows
/// (the last padded with copies of its first row, whose outputs are dropped); calls
/// `observe(rows, seconds)` per network evaluation with the real rows it held.
fn evaluate(
    model: &EdmModel,
    s: &BatchSettings,
    labels: &[i64],
    cond: &[f32],
    z: &[f32],
    observe: impl Fn(usize, f64),
) -> Result<Vec<f32>, String> {
    let per: usize = s.sample_shape.iter().product::<i64>() as usize;
    let dim = s.embedding_dim;
    if z.len() != labels.len() * per || cond.len() != labels.len() * dim {
        return Err(format!(
            "noise holds {} values and conditions {}, expected {} samples of {per} and {dim}",
            z.len(),
            cond.len(),
            labels.len()
        ));
    }
    let device = model.device();
    let chunk = s.eval_chunk.max(1);
    let mut shape = vec![chunk as i64];
    shape.extend(&s.sample_shape);
    let mut out = Vec::with_capacity(z.len());
    let (mut zc, mut lc, mut cc) = (Vec::new(), Vec::new(), Vec::new());
    tch::no_grad(|| {
        for start in (0..labels.len()).step_by(chunk) {
            let m = chunk.min(labels.len() - start);
            let t = Instant::now();
            let (zs, ls, cs): (&[f32], &[i64], &[f32]) = if m == chunk {
                (
                    &z[start * per..(start + m) * per],
                    &labels[start..start + m],
                    &cond[start * dim..(start + m) * dim],
                )
            } else {
                zc.clear();
                lc.clear();
                cc.clear();
                zc.extend_from_slice(&z[start * per..(start + m) * per]);
                lc.extend_from_slice(&labels[start..start + m]);
                cc.extend_from_slice(&cond[start * dim..(start + m) * dim]);
                for _ in m..chunk {
                    zc.extend_from_slice(&z[start * per..(start + 1) * per]);
                    lc.push(labels[start]);
                    cc.extend_from_slice(&cond[start * dim..(start + 1) * dim]);
                }
                (&zc, &lc, &cc)
            };
            let zt = Tensor::from_slice(zs)
                .view(shape.as_slice())
                .to_device(device);
            let lt = if dim == 0 {
                Tensor::from_slice(ls).to_device(device)
            } else {
                Tensor::from_slice(cs)
                    .view([chunk as i64, dim as i64])
                    .to_device(device)
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use msd::diffusion::EdmPrecond;
    use msd::nets::{MlpConfig, NetConfig};

    fn batcher() -> (Batcher, JoinHandle<()>, WarmUp) {
        let model = EdmModel::new(
            &NetConfig::Mlp(MlpConfig {
                dim: 2,
                num_classes: 3,
                width: 8,
                depth: 1,
                noise_freqs: 4,
                cond: Default::default(),
            }),
            EdmPrecond::default(),
            Device::Cpu,
        );
        let settings = BatchSettings {
            max_batch: 4,
            eval_chunk: 2,
            max_wait: Duration::from_millis(1),
            queue_cap: 4,
            max_queue: Duration::from_secs(1),
            delay: Duration::ZERO,
            sigma_max: 80.0,
            sample_shape: vec![2],
            embedding_dim: 0,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        Batcher::spawn(0, model, settings, metrics).unwrap()
    }

    /// Regression: the warm-up once waited at a barrier sized for every student, so a student
    /// whose start failed left the ones already started blocked forever.
    #[test]
    fn a_thread_whose_router_was_not_built_ends() {
        let (b, handle, warm) = batcher();
        warm.reported.recv().unwrap(); // first chunk done; now waiting for `go`
        drop(warm); // the router gave up (another student failed to start)
        drop(b);
        handle.join().unwrap();
    }

    #[test]
    fn a_started_thread_times_its_warm_up_then_serves() {
        let (b, handle, warm) = batcher();
        warm.reported.recv().unwrap();
        warm.go.send(()).unwrap();
        warm.reported.recv().unwrap();
        assert!(
            b.load.chunk_cost() > Duration::ZERO,
            "warm-up seeded the estimate"
        );
        drop(b); // closing the queue ends the thread
        handle.join().unwrap();
    }
}
