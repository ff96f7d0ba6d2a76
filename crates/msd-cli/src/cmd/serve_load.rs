//! `msd serve-bench --load`: the overload run ([`msd_serve::load`]) against `msd serve` (this
//! binary) started as a child process with the same limits. Writes markdown (`--out`) and JSON
//! (`--json`).

use crate::cmd::serve_bench::Args;
use anyhow::{bail, Context, Result};
use msd_serve::bench::LoadOptions;
use msd_serve::load::{markdown, overload, OverloadEvent, OverloadOptions};
use std::time::Duration;

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
        crate::device::name(a.device),
    ];
    if let Some(t) = threads {
        server_args.extend(["--threads".into(), t.to_string()]);
    }
    server_args.extend(a.limits.to_args());
    let o = OverloadOptions {
        program: std::env::current_exe().context("finding the msd binary")?,
        server_args,
        bundle: a.bundle.clone(),
        clients: a.clients,
        seconds: a.seconds,
        settle_s: a.settle_s,
        pause_after_503_ms: a.pause_after_503_ms,
        honour_retry_after: !a.ignore_retry_after,
        load: LoadOptions {
            requests: usize::MAX,
            n: a.n,
            format: a.format.clone(),
            num_classes,
            timeout: Duration::from_secs(120),
        },
    };
    let rt = msd_serve::server::runtime().context("starting the async runtime")?;
    let report = overload(&o, &rt, |e| match e {
        OverloadEvent::Started { pid, addr } => println!("server pid {pid} on {addr}"),
        OverloadEvent::Idle { rss_mb } => println!("idle RSS {rss_mb:.0} MB"),
    })?;
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

pub(crate) fn write(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
