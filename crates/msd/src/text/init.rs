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
