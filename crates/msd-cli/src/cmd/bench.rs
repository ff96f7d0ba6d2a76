//! `msd bench`: times the UNet of a run config — forward at batch 1 and 64, a teacher train step
//! at batch 64 (forward, EDM loss, backward, AdamW with clipping), Heun-18 sampling (35 NFE)
//! against one-step generation at the same batch — and runs `scripts/bench_unet.py`, the
//! identical network in PyTorch, in the same run with the same thread count. Parameter counts
//! must agree; the ratios (ours / PyTorch) are printed and written to `bench.json`.

use anyhow::{bail, Context, Result};
use msd::config::RunConfig;
use msd::diffusion::precond::broadcast_to;
use msd::diffusion::{sample, SamplerConfig};
use msd::model::EdmModel;
use msd::nets::NetConfig;
use msd::teacher::per_sample_mean;
use msd::train::{AdamW, AdamWConfig};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Run config whose `model.net` (a UNet) is timed.
    #[arg(long, default_value = "configs/mnist.toml")]
    pub config: PathBuf,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Batch of the large-batch forward, train step and sampling.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Python with torch (default: $MSD_TORCH_PYTHON, set by scripts/with-torch.sh).
    #[arg(long)]
    pub python: Option<String>,
    /// Alternating rounds (ours, PyTorch, ours, ...); each figure is the best median over the
    /// rounds, which evens out load that changes during the run on a shared machine.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Skip the PyTorch peer.
    #[arg(long)]
    pub no_peer: bool,
    /// Where to write bench.json.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
}

const KEYS: [&str; 5] = [
    "forward_b1_ms",
    "forward_b_ms",
    "train_step_b_ms",
    "heun18_b_ms",
    "one_step_b_ms",
];

/// Keeps, for every timing key, the smaller of `best` and `new`.
fn keep_min(best: &mut Option<Value>, new: Value) {
    match best {
        None => *best = Some(new),
        Some(b) => {
            for k in KEYS {
                if let (Some(o), Some(n)) = (b[k].as_f64(), new[k].as_f64()) {
                    b[k] = json!(o.min(n));
                }
            }
        }
    }
}

/// Median wall time in milliseconds of `reps` runs of `f` after 2 warm-up runs.
pub fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn time_ours(model: &EdmModel, batch: i64, reps: usize) -> Value {
    let shape = model.spec.net.sample_shape();
    let opts = (Kind::Float, Device::Cpu);
    let input = |b: i64| {
        let mut s = vec![b];
        s.extend(&shape);
        Tensor::randn(s.as_slice(), opts)
    };
    let labels =
        |b: i64| Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(model.num_classes());
    let (x1, l1, s1) = (input(1), labels(1), Tensor::ones([1], opts));
    let (xb, lb, sb) = (input(batch), labels(batch), Tensor::ones([batch], opts));
    let fwd1 = median_ms(reps, || {
        let _ = tch::no_grad(|| model.denoise_t(&x1, &s1, &l1, false));
    });
    let fwdb = median_ms(reps, || {
        let _ = tch::no_grad(|| model.denoise_t(&xb, &sb, &lb, false));
    });
    let mut opt = AdamW::new(&model.vs, AdamWConfig::default());
    let sd = model.spec.precond.sigma_data;
    let train = median_ms(reps, || {
        let sigma = (Tensor::randn([batch], opts) * 1.2 - 1.2).exp();
        let noisy = &xb + xb.randn_like() * broadcast_to(&sigma, &xb);
        let d = model.denoise_t(&noisy, &sigma, &lb, true);
        let w = (sigma.square() + sd * sd) / (&sigma * sd).square();
        let loss = (w * per_sample_mean(&(d - &xb).square())).mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
    });
    let cfg = SamplerConfig::default();
    let few = reps.clamp(1, 3);
    let heun = median_ms(few, || {
        let _ = sample(model, &xb, &lb, &cfg).expect("unguided sampling");
    });
    let one = median_ms(reps, || {
        let _ = tch::no_grad(|| model.generate(&xb, &lb, cfg.sigma_max));
    });
    json!({ "params": model.num_params(), "forward_b1_ms": fwd1, "forward_b_ms": fwdb, "train_step_b_ms": train,
            "heun18_b_ms": heun, "one_step_b_ms": one })
}

