//! Adversarial distribution matching (DMD2's diffusion GAN): a discriminator head on the fake
//! score's encoder bottleneck judges noised real and generated samples. Non-saturating logistic
//! losses: the generator adds w_G·softplus(−D(fake)); the fake-score/head step adds
//! w_D·(softplus(D(fake)) + softplus(−D(real))). The generator's GAN gradient flows through the
//! (not stepped) head and fake-score encoder into its output.

use crate::diffusion::precond::broadcast_to;
use crate::model::EdmModel;
use crate::nets::disc_head::DiscHead;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Noises `x` (`[B, ...]`) at `sigma` (`[B]`), runs the fake score with its bottleneck and the
/// head. Returns `(D_fake(x_t), logits [B], x_t)`. Gradients flow to `x` unless it is detached.
pub fn judge(
    fake: &EdmModel,
    head: &DiscHead,
    x: &Tensor,
    sigma: &Tensor,
    labels: &Tensor,
    train: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let x_t = x + x.randn_like().detach() * broadcast_to(sigma, x);
    let (d, b) = fake
        .denoise_with_bottleneck(&x_t, sigma, labels, train)
        .ok_or_else(|| {
            Error::config(
                "model.net",
                "ADM needs a network with an encoder bottleneck (kind = \"unet\")",
            )
        })?;
    Ok((d, head.forward(&b), x_t))
}

/// The generator's GAN loss mean(softplus(−D(fake))).
pub fn generator_gan_loss(logits_fake: &Tensor) -> Tensor {
    (-logits_fake).softplus().mean(Kind::Float)
}

/// The discriminator's loss mean(softplus(D(fake))) + mean(softplus(−D(real))).
pub fn discriminator_loss(logits_fake: &Tensor, logits_real: &Tensor) -> Tensor {
    logits_fake.softplus().mean(Kind::Float) + (-logits_real).softplus().mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::EdmPrecond;
    use crate::nets::disc_head::DiscHeadConfig;
    use crate::nets::{NetConfig, UNetConfig};
    use crate::train::{AdamW, AdamWConfig};
    use tch::{nn, Device};

    fn tiny() -> (EdmModel, nn::VarStore, DiscHead) {
        tch::manual_seed(0);
        let cfg = UNetConfig {
            in_channels: 1,
            resolution: 8,
            num_classes: 2,
            base_channels: 8,
            channel_mult: vec![1, 2],
            blocks_per_level: 1,
            attn_resolutions: vec![],
            heads: 1,
            dropout: 0.0,
            emb_mult: 2,
            noise_freqs: 4,
        };
        let net = NetConfig::Unet(cfg.clone());
        let fake = EdmModel::new(&net, EdmPrecond::default(), Device::Cpu);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = DiscHead::new(
            vs.root(),
            &cfg.bottleneck_shape(),
            &DiscHeadConfig::default(),
        );
        (fake, vs, head)
    }

    #[test]
    fn losses_match_their_definitions() {
        let lf = Tensor::from_slice(&[0.0f32, 2.0]);
        let lr = Tensor::from_slice(&[1.0f32, -1.0]);
        let sp = |v: f64| (1.0 + v.exp()).ln();
        let g = generator_gan_loss(&lf).double_value(&[]);
        assert!((g - (sp(0.0) + sp(-2.0)) / 2.0).abs() < 1e-6);
        let d = discriminator_loss(&lf, &lr).double_value(&[]);
        assert!((d - ((sp(0.0) + sp(2.0)) / 2.0 + (sp(-1.0) + sp(1.0)) / 2.0)).abs() < 1e-6);
    }

    #[test]
    fn head_learns_to_separate_and_generator_gradient_fools_it() {
        let (fake, vs, head) = tiny();
        let l = Tensor::zeros([32], (Kind::Int64, Device::Cpu));
        let sigma = Tensor::full([32], 0.2, (Kind::Float, Device::Cpu));
        // "Real" images are bright (+0.8), "fakes" dark (−0.8).
        let real = Tensor::full([32, 1, 8, 8], 0.8, (Kind::Float, Device::Cpu));
        let x_fake = Tensor::full([32, 1, 8, 8], -0.8, (Kind::Float, Device::Cpu));
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..60 {
            let (_, lf, _) = judge(&fake, &head, &x_fake, &sigma, &l, true).unwrap();
            let (_, lr, _) = judge(&fake, &head, &real, &sigma, &l, true).unwrap();
            let loss = discriminator_loss(&lf, &lr);
            last = loss.double_value(&[]);
            first.get_or_insert(last);
            opt.zero_grad();
            loss.backward();
            opt.step();
        }
        assert!(
            last < 0.5 * first.unwrap(),
            "discriminator loss {} → {last}",
            first.unwrap()
        );

        // One generator step on the GAN loss, through the frozen head and fake score, moves the
        // fakes so that the discriminator rates them as more real.
        let x = x_fake.copy().set_requires_grad(true);
        let logit = |x: &Tensor| {
            tch::manual_seed(5);
            judge(&fake, &head, x, &sigma, &l, false)
                .unwrap()
                .1
                .mean(Kind::Float)
                .double_value(&[])
        };
        let before = logit(&x.detach());
        tch::manual_seed(5);
        let (_, lf, _) = judge(&fake, &head, &x, &sigma, &l, false).unwrap();
        generator_gan_loss(&lf).backward();
        let g = x.grad();
        assert!(
            g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "no gradient reached the generator output"
        );
        let stepped = tch::no_grad(|| &x - g.sign() * 0.05);
        let after = logit(&stepped);
        assert!(
            after > before,
            "D(fake) {before} → {after} after a generator step"
        );
    }
}
