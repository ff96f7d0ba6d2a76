//! The overload run (`msd serve-bench --load`): starts a server as a child process on a free
//! loopback port (so its memory is its own), warms it up, reads its idle memory, sends `clients`
//! concurrent clients for `seconds`, waits `settle_s` idle, reads its memory again, and stops it
//! with SIGTERM. [`overload`] returns a typed [`LoadReport`]; [`markdown`] renders it.

use crate::bench::LoadOptions;
use crate::memory::{rss_of, Rss};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the overload run stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Server(String),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        what: what.into(),
        source,
    }
}

/// How the overload run is made.
#[derive(Clone, Debug)]
pub struct OverloadOptions {
    /// The server program and its arguments (it must print its address, `http://ADDR/`, on its
    /// first line, as `msd serve` does).
    pub program: PathBuf,
    pub server_args: Vec<String>,
    /// The bundle served (recorded in the report).
    pub bundle: PathBuf,
    pub clients: usize,
    pub seconds: f64,
    /// Idle seconds after the load before the server's memory is read again.
    pub settle_s: f64,
    /// Pause after a 503 when `Retry-After` is not honoured.
    pub pause_after_503_ms: u64,
    pub honour_retry_after: bool,
    /// What each request asks for (`requests` is unused: the run is timed).
    pub load: LoadOptions,
}

/// What the overload run tells its caller as it goes.
#[derive(Clone, Debug)]
pub enum OverloadEvent {
    /// The server is up.
    Started { pid: u32, addr: SocketAddr },
    /// Warmed up and idle: its resident memory, MB.
    Idle { rss_mb: f64 },
}

/// Everything the load run reports.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub machine: String,
    pub load_average_before: String,
    pub load_average_after: String,
    pub bundle: String,
    pub server_args: Vec<String>,
    pub result: LoadRunResult,
    /// Server RSS idle after start-up and warm-up, MB.
    pub rss_idle_mb: f64,
    /// Largest RSS sampled every 100 ms during the load, and the kernel's peak (VmHWM), MB.
    pub rss_sampled_max_mb: f64,
    pub rss_peak_mb: f64,
    /// Server RSS `settle_s` after the load, MB, and its ratio to the idle RSS.
    pub rss_after_mb: f64,
    pub rss_after_over_idle: f64,
    pub settle_s: f64,
    pub pause_after_503_ms: u64,
    /// The server's estimate of one evaluation chunk per student at the end (`msd_chunk_seconds`).
    pub chunk_seconds: Vec<f64>,
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        sigterm(self.child.id());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(program: &Path, args: &[String]) -> Result<ServerProcess, LoadError> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io("starting `msd serve`"))?;
    let Some(out) = child.stdout.take() else {
        return Err(LoadError::Server("no stdout of `msd serve`".into()));
    };
    let mut line = String::new();
    let mut reader = BufReader::new(out);
    reader
        .read_line(&mut line)
        .map_err(io("reading the address of `msd serve`"))?;
    // Keep reading what the server prints, so that its stdout never breaks.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok());
    match addr {
        Some(addr) => Ok(ServerProcess { child, addr }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(LoadError::Server(format!(
                "`msd serve` did not start (its first line: {line:?})"
            )))
        }
    }
}

