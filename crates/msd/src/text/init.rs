//! Starting a prompt-conditional network from a class-conditional one (the shipped MNIST teacher)
//! instead of from scratch: every weight but the condition input is copied, and the new
//! projection `cond(e) = W·e + b` is fitted so that it reproduces the class network's label
//! table on the mean caption embedding of each digit and its null row on the null embedding:
//! `b = label[C]` (the zero vector maps to the bias) and `W = (L − b)ᵀ·pinv(M)ᵀ`, the
//! minimum-norm solution of `W·m_c = label[c] − b` for the class means `M = [m_0 … m_{C−1}]`.
//! Training then only has to learn what the words add beyond the digit (thickness, slant, size).

use crate::model::EdmModel;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// What [`init_from_class_model`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct InitReport {
    /// Weights copied unchanged.
    pub copied: usize,
    /// Largest |W·m_c + b − label[c]| over classes and channels (the fit's residual).
    pub fit_residual: f64,
}

/// Copies `class` into `text` (all but the condition input) and fits `text`'s projection to
/// `class`'s label table on `class_means` (`[C, dim]`, C = the class network's classes).
pub fn init_from_class_model(
    text: &mut EdmModel,
    class: &EdmModel,
    class_means: &Tensor,
) -> Result<InitReport> {
    if !class.spec.net.cond().is_class() || text.spec.net.cond().is_class() {
        return Err(Error::Invalid(
            "init: needs a class-conditional source and an embedding-conditioned target".into(),
        ));
    }
    let copied = text.copy_shared_from(class)?.len();
    let cv = class.vs.variables();
    let table = cv
        .get("label.weight")
        .ok_or_else(|| Error::Invalid("init: the class network has no label.weight".into()))?
        .to_kind(Kind::Double);
    let c = class.num_classes();
    if class_means.size() != [c, text.spec.net.cond().embedding_dim().unwrap_or(-1)] {
        return Err(Error::Invalid(format!(
            "init: class means {:?} for {c} classes of the embedding width",
            class_means.size()
        )));
    }
    let null = table.get(c);
    let target = table.narrow(0, 0, c) - null.unsqueeze(0);
    let m = class_means.to_kind(Kind::Double);
    let w = m.pinverse(1e-10).matmul(&target).tr(); // [width, dim]
    let fit_residual = (m.matmul(&w.tr()) - &target).abs().max().double_value(&[]);
    let tv = text.vs.variables();
    let (Some(tw), Some(tb)) = (tv.get("cond_proj.weight"), tv.get("cond_proj.bias")) else {
        return Err(Error::Invalid(
            "init: the text network has no cond_proj".into(),
        ));
    };
    if tw.size() != w.size() {
        return Err(Error::Invalid(format!(
            "init: cond_proj.weight is {:?}, the fit {:?}",
            tw.size(),
            w.size()
        )));
    }
    tch::no_grad(|| -> Result<()> {
        tw.shallow_clone().f_copy_(&w.to_kind(tw.kind()))?;
        tb.shallow_clone().f_copy_(&null.to_kind(tb.kind()))?;
        Ok(())
    })?;
    Ok(InitReport {
        copied,
        fit_residual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Denoiser, EdmPrecond};
    use crate::nets::{Conditioning, MlpConfig, NetConfig};
    use tch::Device;

    fn mlp(cond: Conditioning) -> NetConfig {
        NetConfig::Mlp(MlpConfig {
            dim: 2,
            num_classes: 3,
            width: 16,
            depth: 2,
            noise_freqs: 4,
            cond,
        })
    }

    #[test]
    fn the_text_model_on_a_class_mean_reproduces_the_class_model_on_that_class() {
        let _g = crate::rng_guard();
        tch::manual_seed(0);
        let class = EdmModel::new(
            &mlp(Conditioning::Class),
            EdmPrecond::default(),
            Device::Cpu,
        );
        let mut text = EdmModel::new(
            &mlp(Conditioning::Embedding { dim: 5 }),
            EdmPrecond::default(),
            Device::Cpu,
        );
        let means = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
        let r = init_from_class_model(&mut text, &class, &means).unwrap();
        assert!(r.fit_residual < 1e-8, "{r:?}");
        assert_eq!(r.copied + 2, text.vs.variables().len());
        let x = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
        let s = Tensor::full([4], 0.7, (Kind::Float, Device::Cpu));
        for c in 0..3i64 {
            let want = class.denoise(&x, &s, &Tensor::full([4], c, (Kind::Int64, Device::Cpu)));
            let got = text.denoise(&x, &s, &means.get(c).unsqueeze(0).expand([4, 5], false));
            let err = (got - want).abs().max().double_value(&[]);
            assert!(err < 1e-4, "class {c}: {err}");
        }
        // The null embedding is the class model's null label.
        let want = class.denoise(&x, &s, &Tensor::full([4], 3i64, (Kind::Int64, Device::Cpu)));
        let got = text.denoise(&x, &s, &Tensor::zeros([4, 5], (Kind::Float, Device::Cpu)));
        assert!((got - want).abs().max().double_value(&[]) < 1e-5);
        // Wrong directions or widths are refused.
        let mut class2 = EdmModel::new(
            &mlp(Conditioning::Class),
            EdmPrecond::default(),
            Device::Cpu,
        );
        assert!(init_from_class_model(&mut class2, &text, &means).is_err());
        let bad = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        assert!(init_from_class_model(&mut text, &class, &bad).is_err());
    }
}
