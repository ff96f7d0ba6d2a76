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

/// What the throughput benchmark (`msd serve-bench`) measures.
#[derive(Clone, Debug)]
pub struct LevelsOptions {
    /// Concurrency levels, each ≥ 1.
    pub concurrency: Vec<usize>,
    /// Samples generated by each raw measurement.
    pub raw_samples: usize,
    /// What each request asks for, and requests per level.
    pub load: LoadOptions,
}

/// Serves `served` in-process with `cfg` on a free loopback port, warms it up, then for each
/// concurrency level measures the raw generator on `reference`'s students (on this thread, while
/// the server is idle) and right after it the HTTP load; `on` hears of each pair as it is
/// measured. The server is stopped at the end.
pub fn levels(
    reference: &mut msd::bundle::Bundle,
    served: msd::bundle::Bundle,
    cfg: &crate::ServeConfig,
    o: &LevelsOptions,
    rt: &tokio::runtime::Runtime,
    mut on: impl FnMut(&RawResult, &LevelResult),
) -> Result<Vec<(RawResult, LevelResult)>, crate::ServeError> {
    let server = crate::Server::new(served, cfg.clone())?;
    let mut raw = || {
        let (r, models) = raw_throughput(
            std::mem::take(&mut reference.students),
            &reference.manifest.partition,
            reference.manifest.sigma_max,
            cfg.max_batch,
            o.raw_samples,
        );
        reference.students = models;
        r
    };
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        // Warm-up: connections, allocator, first batches.
        let most = o.concurrency.iter().max().copied().unwrap_or(1);
        let warm = LoadOptions {
            requests: 2 * most,
            ..o.load.clone()
        };
        load_level(addr, most, &warm).await;
        let mut rows = Vec::new();
        for &c in &o.concurrency {
            // The raw generator runs on this (blocking) thread while the server is idle.
            let r = raw();
            let l = load_level(addr, c, &o.load).await;
            on(&r, &l);
            rows.push((r, l));
        }
        let _ = stop.send(());
        let _ = handle.await;
        Ok(rows)
    })
}

/// What the markdown report of [`levels`] says about the run.
#[derive(Clone, Debug)]
pub struct LevelsSetup {
    pub n: usize,
    pub format: String,
    pub hardware: String,
    pub bundle: String,
    pub students: usize,
    pub params: i64,
    pub max_batch: usize,
    /// As given (milliseconds).
    pub max_wait_ms: f64,
    pub queue_cap: usize,
    pub requests: usize,
}

/// The report of [`levels`]: the setup, then [`table`].
pub fn levels_markdown(s: &LevelsSetup, rows: &[(RawResult, LevelResult)]) -> String {
    format!(
        "## `msd serve-bench --n {n} --format {f} --max-wait-ms {mw}`\n\n\
         - hardware: {hw}; client and server share the machine (loopback); {k} batcher threads\n\
         - bundle: `{b}` ({k} students, {params} parameters in all)\n\
         - server: max batch {mb}, max wait {mw} ms, queue cap {qc}\n\
         - load: {r} requests per level, {n} samples per request, class i mod C, seed i, \
         after a warm-up\n\
         - raw generator: the students called directly, one thread each, batches of {mb}, \
         {rs} samples, measured right before each level\n\n{t}",
        n = s.n,
        f = s.format,
        hw = s.hardware,
        b = s.bundle,
        k = s.students,
        params = s.params,
        mb = s.max_batch,
        mw = s.max_wait_ms,
        qc = s.queue_cap,
        r = s.requests,
        rs = rows.first().map_or(0, |(r, _)| r.samples),
        t = table(rows),
    )
}
