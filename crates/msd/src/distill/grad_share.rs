//! How much of the generator's gradient comes from the regression term and how much from
//! distribution matching: the L2 norms of ∇θ(w·L_reg) and ∇θ L_DM over the generator's
//! parameters θ, and the share ‖∇θ(w·L_reg)‖ / (‖∇θ(w·L_reg)‖ + ‖∇θ L_DM‖) (0 = pure DM,
//! 1 = pure regression). Computed on log steps only (two extra backward passes), before
//! clipping, without touching the parameters' `.grad`; logged to `stats.jsonl` as
//! `reg_grad_share`, `reg_grad_norm` and `dm_grad_norm`.

use crate::Result;
use tch::Tensor;

/// Gradient norms of the two terms of the generator's loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradShare {
    /// ‖∇θ(w·L_reg)‖ (the weighted regression term).
    pub regression: f64,
    /// ‖∇θ L_DM‖.
    pub dm: f64,
}

impl GradShare {
    /// ‖reg‖ / (‖reg‖ + ‖dm‖); 0 when both are 0.
    pub fn share(&self) -> f64 {
        let s = self.regression + self.dm;
        if s > 0.0 {
            self.regression / s
        } else {
            0.0
        }
    }
}

/// Norm of the gradient of the scalar `loss` with respect to `params` (parameters it does not
/// reach count 0). Keeps the graph and leaves `.grad` as it is.
pub fn grad_norm_of(loss: &Tensor, params: &[Tensor]) -> Result<f64> {
    let params: Vec<&Tensor> = params.iter().filter(|p| p.requires_grad()).collect();
    let grads = Tensor::f_run_backward(&[loss], &params, true, false)?;
    let sq: f64 = tch::no_grad(|| {
        grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.square().sum(tch::Kind::Double).double_value(&[]))
            .sum()
    });
    Ok(sq.sqrt())
}

/// The gradient norms of `weighted_regression` (w·L_reg, already weighted) and `dm` (L_DM)
/// with respect to `params`.
pub fn grad_share(
    weighted_regression: &Tensor,
    dm: &Tensor,
    params: &[Tensor],
) -> Result<GradShare> {
    Ok(GradShare {
        regression: grad_norm_of(weighted_regression, params)?,
        dm: grad_norm_of(dm, params)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    #[test]
    fn share_of_a_known_case() {
        // θ = (1, 2, 2); L_reg = ½‖θ − a‖² with a = 0 → ∇ = θ, norm 3; weight 2 → norm 6.
        // L_DM = b·θ with b = (0, 3, 4) → ∇ = b, norm 5. Share = 6 / 11.
        let vs = nn::VarStore::new(Device::Cpu);
        let th = vs
            .root()
            .var_copy("theta", &Tensor::from_slice(&[1.0f32, 2.0, 2.0]));
        let other = vs.root().var("unused", &[2], nn::Init::Const(1.0));
        let reg = th.square().sum(Kind::Float) * 0.5 * 2.0;
        let dm = (&th * Tensor::from_slice(&[0.0f32, 3.0, 4.0])).sum(Kind::Float);
        let params = vec![th.shallow_clone(), other.shallow_clone()];
        let s = grad_share(&reg, &dm, &params).unwrap();
        assert!((s.regression - 6.0).abs() < 1e-5, "{s:?}");
        assert!((s.dm - 5.0).abs() < 1e-5, "{s:?}");
        assert!((s.share() - 6.0 / 11.0).abs() < 1e-6, "{s:?}");
        // Nothing accumulated into .grad, and the graph still backs the real step.
        assert!(!th.grad().defined() || th.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
        (reg + dm).backward();
        let g: Vec<f32> = Vec::try_from(th.grad()).unwrap();
        assert_eq!(g, vec![2.0, 7.0, 8.0]);
    }

    #[test]
    fn share_is_zero_without_regression_and_one_without_dm() {
        let a = GradShare {
            regression: 0.0,
            dm: 2.0,
        };
        assert_eq!(a.share(), 0.0);
        let b = GradShare {
            regression: 2.0,
            dm: 0.0,
        };
        assert_eq!(b.share(), 1.0);
        let c = GradShare {
            regression: 0.0,
            dm: 0.0,
        };
        assert_eq!(c.share(), 0.0);
    }
}
