//! The other side of `msd bench`: the PyTorch twin (`scripts/bench_unet.py`, run once per round
//! for the rows of that round) and the allocator child (this program again, under glibc's
//! default allocator policy). Both answer JSON on stdout.

use super::{BenchError, BenchOptions, Key};
use crate::config::RunConfig;
use crate::nets::{NetConfig, Precision};
use crate::runtime::{ALLOCATOR_ENV, TRIM_THRESHOLD};
use serde::{Deserialize, Serialize};
use std::process::Command;

#[derive(Deserialize)]
pub(crate) struct PeerRow {
    pub name: String,
    pub batch: i64,
    pub precision: Precision,
    pub ms: f64,
    #[serde(default)]
    pub compiled_ms: Option<f64>,
}

#[derive(Deserialize)]
pub(crate) struct PeerOut {
    pub params: i64,
    pub torch: String,
    pub rows: Vec<PeerRow>,
}

#[derive(Serialize)]
struct PeerKey<'a> {
    name: &'a str,
    batch: i64,
    precision: Precision,
}

fn failed(command: &str, msg: String) -> BenchError {
    BenchError::Command {
        command: command.into(),
        msg,
    }
}

/// Runs `scripts/bench_unet.py` once for `keys` and parses its JSON.
pub(crate) fn run_peer(
    cfg: &RunConfig,
    o: &BenchOptions,
    keys: &[Key],
    threads: i32,
) -> Result<PeerOut, BenchError> {
    let NetConfig::Unet(unet) = &cfg.model.net else {
        return Err(BenchError::Invalid(
            "the PyTorch twin mirrors the UNet only".into(),
        ));
    };
    let rows: Vec<PeerKey> = keys
        .iter()
        .map(|k| PeerKey {
            name: &k.0,
            batch: k.1,
            precision: k.2,
        })
        .collect();
    let py = &o.python;
    let out = Command::new(py)
        .arg("scripts/bench_unet.py")
        .arg("--config")
        .arg(serde_json::to_string(unet)?)
        .args(["--sigma-data", &cfg.model.precond.sigma_data.to_string()])
        .arg("--rows")
        .arg(serde_json::to_string(&rows)?)
        .args(["--reps", &o.reps.to_string()])
        .args(["--teacher-reps", &o.teacher_reps.to_string()])
        .args(["--teacher-steps", &o.teacher_steps.to_string()])
        .args(["--guidance", &cfg.distill.real_guidance.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--compile", &o.compile.join(",")])
        // The same allocator policy as ours, so the ratio compares the implementations.
        .env(
            "GLIBC_TUNABLES",
            format!("glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"),
        )
        .output()
        .map_err(|e| failed(&format!("{py} scripts/bench_unet.py"), e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            "scripts/bench_unet.py",
            format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| failed("scripts/bench_unet.py", format!("parsing its output: {e}")))
}

/// Runs `child` (this program in its allocator-child mode) under glibc's default allocator
/// policy and parses its `[(precision, ms)]` JSON.
pub(crate) fn allocator_child(mut child: Command) -> Result<Vec<(Precision, f64)>, BenchError> {
    let out = child
        .env(ALLOCATOR_ENV, "system")
        .output()
        .map_err(|e| failed("allocator child", format!("running it: {e}")))?;
    if !out.status.success() {
        return Err(failed(
            "allocator child",
            format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| failed("allocator child", format!("parsing its output: {e}")))
}
