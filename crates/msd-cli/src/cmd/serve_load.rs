//! `msd serve-bench --load`: the overload run. Starts `msd serve` (this binary) as a child
//! process on a free loopback port with the same limits, warms it up, reads its idle memory,
//! sends `--clients` concurrent clients for `--seconds`, waits `--settle-s` idle, reads its memory
//! again, and stops it with SIGTERM. Writes markdown (`--out`) and JSON (`--json`).

use crate::cmd::serve_bench::Args;
use anyhow::{bail, Context, Result};
use msd_serve::bench::{load_run, LoadOptions, LoadRunResult};
use msd_serve::memory::{rss_of, Rss};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    addr: std::net::SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        msd_serve::bench::sigterm(self.child.id());
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

fn start_server(args: &[String]) -> Result<ServerProcess> {
    let exe = std::env::current_exe().context("finding the msd binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting `msd serve`")?;
    let out = child.stdout.take().context("no stdout of `msd serve`")?;
    let mut line = String::new();
    let mut reader = BufReader::new(out);
    reader
        .read_line(&mut line)
        .context("reading the address of `msd serve`")?;
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
            bail!("`msd serve` did not start (its first line: {line:?})")
        }
    }
}

/// A plain HTTP/1.1 GET (connection: close); the whole answer as text.
fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
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

pub fn run(a: &Args, threads: Option<i32>) -> Result<()> {
    if a.clients == 0 || a.clients > 4096 {
        bail!("--clients must be between 1 and 4096, got {}", a.clients);
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 3600.0) {
        bail!("--seconds must be between 0 and 3600, got {}", a.seconds);
    }
    if !(a.settle_s.is_finite() && (0.0..=600.0).contains(&a.settle_s)) {
        bail!("--settle-s must be between 0 and 600, got {}", a.settle_s);
    }
    let bundle = msd::bundle::Bundle::load(&a.bundle, tch::Device::Cpu)
        .with_context(|| format!("--bundle {}", a.bundle.display()))?;
    let num_classes = bundle.manifest.partition.num_conditions;
    drop(bundle);
    let mut server_args: Vec<String> = vec![
        "serve".into(),
        "--bundle".into(),
        a.bundle.display().to_string(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--device".into(),
        a.device.clone(),
    ];
    if let Some(t) = threads {
        server_args.extend(["--threads".into(), t.to_string()]);
    }
    server_args.extend(a.limits.to_args());
    let load_before = loadavg();
    let server = start_server(&server_args)?;
    let pid = server.child.id();
    println!("server pid {pid} on {}", server.addr);
    let opts = LoadOptions {
        requests: usize::MAX,
        n: a.n,
        format: a.format.clone(),
        num_classes,
        timeout: Duration::from_secs(120),
    };
    let rt = crate::cmd::serve::runtime()?;
    // Warm-up: one request per class, then idle long enough for the server to trim.
    rt.block_on(load_run(
        server.addr,
        num_classes.min(8),
        Duration::from_millis(1),
        Duration::ZERO,
        false,
        &opts,
    ));
    std::thread::sleep(Duration::from_secs(2));
    let read = || rss_of(pid).context("reading the server's /proc/<pid>/status");
    let idle: Rss = read()?;
    println!("idle RSS {:.0} MB", mb(idle.current));
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
        a.clients,
        Duration::from_secs_f64(a.seconds),
        Duration::from_millis(a.pause_after_503_ms),
        !a.ignore_retry_after,
        &opts,
    ));
    std::thread::sleep(Duration::from_secs_f64(a.settle_s));
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
    let report = LoadReport {
        machine: format!(
            "{}, {} cores seen",
            crate::cmd::eval::hardware(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        load_average_before: load_before,
        load_average_after: load_after,
        bundle: a.bundle.display().to_string(),
        server_args,
        rss_idle_mb: mb(idle.current),
        rss_sampled_max_mb: mb(max.load(Ordering::Relaxed)),
        rss_peak_mb: mb(after.peak),
        rss_after_mb: mb(after.current),
        rss_after_over_idle: after.current as f64 / idle.current.max(1) as f64,
        settle_s: a.settle_s,
        pause_after_503_ms: a.pause_after_503_ms,
        chunk_seconds,
        result,
    };
    let md = markdown(&report);
    println!("\n{md}");
    if let Some(out) = &a.out {
        write(out, md.as_bytes())?;
        println!("report: {}", out.display());
    }
    if let Some(out) = &a.json {
        let mut j = serde_json::to_vec_pretty(&report)?;
        j.push(b'\n');
        write(out, &j)?;
        println!("json: {}", out.display());
    }
    Ok(())
}

fn write(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
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
