//! Adversarial distribution matching (DMD2's diffusion GAN): a discriminator head on the fake
//! score's encoder bottleneck judges noised real and generated samples. Non-saturating logistic
//! losses: the generator adds w_G·softplus(−D(fake)); the fake-score/head step adds
//! w_D·(softplus(D(fake)) + softplus(−D(real))). The generator's GAN gradient flows through the
//! (not stepped) head and fake-score encoder into its output.
//!
//! The ADM stage is the DM method ([`super::dm::DmMethod`]) with [`GanAdversary`] as its
//! [`Adversary`], resumed from the DM stage with its own learning rates and iterations.

use super::config::DistillConfig;
use super::dm::Adversary;
use crate::data::TrainingData;
use crate::diffusion::precond::broadcast_to;
use crate::diffusion::KarrasGrid;
use crate::model::EdmModel;
use crate::nets::disc_head::{DiscHead, DiscHeadConfig};
use crate::train::{step_rng, AdamW, AdamWConfig, Slot};
use crate::{Error, Result};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tch::{nn, Kind, Tensor};

/// Stage 2 (ADM) settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmConfig {
    pub iterations: u64,
    /// Learning rates (lower than DM's); other optimiser settings are DM's.
    pub generator_lr: f64,
    pub fake_lr: f64,
    /// w_G: weight of softplus(−D(fake)) in the generator loss (paper: 3e-3).
    pub generator_gan_weight: f64,
    /// w_D: weight of the discriminator loss in the fake-score step (paper: 1e-2).
    pub discriminator_gan_weight: f64,
    pub head: DiscHeadConfig,
    /// Clip the fake score's and the head's gradients by their joint norm (DMD2: one parameter
    /// set) instead of each by its own.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub joint_clip: bool,
}

impl Default for AdmConfig {
    fn default() -> Self {
        Self {
            iterations: 1000,
            generator_lr: 5e-5,
            fake_lr: 5e-5,
            generator_gan_weight: 3e-3,
            discriminator_gan_weight: 1e-2,
            head: DiscHeadConfig::default(),
            joint_clip: false,
        }
    }
}

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

/// Running sums of the GAN's logged quantities between two log lines.
#[derive(Default)]
struct GanWindow {
    gan_g: f64,
    gan_d: f64,
    d_real: f64,
    d_fake: f64,
    grad_ratio: f64,
    n_ratio: u64,
}

/// ADM's diffusion GAN: a discriminator head on the fake score's bottleneck, stepped with the
/// fake score, judging real data of the student's classes against generated samples.
pub struct GanAdversary<'a> {
    cfg: &'a DistillConfig,
    head_vs: nn::VarStore,
    head: DiscHead,
    opt: AdamW,
    data: &'a dyn TrainingData,
    classes: Vec<i64>,
    grid: KarrasGrid,
    window: GanWindow,
}

impl<'a> GanAdversary<'a> {
    /// A head (seeded by `(seed, student)`) for the bottleneck of `fake`, trained on `data`.
    pub fn new(
        cfg: &'a DistillConfig,
        fake: &EdmModel,
        data: &'a dyn TrainingData,
        classes: Vec<i64>,
        seed: u64,
        student: usize,
    ) -> Result<Self> {
        let shape = fake.bottleneck_shape().ok_or_else(|| {
            Error::config(
                "model.net",
                "ADM needs a network with an encoder bottleneck (kind = \"unet\")",
            )
        })?;
        let head_vs = nn::VarStore::new(fake.device());
        let _ = step_rng(seed, student as u64, 0x4EAD);
        let head = DiscHead::new(head_vs.root(), &shape, &cfg.adm.head);
        let opt = AdamW::new(
            &head_vs,
            AdamWConfig {
                lr: cfg.adm.fake_lr,
                ..cfg.fake_optimizer.clone()
            },
        );
        Ok(Self {
            cfg,
            head_vs,
            head,
            opt,
            data,
            classes,
            grid: cfg.grid(),
            window: GanWindow::default(),
        })
    }
}

