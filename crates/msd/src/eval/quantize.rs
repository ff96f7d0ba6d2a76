//! Generated images are scored as the 8-bit images they would be saved as: clamped to [−1, 1]
//! and rounded to the 256 levels of a byte, exactly as EDM's and DMD2's evaluations do before
//! computing features. The feature network only ever saw 8-bit real images, and one-step
//! students overshoot [−1, 1] by a model-dependent amount, so scoring raw values would bias
//! comparisons between models. Every evaluation path goes through [`quantize_u8`] (the metrics
//! of [`super::image_metrics`] and the reference of [`super::Reference`]), and the picture
//! writers use [`to_u8`], so what is scored is what is seen.
//!
//! Real images decoded from bytes (`b / 127.5 − 1`, see `data/images.rs`) are fixed points: the
//! round trip uses the same float operations and gives back the same bits.

use crate::Result;
use tch::{Device, Kind, Tensor};

/// How a generated set is turned into images before features; recorded in every report.
pub const QUANTIZATION: &str = "uint8: clamp to [-1, 1], round((x + 1) * 127.5) to 0..=255";

/// `x`: any shape, values nominally in [−1, 1] → bytes (`Kind::Uint8`, same shape, on the CPU):
/// `round((clamp(x, −1, 1) + 1) · 127.5)`. NaN is refused (it has no byte).
pub fn to_u8(x: &Tensor) -> Result<Tensor> {
    let x = x.to_device(Device::Cpu).to_kind(Kind::Float);
    if x.isnan().any().int64_value(&[]) != 0 {
        return Err(crate::Error::Invalid(
            "generated images contain NaN; they cannot be scored as 8-bit images".into(),
        ));
    }
    Ok(((x.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8))
}

/// Bytes (`Kind::Uint8`, any shape) → floats in [−1, 1]: `b / 127.5 − 1` (the data readers' map).
pub fn from_u8(b: &Tensor) -> Tensor {
    b.to_kind(Kind::Float) / 127.5 - 1.0
}

/// `x` as an 8-bit image would be: `from_u8(to_u8(x))`, `Kind::Float` on the CPU, same shape.
pub fn quantize_u8(x: &Tensor) -> Result<Tensor> {
    Ok(from_u8(&to_u8(x)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_rounds_and_keeps_real_bytes_bit_exact() {
        let x = Tensor::from_slice(&[-3.0f32, -1.0, -0.999, 0.0, 0.001, 0.5, 1.0, 1.7]);
        let b: Vec<u8> = Vec::try_from(to_u8(&x).unwrap()).unwrap();
        // (x + 1)·127.5: 0, 0, 0.1275 → 0, 127.5 → 128 (half to even), 127.6275 → 128,
        // 191.25 → 191, 255, clamped 255.
        assert_eq!(b, vec![0, 0, 0, 128, 128, 191, 255, 255]);
        // Every byte decoded as the data readers decode it survives the round trip exactly.
        let all: Vec<u8> = (0..=255).collect();
        let real = Tensor::from_slice(&all).to_kind(Kind::Float) / 127.5 - 1.0;
        let back = quantize_u8(&real).unwrap();
        assert!(real.equal(&back));
        // Idempotent.
        let q = quantize_u8(&x).unwrap();
        assert!(q.equal(&quantize_u8(&q).unwrap()));
        assert!(to_u8(&Tensor::from_slice(&[f32::NAN])).is_err());
    }
}
