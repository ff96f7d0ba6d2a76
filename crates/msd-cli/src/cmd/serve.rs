//! `msd serve`: serves a bundle over HTTP (see the `msd-serve` crate) until SIGTERM or Ctrl-C,
//! then finishes the requests in flight and exits.

use crate::device;
use anyhow::{Context, Result};
use msd::bundle::Bundle;
use msd_serve::{ServeConfig, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Server settings shared by `serve` and `serve-bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct Limits {
    /// Most samples per network evaluation.
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// Longest wait for more requests before a batch is evaluated, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub max_wait_ms: f64,
    /// Requests waiting per student before the server answers 503 (with Retry-After).
    #[arg(long, default_value_t = 128)]
    pub queue_cap: usize,
    /// Most samples per request (n × number of classes).
    #[arg(long, default_value_t = 1024)]
    pub max_n: usize,
    /// Most samples per teacher request.
    #[arg(long, default_value_t = 256)]
    pub max_teacher_n: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16384)]
    pub body_limit: usize,
    /// Sampler steps of the teacher comparison (default: the teacher's own sampler settings,
    /// as the bundle records them).
    #[arg(long)]
    pub teacher_steps: Option<usize>,
}

impl Limits {
    pub fn config(&self) -> Result<ServeConfig> {
        if !(self.max_wait_ms.is_finite() && self.max_wait_ms >= 0.0) {
            anyhow::bail!("--max-wait-ms must be a number ≥ 0");
        }
        let cfg = ServeConfig {
            max_batch: self.max_batch,
            max_wait: Duration::from_secs_f64(self.max_wait_ms / 1e3),
            queue_cap: self.queue_cap,
            max_n: self.max_n,
            max_teacher_n: self.max_teacher_n,
            body_limit: self.body_limit,
            teacher_steps: self.teacher_steps,
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("--{}", e.replace('_', "-")))?;
        Ok(cfg)
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The bundle to serve (bundle.json).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub limits: Limits,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Torch threads when `--threads` is not given: the cores shared among the K student threads.
pub fn default_threads(students: usize) -> i32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / students.max(1)).max(1) as i32
}

pub fn run(a: Args, threads: Option<i32>) -> Result<()> {
    let cfg = a.limits.config()?;
    let device = device::parse(&a.device)?;
    let bundle = Bundle::load(&a.bundle, device)
        .with_context(|| format!("--bundle {}", a.bundle.display()))?;
    tch::set_num_threads(threads.unwrap_or_else(|| default_threads(bundle.students.len())));
    let k = bundle.students.len();
    let server = Server::new(bundle, cfg).context("starting the server")?;
    let teacher = server.info()["teacher"]["available"].as_bool() == Some(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("--addr {}: cannot listen", a.addr))?;
        let local = listener.local_addr()?;
        println!(
            "serving {} ({k} students{}) on http://{local}/  (POST /v1/generate, GET /metrics; Ctrl-C or SIGTERM stops)",
            a.bundle.display(),
            if teacher { ", teacher for comparison" } else { "" }
        );
        let _ = std::io::stdout().flush();
        server
            .run(listener, msd_serve::server::shutdown_signal())
            .await
            .context("serving")?;
        println!("stopped: all requests in flight were answered");
        Ok(())
    })
}