impl Adversary for GanAdversary<'_> {
    fn generator_loss(
        &mut self,
        fake: &EdmModel,
        x: &Tensor,
        labels: &Tensor,
        g: &Tensor,
    ) -> Result<Tensor> {
        let cfg = self.cfg;
        let bs = cfg.batch_size as i64;
        let sigma_gan = self.grid.sample(bs, 0, cfg.grid_levels - 1, x.device());
        let (_, logits, _) = judge(fake, &self.head, x, &sigma_gan, labels, true)?;
        let gan = generator_gan_loss(&logits) * cfg.adm.generator_gan_weight;
        let w = &mut self.window;
        if w.n_ratio == 0 {
            // Health signal, once per log window (its first generator step, so it exists
            // whatever log_every and ttur are): |∂(GAN)/∂x| against |∂(VSD)/∂x| = |g|/numel.
            let gx = Tensor::run_backward(&[&gan], &[x], true, false);
            let gan_norm = gx[0].norm().double_value(&[]);
            let vsd_norm = g.norm().double_value(&[]) / x.numel() as f64;
            w.grad_ratio += gan_norm / vsd_norm.max(1e-30);
            w.n_ratio += 1;
        }
        w.gan_g += gan.double_value(&[]);
        Ok(gan)
    }

    fn fake_loss(
        &mut self,
        fake: &EdmModel,
        x: &Tensor,
        sigma: &Tensor,
        labels: &Tensor,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, f64)> {
        let cfg = self.cfg;
        let bs = cfg.batch_size;
        // One forward of the fake score gives both its denoising loss and D(fake).
        let (d, logits_fake, _) = judge(fake, &self.head, x, sigma, labels, true)?;
        let wgt = fake.spec.precond.loss_weight(sigma);
        let dsm = (broadcast_to(&wgt, x) * (d - x).square()).mean(Kind::Float);
        let (real, real_labels) = self.data.batch(bs, &self.classes, rng, x.device())?;
        let sigma_r = self
            .grid
            .sample(bs as i64, 0, cfg.grid_levels - 1, x.device());
        let (_, logits_real, _) = judge(fake, &self.head, &real, &sigma_r, &real_labels, true)?;
        let disc =
            discriminator_loss(&logits_fake, &logits_real) * cfg.adm.discriminator_gan_weight;
        let w = &mut self.window;
        w.gan_d += disc.double_value(&[]);
        w.d_real += logits_real.mean(Kind::Float).double_value(&[]);
        w.d_fake += logits_fake.mean(Kind::Float).double_value(&[]);
        let fl = dsm.double_value(&[]);
        Ok((dsm + disc, fl))
    }

    fn zero_grad(&mut self) {
        self.opt.zero_grad();
    }

    fn step(&mut self) {
        self.opt.step();
    }

    fn optimizer(&mut self) -> Option<&mut AdamW> {
        Some(&mut self.opt)
    }

    fn state(&mut self) -> Vec<(&'static str, Slot<'_>)> {
        vec![
            ("head", Slot::Vars(&mut self.head_vs)),
            ("head_optim", Slot::Optim(&mut self.opt)),
        ]
    }

    fn log(&mut self, r: &mut Map<String, Value>, ng: f64, nf: f64) {
        let w = std::mem::take(&mut self.window);
        r.insert("gan_generator_loss".into(), (w.gan_g / ng).into());
        r.insert("gan_discriminator_loss".into(), (w.gan_d / nf).into());
        r.insert("d_real_mean".into(), (w.d_real / nf).into());
        r.insert("d_fake_mean".into(), (w.d_fake / nf).into());
        r.insert(
            "gan_to_vsd_grad_ratio".into(),
            (w.grad_ratio / w.n_ratio.max(1) as f64).into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::EdmPrecond;
    use crate::nets::disc_head::DiscHeadConfig;
    use crate::nets::NetConfig;
    use crate::train::{AdamW, AdamWConfig};
    use tch::{nn, Device};

    fn tiny() -> (EdmModel, nn::VarStore, DiscHead) {
        tch::manual_seed(0);
        let cfg = crate::test_support::plain_tiny_unet(2, 0.0);
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
        let _rng = crate::rng_guard();
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