/// A plain HTTP/1.1 GET (connection: close); the whole answer as text.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the overload run on `rt` (see the module doc); `on` hears of the server's start and
/// idle memory.
pub fn overload(
    o: &OverloadOptions,
    rt: &tokio::runtime::Runtime,
    mut on: impl FnMut(OverloadEvent),
) -> Result<LoadReport, LoadError> {
    let load_before = loadavg();
    let server = start_server(&o.program, &o.server_args)?;
    let pid = server.child.id();
    on(OverloadEvent::Started {
        pid,
        addr: server.addr,
    });
    let opts = &o.load;
    // Warm-up: one request per class, then idle long enough for the server to trim.
    rt.block_on(load_run(
        server.addr,
        opts.num_classes.min(8),
        Duration::from_millis(1),
        Duration::ZERO,
        false,
        opts,
    ));
    std::thread::sleep(Duration::from_secs(2));
    let read = || {
        rss_of(pid).ok_or_else(|| {
            LoadError::Server("reading the server's /proc/<pid>/status: no VmRSS".into())
        })
    };
    let idle: Rss = read()?;
    on(OverloadEvent::Idle {
        rss_mb: mb(idle.current),
    });
    // Sample the RSS every 100 ms during the load.
    let (stop, max) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (stop, max) = (stop.clone(), max.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss_of(pid) {
                    max.fetch_max(r.current, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let result = rt.block_on(load_run(
        server.addr,
        o.clients,
        Duration::from_secs_f64(o.seconds),
        Duration::from_millis(o.pause_after_503_ms),
        o.honour_retry_after,
        opts,
    ));
    std::thread::sleep(Duration::from_secs_f64(o.settle_s));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = read()?;
    let load_after = loadavg();
    // The server's own estimate of one evaluation chunk, per student, at the end.
    let metrics = http_get(server.addr, "/metrics").unwrap_or_default();
    let chunk_seconds: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("msd_chunk_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    drop(server);
    Ok(LoadReport {
        machine: format!(
            "{}, {} cores seen",
            msd::evaluate::hardware(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        load_average_before: load_before,
        load_average_after: load_after,
        bundle: o.bundle.display().to_string(),
        server_args: o.server_args.clone(),
        rss_idle_mb: mb(idle.current),
        rss_sampled_max_mb: mb(max.load(Ordering::Relaxed)),
        rss_peak_mb: mb(after.peak),
        rss_after_mb: mb(after.current),
        rss_after_over_idle: after.current as f64 / idle.current.max(1) as f64,
        settle_s: o.settle_s,
        pause_after_503_ms: o.pause_after_503_ms,
        chunk_seconds,
        result,
    })
}

/// The load run as a markdown table.
pub fn markdown(r: &LoadReport) -> String {
    let l = &r.result;
    format!(
        "| clients × seconds | after a 503 | n per request | requests | accepted | 503 (with Retry-After) | 503 share | other 5xx | 4xx | no answer | accepted p50 ms | accepted p99 ms | accepted max ms | 503 p99 ms | samples/s | RSS idle MB | RSS peak MB | RSS after {settle} s MB | after / idle |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {c} × {s:.0} | {pause} | {n} | {req} | {acc} | {r503} ({ra}) | {share:.1}% | {o5} | {c4} | {te} | {p50:.0} | {p99:.0} | {max:.0} | {rp99:.1} | {sps:.0} | {idle:.0} | {peak:.0} | {after:.0} | {ratio:.2} |\n",
        settle = r.settle_s,
        c = l.clients,
        pause = if l.honour_retry_after {
            "waits Retry-After".to_string()
        } else {
            format!("waits {} ms", r.pause_after_503_ms)
        },
        s = l.seconds,
        n = l.n,
        req = l.requests,
        acc = l.accepted,
        r503 = l.refused_503,
        ra = l.refused_with_retry_after,
        share = 100.0 * l.share_503,
        o5 = l.other_5xx,
        c4 = l.client_4xx,
        te = l.transport_errors,
        p50 = l.accepted_p50_ms,
        p99 = l.accepted_p99_ms,
        max = l.accepted_max_ms,
        rp99 = l.refused_p99_ms,
        sps = l.samples_per_s,
        idle = r.rss_idle_mb,
        peak = r.rss_peak_mb,
        after = r.rss_after_mb,
        ratio = r.rss_after_over_idle,
    )
}

/// What the timed load run of [`load_run`] saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadRunResult {
    pub clients: usize,
    /// Whether clients waited the `Retry-After` seconds after a 503.
    pub honour_retry_after: bool,
    pub seconds: f64,
    pub n: usize,
    pub requests: usize,
    /// 200 answers.
    pub accepted: usize,
    /// 503 answers, and how many of them carried `Retry-After`.
    pub refused_503: usize,
    pub refused_with_retry_after: usize,
    /// Other 5xx answers (the target is none).
    pub other_5xx: usize,
    /// 4xx answers (a well-formed load should have none).
    pub client_4xx: usize,
    /// Requests that got no answer (connection errors, client timeouts).
    pub transport_errors: usize,
    /// Share of answered requests that were 503.
    pub share_503: f64,
    pub accepted_p50_ms: f64,
    pub accepted_p99_ms: f64,
    pub accepted_max_ms: f64,
    pub refused_p99_ms: f64,
    pub samples_per_s: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// `clients` concurrent clients send requests for `duration`, each waiting for its answer before
/// the next; request i asks for `opts.n` samples of class i mod C with seed i. After a 503 a
/// client waits the `Retry-After` seconds when `honour_retry_after` (as a well-behaved client
/// does; at most 10 s), else `pause_after_503` (the harsher load). Latencies are kept per
/// outcome.
pub async fn load_run(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    pause_after_503: Duration,
    honour_retry_after: bool,
    opts: &LoadOptions,
) -> LoadRunResult {
    #[derive(Default)]
    struct Tally {
        ok: Vec<f64>,
        refused: Vec<f64>,
        retry_after: usize,
        other_5xx: usize,
        c4xx: usize,
        transport: usize,
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(opts.timeout)
        .build()
        .unwrap_or_default();
    let url = format!("http://{addr}/v1/generate");
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (client, url, next, opts) = (client.clone(), url.clone(), next.clone(), opts.clone());
        tasks.spawn(async move {
            let mut t = Tally::default();
            while t0.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"class": {}, "n": {}, "seed": {i}, "format": "{}"}}"#,
                    i % opts.num_classes.max(1),
                    opts.n,
                    opts.format
                );
                let start = Instant::now();
                match client.post(&url).body(body).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry_s = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        let retry = retry_s.is_some();
                        let read = r.bytes().await.is_ok();
                        let ms = start.elapsed().as_secs_f64() * 1e3;
                        match status {
                            200 if read => t.ok.push(ms),
                            200 => t.transport += 1,
                            503 => {
                                t.refused.push(ms);
                                t.retry_after += retry as usize;
                                let pause = match (honour_retry_after, retry_s) {
                                    (true, Some(secs)) => Duration::from_secs(secs.min(10)),
                                    _ => pause_after_503,
                                };
                                tokio::time::sleep(pause).await;
                            }
                            500..=599 => t.other_5xx += 1,
                            _ => t.c4xx += 1,
                        }
                    }
                    Err(_) => t.transport += 1,
                }
            }
            t
        });
    }
    let mut all = Tally::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(t) = r {
            all.ok.extend(t.ok);
            all.refused.extend(t.refused);
            all.retry_after += t.retry_after;
            all.other_5xx += t.other_5xx;
            all.c4xx += t.c4xx;
            all.transport += t.transport;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    all.ok.sort_by(f64::total_cmp);
    all.refused.sort_by(f64::total_cmp);
    let answered = all.ok.len() + all.refused.len() + all.other_5xx + all.c4xx;
    LoadRunResult {
        clients,
        honour_retry_after,
        seconds,
        n: opts.n,
        requests: answered + all.transport,
        accepted: all.ok.len(),
        refused_503: all.refused.len(),
        refused_with_retry_after: all.retry_after,
        other_5xx: all.other_5xx,
        client_4xx: all.c4xx,
        transport_errors: all.transport,
        share_503: all.refused.len() as f64 / answered.max(1) as f64,
        accepted_p50_ms: percentile(&all.ok, 0.5),
        accepted_p99_ms: percentile(&all.ok, 0.99),
        accepted_max_ms: all.ok.last().copied().unwrap_or(f64::NAN),
        refused_p99_ms: percentile(&all.refused, 0.99),
        samples_per_s: (all.ok.len() * opts.n) as f64 / seconds,
    }
}

/// Asks process `pid` (a server started by the load run) to stop, as Ctrl-C would: SIGTERM on
/// Unix. Returns whether the signal was sent.
pub fn sigterm(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}
