//! `msd serve`: serves a bundle over HTTP (see the `msd-serve` crate) until SIGTERM or Ctrl-C,
//! then finishes the requests in flight and exits.

use anyhow::{Context, Result};
use msd::bundle::Bundle;
use msd_serve::config::ServeLimits;
use msd_serve::{ServeConfig, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Server settings shared by `serve` and `serve-bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct Limits {
    /// Most samples packed into one batch.
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// Rows of every network evaluation (batches are evaluated in chunks of exactly this many
    /// samples, so answers do not depend on the load).
    #[arg(long, default_value_t = 16)]
    pub eval_chunk: usize,
    /// Longest wait for more requests before a batch is evaluated, in milliseconds (0–1000).
    #[arg(long, default_value_t = 2.0)]
    pub max_wait_ms: f64,
    /// Requests waiting per student before the server answers 503 (with Retry-After).
    #[arg(long, default_value_t = 128)]
    pub queue_cap: usize,
    /// Admission bound: a request whose wait (the samples admitted to its student and not yet
    /// answered plus its own, at the p90 of recent evaluation times) is above this many
    /// milliseconds gets 503 with Retry-After, as does an admitted one that can no longer be
    /// answered within it.
    #[arg(long, default_value_t = 2000.0)]
    pub max_queue_ms: f64,
    /// A connection must send a request's headers, and then its body, within this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub read_timeout_s: f64,
    /// Most connections open at once (beyond it: 503 and close).
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
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
    fn limits(&self) -> ServeLimits {
        ServeLimits {
            max_batch: self.max_batch,
            eval_chunk: self.eval_chunk,
            max_wait_ms: self.max_wait_ms,
            queue_cap: self.queue_cap,
            max_queue_ms: self.max_queue_ms,
            read_timeout_s: self.read_timeout_s,
            max_connections: self.max_connections,
            max_n: self.max_n,
            max_teacher_n: self.max_teacher_n,
            body_limit: self.body_limit,
            teacher_steps: self.teacher_steps,
        }
    }

    /// The same settings as `msd serve` flags (for a server started as a child process).
    pub fn to_args(&self) -> Vec<String> {
        self.limits().to_args()
    }

    /// The checked server settings; errors name the flag.
    pub fn config(&self) -> Result<ServeConfig> {
        self.limits().config().map_err(|e| match e.split_once(' ') {
            Some((name, rest)) => anyhow::anyhow!("--{} {rest}", name.replace('_', "-")),
            None => anyhow::anyhow!("{e}"),
        })
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
    /// The all-MiniLM-L6-v2 folder for a prompt-conditional bundle (default:
    /// scripts/setup-text-encoder.sh's); unused for class bundles.
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

/// Torch threads when `--threads` is not given: the idle cores at start-up
/// ([`msd::runtime::free_cores`]) shared among the K student threads.
pub fn default_threads(students: usize) -> i32 {
    msd::runtime::serve_threads(students, msd::runtime::free_cores())
}

pub fn run(a: Args, threads: Option<i32>) -> Result<()> {
    let cfg = a.limits.config()?;
    let device = a.device;
    let bundle = Bundle::load(&a.bundle, device)
        .with_context(|| format!("--bundle {}", a.bundle.display()))?;
    tch::set_num_threads(threads.unwrap_or_else(|| default_threads(bundle.students.len())));
    let k = bundle.students.len();
    let encoder = if bundle.is_prompt_conditional() {
        Some(crate::cmd::text::load_encoder(
            a.encoder.as_deref(),
            device,
        )?)
    } else {
        None
    };
    let server = Server::with_encoder(bundle, cfg, encoder).context("starting the server")?;
    let teacher = server.info().teacher.available;
    let rt = msd_serve::server::runtime().context("starting the async runtime")?;
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
        // stdout may be gone by now (a closed pipe): never fail the shutdown over it.
        let _ = writeln!(
            std::io::stdout(),
            "stopped: all requests in flight were answered"
        );
        Ok(())
    })
}
