//! Limits that depend on the machine: the memory a sampling job would take, estimated from the
//! network's shapes, against the memory available (`MemAvailable` of `/proc/meminfo`), so that a
//! request that cannot fit is refused up front with the estimate instead of being OOM-killed
//! (or aborting on a failed allocation) minutes later.

use crate::nets::NetConfig;
use crate::{Error, Result};

/// Largest network width or channel count a config may ask for (an MLP layer of this width
/// already holds 2³² weights, 16 GiB in f32).
pub const MAX_WIDTH: i64 = 1 << 16;
/// Largest training or generation batch a config may ask for.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest count of generated examples a config may ask for (e.g. regression pairs per class).
pub const MAX_COUNT: usize = 1 << 20;
/// Largest number of sampler steps.
pub const MAX_STEPS: usize = 100_000;

/// Refuses a config number outside `lo..=hi` (or not finite); the error names `field` and the
/// allowed range.
pub fn check_range(field: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if v.is_finite() && v >= lo && v <= hi {
        return Ok(());
    }
    Err(Error::config(
        field,
        format!("must be a finite number in [{lo}, {hi}], got {v}"),
    ))
}

/// Refuses a config number that is not finite and > 0; the error names `field`.
pub fn check_positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        return Ok(());
    }
    Err(Error::config(
        field,
        format!("must be a finite number > 0, got {v}"),
    ))
}

/// Refuses a size outside `lo..=hi`; the error names `field` and the allowed range.
pub fn check_size(field: &str, v: u64, lo: u64, hi: u64) -> Result<()> {
    if (lo..=hi).contains(&v) {
        return Ok(());
    }
    Err(Error::config(
        field,
        format!("must be in {lo}..={hi}, got {v}"),
    ))
}

/// Memory the system can give without swapping, in bytes (`None` off Linux).
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A lower estimate of the bytes needed to run `net` on `n` samples in one batch without
/// gradients: the sample itself a few times over (noise, state, output) plus the activations
/// kept alive at once (every level's feature maps, which the UNet keeps for its skip
/// connections), doubled under classifier-free guidance (conditional and unconditional passes).
pub fn sampling_bytes(net: &NetConfig, n: u64, guided: bool) -> u64 {
    let floats_per_sample: u64 = match net {
        NetConfig::Mlp(c) => {
            let width = c.width.max(0) as u64;
            let depth = c.depth.max(0) as u64;
            6 * c.dim.max(0) as u64 + width * (depth + 2)
        }
        NetConfig::Unet(c) => {
            let sample = (c.in_channels * c.resolution * c.resolution).max(0) as u64;
            let blocks = c.blocks_per_level.max(0) as u64 + 2;
            let acts: u64 = c
                .channel_mult
                .iter()
                .enumerate()
                .map(|(l, &m)| {
                    let r = (c.resolution >> l).max(1) as u64;
                    (c.base_channels * m).max(0) as u64 * r * r * blocks
                })
                .sum();
            6 * sample + acts
        }
    };
    let guided = if guided { 2 } else { 1 };
    n.saturating_mul(floats_per_sample)
        .saturating_mul(4)
        .saturating_mul(guided)
}

/// Refuses work estimated at `bytes` when it is above the available memory; the message names
/// `what` (e.g. `--n 100000000`) and both figures.
pub fn check_fits(what: &str, bytes: u64) -> Result<()> {
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if bytes > avail {
        let gb = |b: u64| b as f64 / 1e9;
        return Err(Error::Invalid(format!(
            "{what} needs about {:.1} GB of memory (estimated from the network's shapes), more than the {:.1} GB available",
            gb(bytes),
            gb(avail)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::MlpConfig;

    #[test]
    fn estimates_grow_with_n_and_huge_jobs_are_refused() {
        let net = NetConfig::Mlp(MlpConfig {
            dim: 2,
            num_classes: 4,
            width: 128,
            depth: 4,
            noise_freqs: 4,
            cond: Default::default(),
        });
        let one = sampling_bytes(&net, 1, false);
        assert_eq!(one, 4 * (12 + 128 * 6));
        assert_eq!(sampling_bytes(&net, 1000, true), 2000 * one);
        assert_eq!(sampling_bytes(&net, u64::MAX, true), u64::MAX);
        if available_memory().is_some() {
            check_fits("--n 1", one).unwrap();
            let e = check_fits("--n 1000000000000", sampling_bytes(&net, 1 << 40, false))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--n 1000000000000") && e.contains("GB available"),
                "{e}"
            );
        }
    }
}
