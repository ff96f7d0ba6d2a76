//! Consistency checks and fixed rules of distillation that no single config field can express:
//!
//! - the regression pairs y = ODE(σ_max·z) must start from the generator's σ_max
//!   ([`check_pairs_sigma`]; [`crate::run::ensure_pairs`] draws them at `distill.sigma_max`);
//! - classifier-free guidance (`distill.real_guidance`, `sampler.guidance` ≠ 1) needs a teacher
//!   trained with label dropout, else its null-label output is an untrained embedding
//!   ([`check_guidance`]; against the teacher actually trained:
//!   [`crate::config::RunConfig::check_teacher_record`]);
//! - the generator and the fake score run with dropout 0 whatever the teacher's network config
//!   says, as in DMD2 ([`without_dropout`], [`distillation_copy`]).

use super::pairs::RegressionPairs;
use crate::model::{EdmModel, ModelSpec};
use crate::nets::NetConfig;
use crate::teacher::TeacherTrainConfig;
use crate::{Error, Result};

/// `spec` with every dropout rate set to 0 (the weights are unaffected: dropout has none).
pub fn without_dropout(spec: &ModelSpec) -> ModelSpec {
    let mut s = spec.clone();
    match &mut s.net {
        NetConfig::Unet(c) => c.dropout = 0.0,
        NetConfig::Mlp(_) => {}
    }
    s
}

/// A trainable copy of `src` (same weights) built with [`without_dropout`]: how the generator,
/// its EMA and the fake score are made from the teacher or a TSM result.
pub fn distillation_copy(src: &EdmModel) -> Result<EdmModel> {
    let mut m = EdmModel::from_spec(&without_dropout(&src.spec), src.device());
    tch::no_grad(|| m.vs.copy(&src.vs))?;
    Ok(m)
}

/// Refuses regression pairs drawn from another σ_max than the generator's: y = ODE(σ·z) and
/// G(z) = D(σ_max·z; σ_max) only describe the same map when σ = σ_max.
pub fn check_pairs_sigma(pairs: &RegressionPairs, generator_sigma_max: f64) -> Result<()> {
    if pairs.sigma_max == generator_sigma_max {
        return Ok(());
    }
    Err(Error::config(
        "distill.sigma_max",
        format!(
            "the regression pairs were drawn from σ_max = {} but the generator starts from σ_max = {generator_sigma_max}; \
             draw the pairs again (delete pairs.safetensors)",
            pairs.sigma_max
        ),
    ))
}

/// Refuses classifier-free guidance of a teacher that never learned the null label: guidance
/// (`distill.real_guidance` or `sampler.guidance` ≠ 1) needs `teacher.label_dropout` > 0 in the
/// teacher's recorded training config.
pub fn check_guidance(
    real_guidance: f64,
    sampler_guidance: f64,
    teacher: &TeacherTrainConfig,
) -> Result<()> {
    if teacher.label_dropout > 0.0 {
        return Ok(());
    }
    for (field, g) in [
        ("distill.real_guidance", real_guidance),
        ("sampler.guidance", sampler_guidance),
    ] {
        if g != 1.0 {
            return Err(Error::config(
                field,
                format!(
                    "guidance {g} ≠ 1 needs a teacher trained with label dropout, but its training config has \
                     teacher.label_dropout = {}; set the guidance to 1 or train the teacher with label_dropout > 0",
                    teacher.label_dropout
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn unet(dropout: f64) -> ModelSpec {
        ModelSpec {
            net: NetConfig::Unet(crate::test_support::plain_tiny_unet(2, dropout)),
            precond: Default::default(),
        }
    }

    #[test]
    fn distillation_copies_have_no_dropout_and_the_teachers_weights() {
        let _g = crate::rng_guard();
        tch::manual_seed(0);
        let teacher = EdmModel::from_spec(&unet(0.5), Device::Cpu);
        // Perturb every weight: some layers start at zero, where dropout would change nothing.
        tch::no_grad(|| {
            for mut v in teacher.vs.trainable_variables() {
                let _ = v.g_add_(&(v.randn_like() * 0.1));
            }
        });
        let copy = distillation_copy(&teacher).unwrap();
        match &copy.spec.net {
            NetConfig::Unet(c) => assert_eq!(c.dropout, 0.0),
            _ => unreachable!(),
        }
        let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let s = Tensor::full([3], 2.0, (Kind::Float, Device::Cpu));
        let l = Tensor::from_slice(&[0i64, 1, 0]);
        // Train mode: the copy is deterministic (no dropout) and equals the teacher in eval mode.
        let a = copy.denoise_t(&x, &s, &l, true);
        let b = copy.denoise_t(&x, &s, &l, true);
        let t = teacher.denoise_t(&x, &s, &l, false);
        assert!(a.equal(&b), "dropout still active in the copy");
        assert!(a.allclose(&t, 1e-5, 1e-6, false), "weights not copied");
        // The teacher itself does drop (so the test above can fail).
        let t1 = teacher.denoise_t(&x, &s, &l, true);
        let t2 = teacher.denoise_t(&x, &s, &l, true);
        assert!(
            !t1.equal(&t2),
            "the teacher's dropout should be active in train mode"
        );
    }

    #[test]
    fn pairs_from_another_sigma_max_are_refused() {
        let p = RegressionPairs {
            z: Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)),
            labels: Tensor::zeros([1], (Kind::Int64, Device::Cpu)),
            y: Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)),
            sigma_max: 80.0,
            features: None,
        };
        assert!(check_pairs_sigma(&p, 80.0).is_ok());
        let e = check_pairs_sigma(&p, 40.0).unwrap_err().to_string();
        assert!(e.contains("distill.sigma_max") && e.contains("80"), "{e}");
    }

    #[test]
    fn guidance_without_label_dropout_is_refused() {
        let mut t = TeacherTrainConfig {
            steps: 1,
            batch_size: 1,
            optimizer: Default::default(),
            ema_decay: 0.9,
            label_dropout: 0.0,
            sigma: Default::default(),
            checkpoint_every: 1,
            log_every: 1,
        };
        assert!(check_guidance(1.0, 1.0, &t).is_ok());
        let e = check_guidance(1.25, 1.0, &t).unwrap_err().to_string();
        assert!(e.contains("distill.real_guidance"), "{e}");
        let e = check_guidance(1.0, 2.0, &t).unwrap_err().to_string();
        assert!(e.contains("sampler.guidance"), "{e}");
        t.label_dropout = 0.1;
        assert!(check_guidance(1.25, 2.0, &t).is_ok());
    }
}