/// Runs `scripts/bench_unet.py` once and parses its JSON.
fn run_peer(
    py: &str,
    unet: &msd::nets::UNetConfig,
    sigma_data: f64,
    batch: i64,
    reps: usize,
    threads: i32,
) -> Result<Value> {
    let out = std::process::Command::new(py)
        .arg("scripts/bench_unet.py")
        .arg("--config")
        .arg(serde_json::to_string(unet)?)
        .args(["--sigma-data", &sigma_data.to_string()])
        .args([
            "--batch",
            &batch.to_string(),
            "--reps",
            &reps.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .with_context(|| format!("running {py} scripts/bench_unet.py"))?;
    if !out.status.success() {
        bail!(
            "scripts/bench_unet.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the output of scripts/bench_unet.py")
}

pub fn run(a: Args) -> Result<()> {
    let cfg = RunConfig::load(&a.config)?;
    let NetConfig::Unet(unet) = &cfg.model.net else {
        bail!(
            "{}: msd bench times a UNet; this config has another network",
            a.config.display()
        );
    };
    let threads = tch::get_num_threads();
    tch::manual_seed(0);
    let model = EdmModel::from_spec(&cfg.model, Device::Cpu);
    let py = a
        .python
        .clone()
        .or_else(|| std::env::var("MSD_TORCH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let (mut ours, mut peer) = (None, None);
    for _ in 0..a.rounds.max(1) {
        keep_min(&mut ours, time_ours(&model, a.batch, a.reps));
        if !a.no_peer {
            keep_min(
                &mut peer,
                run_peer(
                    &py,
                    unet,
                    cfg.model.precond.sigma_data,
                    a.batch,
                    a.reps,
                    threads,
                )?,
            );
        }
    }
    let ours = ours.unwrap_or_default();
    let mut report = json!({ "config": a.config, "batch": a.batch, "threads": threads, "reps": a.reps, "rounds": a.rounds.max(1),
                             "hardware": crate::cmd::eval::hardware(), "ours": ours });
    if let Some(peer) = peer {
        if peer["params"] != ours["params"] {
            bail!(
                "parameter counts differ: ours {} vs PyTorch {}",
                ours["params"],
                peer["params"]
            );
        }
        let mut ratios = serde_json::Map::new();
        for k in KEYS {
            if let (Some(o), Some(p)) = (ours[k].as_f64(), peer[k].as_f64()) {
                ratios.insert(k.trim_end_matches("_ms").to_string(), json!(o / p));
            }
        }
        report["pytorch"] = peer;
        report["ratio_ours_over_pytorch"] = Value::Object(ratios);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    msd::train::checkpoint::write_json_atomic(&a.out.join("bench.json"), &report)?;
    let b = a.batch;
    println!(
        "UNet {} parameters, {threads} threads, {}, best of {} alternating rounds of median-of-{} runs",
        ours["params"],
        report["hardware"].as_str().unwrap_or(""),
        a.rounds.max(1),
        a.reps
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "", "msd (ms)", "torch (ms)", "ratio"
    );
    for (k, name) in [
        ("forward_b1_ms", "forward, batch 1".to_string()),
        ("forward_b_ms", format!("forward, batch {b}")),
        ("train_step_b_ms", format!("train step, batch {b}")),
        ("heun18_b_ms", format!("Heun-18 (35 NFE), batch {b}")),
        ("one_step_b_ms", format!("one step (1 NFE), batch {b}")),
    ] {
        let o = report["ours"][k].as_f64().unwrap_or(f64::NAN);
        let p = report["pytorch"][k].as_f64().unwrap_or(f64::NAN);
        println!("{name:<28} {o:>10.1} {p:>10.1} {:>8.2}", o / p);
    }
    let o = &report["ours"];
    println!(
        "Heun-18 / one-step (msd): {:.1}×",
        o["heun18_b_ms"].as_f64().unwrap_or(f64::NAN)
            / o["one_step_b_ms"].as_f64().unwrap_or(f64::NAN)
    );
    println!("report: {}", a.out.join("bench.json").display());
    Ok(())
}
