//! The load benchmark: samples per second served over HTTP on loopback at increasing
//! concurrency, with p50/p99 request latency, against the raw batched generator (the students
//! called directly, one thread per student as in the server, in batches of the server's
//! `max_batch`) measured in the same run.

use crate::noise::noise;
use msd::model::EdmModel;
use msd::partition::Partition;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Raw generator throughput.
#[derive(Clone, Debug)]
pub struct RawResult {
    pub batch: usize,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_s: f64,
    /// CPU seconds the whole process used meanwhile (NaN where unknown).
    pub cpu_seconds: f64,
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; 100 Hz
/// ticks), or `None` elsewhere.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn cpu_since(start: Option<f64>) -> f64 {
    match (start, process_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    }
}

/// One concurrency level of the HTTP load.
#[derive(Clone, Debug)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub ok: usize,
    /// Answers other than 200 (e.g. 503 when queues are full).
    pub errors: usize,
    pub samples: usize,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU seconds the whole process (server and clients) used meanwhile (NaN where unknown).
    pub cpu_seconds: f64,
}

/// Calls the students directly, as the server's batchers do: one thread per student (each owning
/// its model), batches of `batch` samples of the student's own classes, `total` samples in all
/// after one warm-up batch each; the noise is drawn beforehand, the outputs are copied back to
/// host memory. Returns the students for reuse.
pub fn raw_throughput(
    students: Vec<EdmModel>,
    partition: &Partition,
    sigma_max: f64,
    batch: usize,
    total: usize,
) -> (RawResult, Vec<EdmModel>) {
    let k = students.len().max(1);
    let per_student = total.div_ceil(batch * k).max(1);
    let start = Arc::new(std::sync::Barrier::new(k + 1));
    let handles: Vec<_> = students
        .into_iter()
        .enumerate()
        .map(|(id, m)| {
            let own = partition.classes_of(id);
            let labels: Vec<i64> = (0..batch).map(|i| own[i % own.len().max(1)]).collect();
            let start = start.clone();
            std::thread::spawn(move || {
                let shape = m.spec.net.sample_shape();
                let mut full = vec![batch as i64];
                full.extend(&shape);
                let z = noise(batch, &shape, id as u64);
                let run = || {
                    let device = m.device();
                    let zt = Tensor::from_slice(&z)
                        .view(full.as_slice())
                        .to_device(device);
                    let lt = Tensor::from_slice(&labels).to_device(device);
                    let x = m
                        .generate(&zt, &lt, sigma_max)
                        .to_device(Device::Cpu)
                        .to_kind(Kind::Float)
                        .contiguous()
                        .view(-1);
                    Vec::<f32>::try_from(&x).map(|v| v.len()).unwrap_or(0)
                };
                tch::no_grad(|| {
                    run();
                    start.wait();
                    for _ in 0..per_student {
                        run();
                    }
                });
                m
            })
        })
        .collect();
    start.wait();
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let models: Vec<EdmModel> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    let seconds = t0.elapsed().as_secs_f64();
    let samples = per_student * batch * k;
    (
        RawResult {
            batch,
            samples,
            seconds,
            samples_per_s: samples as f64 / seconds,
            cpu_seconds: cpu_since(cpu0),
        },
        models,
    )
}

/// What the HTTP load sends.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Requests per concurrency level.
    pub requests: usize,
    /// Samples per request.
    pub n: usize,
    /// `"npy"` or `"png"`.
    pub format: String,
    pub num_classes: usize,
    /// Gives up on a level after this long.
    pub timeout: Duration,
}

/// Sends `opts.requests` requests from `concurrency` clients that each wait for their answer
/// before sending the next; request i asks for class i mod C with seed i.
pub async fn load_level(addr: SocketAddr, concurrency: usize, opts: &LoadOptions) -> LevelResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(opts.timeout)
        .build()
        .unwrap_or_default();
    let url = format!("http://{addr}/v1/generate");
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, next, opts) = (client.clone(), url.clone(), next.clone(), opts.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= opts.requests || t0.elapsed() > opts.timeout {
                    break;
                }
                let body = format!(
                    r#"{{"class": {}, "n": {}, "seed": {i}, "format": "{}"}}"#,
                    i % opts.num_classes.max(1),
                    opts.n,
                    opts.format
                );
                let t = Instant::now();
                let ok = match client.post(&url).body(body).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok((l, e)) = r {
            lat.extend(l);
            errors += e;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize]
        }
    };
    let ok = lat.len();
    LevelResult {
        concurrency,
        requests: ok + errors,
        ok,
        errors,
        samples: ok * opts.n,
        seconds,
        samples_per_s: (ok * opts.n) as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        cpu_seconds: cpu_since(cpu0),
    }
}

/// A markdown table: each level with the raw throughput measured right before it, the ratio of
/// wall-clock throughputs, and the ratio of samples per CPU-second (which a busy shared machine
/// distorts less: there, more runnable threads get a larger share of the cores).
pub fn table(rows: &[(RawResult, LevelResult)]) -> String {
    let mut s = String::from(
        "| concurrency | requests (ok / err) | samples/s served | p50 ms | p99 ms | raw samples/s (just before) | ratio to raw | samples per CPU-s: served / raw |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (raw, l) in rows {
        let served_cpu = l.samples as f64 / l.cpu_seconds;
        let raw_cpu = raw.samples as f64 / raw.cpu_seconds;
        s.push_str(&format!(
            "| {} | {} / {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1}% | {:.0} / {:.0} = {:.1}% |\n",
            l.concurrency,
            l.ok,
            l.errors,
            l.samples_per_s,
            l.p50_ms,
            l.p99_ms,
            raw.samples_per_s,
            100.0 * l.samples_per_s / raw.samples_per_s,
            served_cpu,
            raw_cpu,
            100.0 * served_cpu / raw_cpu,
        ));
    }
    s
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
