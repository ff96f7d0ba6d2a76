//! Parses `--device` values: `cpu`, `cuda`, `cuda:N` (the `value_parser` of every `--device`
//! flag, so commands receive a `tch::Device`).

use anyhow::{bail, Result};
use tch::Device;

/// Parses a device name, refusing CUDA when the linked libtorch has none.
pub fn parse(s: &str) -> Result<Device> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::Cuda(n),
            None => bail!("unknown device `{s}` (expected cpu, cuda or cuda:N)"),
        },
    };
    if let Device::Cuda(n) = d {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            bail!("CUDA device {n} is not available ({count} CUDA devices visible)");
        }
    }
    Ok(d)
}

/// The `--device` spelling of `d` (what [`parse`] reads back), for child processes.
pub fn name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}
