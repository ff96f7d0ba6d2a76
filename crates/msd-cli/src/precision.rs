//! `--precision f32|bf16`: the clap face of [`msd::nets::Precision`].

use msd::nets::Precision;

/// Precision of network evaluation (the sampler, preconditioning and metrics stay f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16 weights and activations inside the network.
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}
