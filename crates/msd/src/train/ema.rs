//! Exponential moving average of weights: ema ← d·ema + (1 − d)·θ, matched by parameter name.

use tch::nn::VarStore;

/// Updates every variable of `ema` towards the same-named variable of `model`.
pub fn ema_update(ema: &VarStore, model: &VarStore, decay: f64) {
    let src = model.variables();
    tch::no_grad(|| {
        for (name, mut e) in ema.variables() {
            if let Some(p) = src.get(&name) {
                // lerp(e, p, 1 − decay) = decay·e + (1 − decay)·p, in place.
                let _ = e.lerp_(p, 1.0 - decay);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind, Tensor};

    #[test]
    fn ema_moves_by_one_minus_decay() {
        let a = VarStore::new(Device::Cpu);
        let b = VarStore::new(Device::Cpu);
        let _ = a.root().var("w", &[2], nn::Init::Const(0.0));
        let _ = b.root().var("w", &[2], nn::Init::Const(1.0));
        ema_update(&a, &b, 0.9);
        let w = a.variables()["w"].shallow_clone();
        assert!(
            (w - Tensor::full([2], 0.1, (Kind::Float, Device::Cpu)))
                .abs()
                .max()
                .double_value(&[])
                < 1e-7
        );
    }
}
