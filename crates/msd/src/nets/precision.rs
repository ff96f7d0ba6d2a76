//! The numeric precision a network computes in: `f32`, or `bf16` (bfloat16: f32's 8-bit
//! exponent with an 8-bit significand, so about 2⁻⁸ ≈ 0.4% relative rounding per stored
//! value and no overflow risk where f32 has none).
//!
//! Only the network F runs in the chosen precision: [`crate::model::EdmModel`] keeps the EDM
//! preconditioning, the sampler state and every loss in f32 and casts at the network's
//! boundary (input to the weights' kind, output back to f32).

use serde::{Deserialize, Serialize};
use tch::Kind;

/// Precision of network evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout (the default; training's master weights are always f32).
    #[default]
    F32,
    /// bfloat16 weights and activations inside the network.
    Bf16,
}

impl Precision {
    /// Every precision, in order.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// The tensor kind of weights and activations.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    /// `"f32"` or `"bf16"` (as in configs, reports and `--precision`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                crate::Error::Invalid(format!("unknown precision `{s}` (expected f32 or bf16)"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{sample, Denoiser, SamplerConfig};
    use crate::model::EdmModel;
    use crate::nets::{MlpConfig, NetConfig};
    use crate::test_support::{random_model as model, rel_err, tiny_unet};
    use tch::{Device, Tensor};

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(Precision::Bf16.kind(), Kind::BFloat16);
        let e = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp16") && e.contains("bf16"), "{e}");
    }

    // Tolerance. bf16 keeps 8 significant bits: each stored value is rounded with relative
    // error ≤ 2⁻⁹ ≈ 0.2% (spacing 2⁻⁸ ≈ 0.4%). libtorch's CPU kernels accumulate products
    // and GroupNorm statistics in f32, so error enters once per stored activation and weight:
    // about 2·u per layer. The tiny UNet has ~16 such layers on its longest path; independent
    // roundings add like a random walk, √16·2·2⁻⁹ ≈ 1.6%, the worst case (all aligned)
    // 16·2·2⁻⁹ ≈ 6%. The tests require < 5% (relative L2 over the whole batch, where the
    // random-walk estimate applies) and that bf16 differs from f32 at all (it did compute in
    // bf16), which a path that silently stayed in f32 would fail.
    const TOL: f64 = 0.05;

    #[test]
    fn bf16_unet_denoiser_is_finite_and_close_to_f32() {
        let _rng = crate::rng_guard();
        let cfg = tiny_unet();
        let m32 = model(&cfg, 0);
        let m16 = m32.copy_in(Precision::Bf16).unwrap();
        assert_eq!(m16.precision(), Precision::Bf16);
        assert!(m16
            .vs
            .variables()
            .values()
            .all(|v| v.kind() == Kind::BFloat16));
        let x = Tensor::randn([6, 1, 8, 8], (Kind::Float, Device::Cpu));
        let sigma = Tensor::from_slice(&[0.05f32, 0.3, 1.0, 2.0, 10.0, 80.0]);
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1]);
        let d32 = m32.denoise(&x, &sigma, &labels);
        let d16 = m16.denoise(&x, &sigma, &labels);
        assert_eq!(d16.kind(), Kind::Float, "outputs come back in f32");
        assert_eq!(d16.isfinite().all().int64_value(&[]), 1);
        // Compare the network's part c_out·F (c_skip·x is exact in both).
        let skip = |m: &EdmModel| {
            let (c_skip, ..) = m.spec.precond.coefficients_t(&sigma);
            crate::diffusion::precond::broadcast_to(&c_skip, &x) * &x
        };
        let (f32_part, f16_part) = (&d32 - skip(&m32), &d16 - skip(&m16));
        let e = rel_err(&f16_part, &f32_part);
        assert!(e < TOL && e > 0.0, "relative error {e}");
        // The bottleneck path casts back too.
        let (_, b) = m16
            .denoise_with_bottleneck(&x, &sigma, &labels, false)
            .unwrap();
        assert_eq!(b.kind(), Kind::Float);
    }

    #[test]
    fn bf16_teacher_sampling_is_finite_and_close_to_f32() {
        let _rng = crate::rng_guard();
        let cfg = NetConfig::Mlp(MlpConfig {
            dim: 2,
            num_classes: 2,
            width: 32,
            depth: 2,
            noise_freqs: 4,
            cond: Default::default(),
        });
        let m32 = model(&cfg, 1);
        let m16 = m32.copy_in(Precision::Bf16).unwrap();
        let z = Tensor::randn([64, 2], (Kind::Float, Device::Cpu));
        let l = Tensor::arange(64, (Kind::Int64, Device::Cpu)).remainder(2);
        let sc = SamplerConfig {
            steps: 6,
            ..Default::default()
        };
        let (x32, x16) = (
            sample(&m32, &z, &l, &sc).unwrap(),
            sample(&m16, &z, &l, &sc).unwrap(),
        );
        assert_eq!(x16.isfinite().all().int64_value(&[]), 1);
        let e = rel_err(&x16, &x32);
        assert!(e < TOL && e > 0.0, "relative error {e}");
    }

    #[test]
    fn bf16_models_are_not_saved_and_convert_back() {
        let _rng = crate::rng_guard();
        let m = model(&tiny_unet(), 2);
        let mut lo = m.copy_in(Precision::Bf16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = lo.save_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bf16"), "{e}");
        lo.set_precision(Precision::F32);
        assert!(lo.vs.variables().values().all(|v| v.kind() == Kind::Float));
        lo.save_dir(dir.path()).unwrap();
    }

    #[test]
    fn mixed_precision_gradients_reach_the_f32_master_close_to_f32_gradients() {
        let _rng = crate::rng_guard();
        let cfg = tiny_unet();
        let master = model(&cfg, 3);
        let mut shadow = master.copy_in(Precision::Bf16).unwrap();
        let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
        let sigma = Tensor::from_slice(&[0.2f32, 0.5, 1.0, 3.0]);
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let loss = |m: &EdmModel| {
            (m.denoise_t(&x, &sigma, &labels, true) - &x)
                .square()
                .mean(Kind::Float)
        };
        loss(&master).backward();
        let want: Vec<(String, Tensor)> = master
            .vs
            .variables()
            .into_iter()
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
        tch::no_grad(|| {
            for (_, v) in master.vs.variables() {
                let _ = v.grad().zero_();
            }
        });
        loss(&shadow).backward();
        EdmModel::take_grads_from(&master, &shadow).unwrap();
        let (mut num, mut den) = (0.0, 0.0);
        for (n, g32) in &want {
            let got = master.vs.variables()[n].grad();
            num += (&got - g32)
                .to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
            den += g32
                .to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
            let sg = shadow.vs.variables()[n].grad();
            assert_eq!(
                sg.abs().max().double_value(&[]),
                0.0,
                "{n}: shadow gradient not cleared"
            );
        }
        let e = (num / den).sqrt();
        // A backward pass doubles the path length of the forward; allow twice the tolerance.
        assert!(e < 2.0 * TOL && e > 0.0, "relative gradient error {e}");
        // After a master update, sync brings the shadow along (to bf16 rounding).
        tch::no_grad(|| {
            for (_, mut v) in master.vs.variables() {
                let _ = v.f_add_(&v.ones_like()).unwrap();
            }
        });
        shadow.sync_from(&master).unwrap();
        for (n, v) in master.vs.variables() {
            let s = shadow.vs.variables()[&n].to_kind(Kind::Float);
            assert!(rel_err(&s, &v) < 2f64.powi(-8), "{n}");
        }
    }
}
