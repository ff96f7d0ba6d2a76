//! The router: sends each sample of a request to the student that owns its class, through that
//! student's batcher, and puts the answers back in request order. Noise comes from the request's
//! seed (see [`crate::noise`]), so the samples depend only on (classes, seed).

use crate::batcher::{BatchSettings, Batcher, Job, JobError, JobOutput, SubmitError};
use crate::metrics::Metrics;
use msd::bundle::BundleManifest;
use msd::model::EdmModel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Samples of one request, in request order.
#[derive(Debug)]
pub struct Generated {
    /// Flattened samples, `labels.len()` × sample shape.
    pub x: Vec<f32>,
    /// The students that took part, ascending.
    pub students: Vec<usize>,
    /// Longest network-evaluation time among those students' batches.
    pub generate: Duration,
    /// Most samples in one of the batches the request rode in (its own and other requests').
    pub batch_rows: usize,
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown class {class}: this bundle has classes 0..={max}", max = .num_classes.saturating_sub(1))]
    UnknownClass { class: i64, num_classes: usize },
    #[error("student {student} is busy (its queue would take longer than the server's bound); retry in about {retry_after_s} s")]
    Busy { student: usize, retry_after_s: u64 },
    #[error("the server is shutting down")]
    Closed,
    #[error("generation failed: {0}")]
    Failed(String),
}

/// Batchers of all students of a bundle.
pub struct Router {
    manifest: BundleManifest,
    sample_shape: Vec<i64>,
    batchers: Vec<Batcher>,
    threads: Vec<JoinHandle<()>>,
}

impl Router {
    /// Starts one batcher thread per student; `students[k]` is student k.
    pub fn start(
        manifest: BundleManifest,
        students: Vec<EdmModel>,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let sample_shape = settings.sample_shape.clone();
        let mut batchers = Vec::new();
        let mut threads = Vec::new();
        let mut warm_ups = Vec::new();
        for (k, m) in students.into_iter().enumerate() {
            let (b, t, w) = Batcher::spawn(k, m, settings.clone(), metrics.clone())?;
            batchers.push(b);
            threads.push(t);
            warm_ups.push(w);
        }
        // The students time their warm-up together, as they run under load: each finishes its
        // first chunk, then all start the timed one at once. (An error above drops the `go`
        // senders, which ends the threads already started.)
        for w in &warm_ups {
            let _ = w.reported.recv();
        }
        for w in &warm_ups {
            let _ = w.go.send(());
        }
        for w in &warm_ups {
            let _ = w.reported.recv();
        }
        Ok(Self {
            manifest,
            sample_shape,
            batchers,
            threads,
        })
    }

    /// The batchers, student k at index k.
    pub fn batchers(&self) -> &[Batcher] {
        &self.batchers
    }

    /// The shape of one sample.
    pub fn sample_shape(&self) -> &[i64] {
        &self.sample_shape
    }

    /// Number of classes of the bundle.
    pub fn num_classes(&self) -> usize {
        self.manifest.partition.num_conditions
    }

    /// The owner of every label, or the first unknown class.
    pub fn owners(&self, labels: &[i64]) -> Result<Vec<usize>, RouteError> {
        labels
            .iter()
            .map(|&c| {
                self.manifest
                    .partition
                    .route(c)
                    .map_err(|_| RouteError::UnknownClass {
                        class: c,
                        num_classes: self.num_classes(),
                    })
            })
            .collect()
    }

    /// One sample per label from the flattened noise `z`, each from its class's owner.
    pub async fn generate(&self, labels: &[i64], z: Vec<f32>) -> Result<Generated, RouteError> {
        let owners = self.owners(labels)?;
        let per: usize = self.sample_shape.iter().product::<i64>() as usize;
        let mut students: Vec<usize> = owners.clone();
        students.sort_unstable();
        students.dedup();
        // Submit every student's share first, then wait: the students work in parallel.
        let mut pending = Vec::new();
        for &k in &students {
            let rows: Vec<usize> = (0..labels.len()).filter(|&i| owners[i] == k).collect();
            let job_z: Vec<f32> = rows
                .iter()
                .flat_map(|&i| z[i * per..(i + 1) * per].iter().copied())
                .collect();
            let (tx, rx) = oneshot::channel();
            let job = Job {
                labels: rows.iter().map(|&i| labels[i]).collect(),
                cond: Vec::new(),
                z: job_z,
                reply: tx,
                enqueued: Instant::now(),
            };
            self.submit(k, job)?;
            pending.push((k, rows, rx));
        }
        let mut x = z;
        let mut generate = Duration::ZERO;
        let mut batch_rows = 0;
        for (k, rows, rx) in pending {
            let out = answer(k, rx).await?;
            generate = generate.max(out.generate);
            batch_rows = batch_rows.max(out.batch_rows);
            for (j, &i) in rows.iter().enumerate() {
                x[i * per..(i + 1) * per].copy_from_slice(&out.x[j * per..(j + 1) * per]);
            }
        }
        Ok(Generated {
            x,
            students,
            generate,
            batch_rows,
        })
    }
}

impl Router {
    /// `z.len() / sample size` samples from student `k` (of a bundle whose students take
    /// embeddings), all conditioned on the embedding `e` (a prompt's), through its batcher.
    pub async fn generate_embedded(
        &self,
        k: usize,
        e: &[f32],
        z: Vec<f32>,
    ) -> Result<Generated, RouteError> {
        let per: usize = self.sample_shape.iter().product::<i64>() as usize;
        let n = z.len() / per.max(1);
        if k >= self.batchers.len() {
            return Err(RouteError::Failed(format!("no student {k}")));
        }
        let (tx, rx) = oneshot::channel();
        self.submit(
            k,
            Job {
                labels: vec![0; n],
                cond: e.repeat(n),
                z,
                reply: tx,
                enqueued: Instant::now(),
            },
        )?;
        let out = answer(k, rx).await?;
        Ok(Generated {
            x: out.x,
            students: vec![k],
            generate: out.generate,
            batch_rows: out.batch_rows,
        })
    }

    fn submit(&self, k: usize, job: Job) -> Result<(), RouteError> {
        self.batchers[k].submit(job).map_err(|e| match e {
            SubmitError::Full { retry_after_s } => RouteError::Busy {
                student: k,
                retry_after_s,
            },
            SubmitError::Closed => RouteError::Closed,
        })
    }
}

/// Student `k`'s answer to a job.
async fn answer(
    k: usize,
    rx: oneshot::Receiver<Result<JobOutput, JobError>>,
) -> Result<JobOutput, RouteError> {
    rx.await
        .map_err(|_| RouteError::Closed)?
        .map_err(|e| match e {
            JobError::Late { retry_after_s } => RouteError::Busy {
                student: k,
                retry_after_s,
            },
            JobError::Failed(m) => RouteError::Failed(m),
        })
}

impl Drop for Router {
    /// Closes the queues and waits for the batchers to finish the work they hold.
    fn drop(&mut self) {
        self.batchers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
