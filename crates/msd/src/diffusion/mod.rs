//! The EDM diffusion core: preconditioning, noise levels, the denoiser abstraction, guidance and
//! samplers.

pub mod denoiser;
pub mod guidance;
pub mod precond;
pub mod sampler;
pub mod sigma;

pub use denoiser::Denoiser;
pub use guidance::Guided;
pub use precond::EdmPrecond;
pub use sampler::{sample, SamplerConfig, SamplerMethod};
pub use sigma::{karras_sigmas, loss_weight, KarrasGrid, SigmaDistribution};
