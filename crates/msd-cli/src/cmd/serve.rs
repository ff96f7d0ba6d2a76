//! `msd serve`: serves a bundle over HTTP (see the `msd-serve` crate) until SIGTERM or Ctrl-C,
//! then finishes the requests in flight and exits.

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
    /// Admission bound: a request whose expected wait (the samples queued for its student plus
    /// its own, at the measured evaluation cost) is above this many milliseconds gets 503 with
    /// Retry-After.
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
    /// The same settings as `msd serve` flags (for a server started as a child process).
    pub fn to_args(&self) -> Vec<String> {
        let pairs = [
            ("--max-batch", self.max_batch.to_string()),
            ("--eval-chunk", self.eval_chunk.to_string()),
            ("--max-wait-ms", self.max_wait_ms.to_string()),
            ("--queue-cap", self.queue_cap.to_string()),
            ("--max-queue-ms", self.max_queue_ms.to_string()),
            ("--read-timeout-s", self.read_timeout_s.to_string()),
            ("--max-connections", self.max_connections.to_string()),
            ("--max-n", self.max_n.to_string()),
            ("--max-teacher-n", self.max_teacher_n.to_string()),
            ("--body-limit", self.body_limit.to_string()),
        ];
        let mut args: Vec<String> = pairs
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect();
        if let Some(t) = self.teacher_steps {
            args.extend(["--teacher-steps".to_string(), t.to_string()]);
        }
        args
    }

    pub fn config(&self) -> Result<ServeConfig> {
        use msd_serve::config::{MAX_QUEUE_LIMIT, MAX_WAIT_LIMIT, READ_TIMEOUT_RANGE};
        let secs = |flag: &str, v: f64, lo: f64, hi: f64| -> Result<Duration> {
            if !(v.is_finite() && v >= lo && v <= hi) {
                anyhow::bail!("{flag} must be a number between {lo} and {hi}, got {v}");
            }
            Ok(Duration::from_secs_f64(v))
        };
        let max_wait = secs(
            "--max-wait-ms",
            self.max_wait_ms,
            0.0,
            MAX_WAIT_LIMIT.as_secs_f64() * 1e3,
        )? / 1000;
        let max_queue = secs(
            "--max-queue-ms",
            self.max_queue_ms,
            1.0,
            MAX_QUEUE_LIMIT.as_secs_f64() * 1e3,
        )? / 1000;
        let (lo, hi) = READ_TIMEOUT_RANGE;
        let read_timeout = secs(
            "--read-timeout-s",
            self.read_timeout_s,
            lo.as_secs_f64(),
            hi.as_secs_f64(),
        )?;
        let cfg = ServeConfig {
            max_batch: self.max_batch,
            eval_chunk: self.eval_chunk,
            max_wait,
            queue_cap: self.queue_cap,
            max_queue,
            read_timeout,
            max_connections: self.max_connections,
            max_n: self.max_n,
            max_teacher_n: self.max_teacher_n,
            body_limit: self.body_limit,
            teacher_steps: self.teacher_steps,
            ..Default::default()
        };
        cfg.validate().map_err(|e| match e.split_once(' ') {
            Some((name, rest)) => anyhow::anyhow!("--{} {rest}", name.replace('_', "-")),
            None => anyhow::anyhow!("{e}"),
        })?;
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
