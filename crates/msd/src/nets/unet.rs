//! A conditional UNet in the style of EDM's ADM ("DhariwalUNet") network, built from
//! [`UNetConfig`]: per level a stack of residual blocks (optionally followed by multi-head
//! self-attention at chosen resolutions), strided-conv down-sampling, a middle of
//! residual–attention–residual (the **encoder bottleneck**), and a mirrored decoder that
//! concatenates the encoder's skips.
//!
//! Conditioning: c_noise → Fourier features → 2-layer MLP, plus a learned label embedding with
//! `num_classes + 1` rows (the last is the null label of classifier-free guidance) — or, with
//! `cond = { kind = "embedding", dim }`, a learned projection of a prompt embedding whose null
//! is the zero vector (see [`super::condition`]); their sum
//! (after SiLU) drives an adaptive GroupNorm in every residual block:
//! `h ← GN(h)·(1 + scale) + shift`, `(scale, shift) = Linear(emb)`.
//!
//! Shapes, for `x: [B, C, R, R]` and L levels: output `[B, C, R, R]`; bottleneck
//! `[B, base·mult[L−1], R/2^(L−1), R/2^(L−1)]` (see [`UNetConfig::bottleneck_shape`]).

use super::condition::{ConditionInput, Conditioning};
use super::embedding::fourier_features;
use super::Network;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// Configuration of [`UNet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Image channels (1 = grey, 3 = RGB).
    #[serde(default = "d_in")]
    pub in_channels: i64,
    /// Image height = width; must be divisible by 2^(levels − 1).
    pub resolution: i64,
    /// Number of real classes (an extra null label is always allocated for guidance).
    pub num_classes: i64,
    /// Channels of the first level.
    pub base_channels: i64,
    /// Channel multiplier of each level (its length is the number of levels).
    pub channel_mult: Vec<i64>,
    /// Residual blocks per level in the encoder (the decoder has one more per level).
    pub blocks_per_level: i64,
    /// Resolutions (e.g. `[7]`) at which each residual block is followed by self-attention.
    #[serde(default)]
    pub attn_resolutions: Vec<i64>,
    /// Attention heads (must divide the channels at every attention resolution).
    #[serde(default = "d_heads")]
    pub heads: i64,
    /// Dropout inside residual blocks (training only).
    #[serde(default)]
    pub dropout: f64,
    /// Embedding width as a multiple of `base_channels`.
    #[serde(default = "d_emb_mult")]
    pub emb_mult: i64,
    /// Number of Fourier frequencies for the noise embedding.
    #[serde(default = "d_noise_freqs")]
    pub noise_freqs: i64,
    /// What the network is conditioned on (absent: class labels).
    #[serde(default, skip_serializing_if = "Conditioning::is_class")]
    pub cond: Conditioning,
}

fn d_in() -> i64 {
    1
}
fn d_heads() -> i64 {
    1
}
fn d_emb_mult() -> i64 {
    4
}
fn d_noise_freqs() -> i64 {
    16
}

/// GroupNorm groups for `c` channels: the largest divisor of `c` not above min(32, c/4).
pub fn norm_groups(c: i64) -> i64 {
    let cap = (c / 4).clamp(1, 32);
    (1..=cap).rev().find(|g| c % g == 0).unwrap_or(1)
}

impl UNetConfig {
    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("net.in_channels", self.in_channels),
            ("net.resolution", self.resolution),
            ("net.num_classes", self.num_classes),
            ("net.base_channels", self.base_channels),
            ("net.blocks_per_level", self.blocks_per_level),
            ("net.heads", self.heads),
            ("net.emb_mult", self.emb_mult),
            ("net.noise_freqs", self.noise_freqs),
        ] {
            if v < 1 {
                return Err(Error::config(name, format!("must be ≥ 1, got {v}")));
            }
            let max = crate::limits::MAX_WIDTH;
            if v > max {
                return Err(Error::config(name, format!("must be ≤ {max}, got {v}")));
            }
        }
        if self.channel_mult.is_empty()
            || self.channel_mult.len() > 16
            || self.channel_mult.iter().any(|&m| m < 1)
            || self
                .channel_mult
                .iter()
                .any(|&m| m.saturating_mul(self.base_channels) > crate::limits::MAX_WIDTH)
        {
            return Err(Error::config(
                "net.channel_mult",
                format!(
                    "needs 1..=16 levels, each ≥ 1 with base_channels·mult ≤ {}, got {:?}",
                    crate::limits::MAX_WIDTH,
                    self.channel_mult
                ),
            ));
        }
        let div = 1i64 << (self.channel_mult.len() - 1);
        if self.resolution % div != 0 {
            return Err(Error::config(
                "net.resolution",
                format!(
                    "{} is not divisible by 2^(levels − 1) = {div} for {} levels",
                    self.resolution,
                    self.channel_mult.len()
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "net.dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        for (l, m) in self.channel_mult.iter().enumerate() {
            let res = self.resolution >> l;
            let ch = self.base_channels * m;
            let last = l + 1 == self.channel_mult.len();
            if (self.attn_resolutions.contains(&res) || last) && ch % self.heads != 0 {
                return Err(Error::config(
                    "net.heads",
                    format!(
                        "{} heads do not divide {ch} channels at resolution {res}",
                        self.heads
                    ),
                ));
            }
        }
        self.cond.validate()
    }

    /// Shape of one sample `[C, R, R]`.
    pub fn sample_shape(&self) -> Vec<i64> {
        vec![self.in_channels, self.resolution, self.resolution]
    }

    /// Shape of the encoder bottleneck of one sample: `[base·mult[L−1], R/2^(L−1), R/2^(L−1)]`.
    pub fn bottleneck_shape(&self) -> Vec<i64> {
        let l = self.channel_mult.len() as i64 - 1;
        let r = self.resolution >> l;
        vec![self.base_channels * self.channel_mult[l as usize], r, r]
    }
}

/// Residual block with adaptive GroupNorm conditioning.
#[derive(Debug)]
struct ResBlock {
    norm0: nn::GroupNorm,
    conv0: nn::Conv2D,
    affine: nn::Linear,
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    skip: Option<nn::Conv2D>,
    dropout: f64,
}

fn conv(p: nn::Path, i: i64, o: i64, k: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            padding: k / 2,
            ..Default::default()
        },
    )
}

fn gn(p: nn::Path, c: i64) -> nn::GroupNorm {
    nn::group_norm(
        p,
        norm_groups(c),
        c,
        nn::GroupNormConfig {
            eps: 1e-5,
            ..Default::default()
        },
    )
}

const SKIP_SCALE: f64 = std::f64::consts::FRAC_1_SQRT_2;

impl ResBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, emb: i64, dropout: f64) -> Self {
        Self {
            norm0: gn(&p / "norm0", cin),
            conv0: conv(&p / "conv0", cin, cout, 3),
            affine: nn::linear(&p / "affine", emb, 2 * cout, Default::default()),
            norm1: gn(&p / "norm1", cout),
            conv1: conv(&p / "conv1", cout, cout, 3),
            skip: (cin != cout).then(|| conv(&p / "skip", cin, cout, 1)),
            dropout,
        }
    }

    /// `x`: `[B, cin, H, W]`, `emb`: `[B, E]` → `[B, cout, H, W]`.
    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let h = self.conv0.forward(&self.norm0.forward(x).silu());
        let params = self.affine.forward(emb).unsqueeze(2).unsqueeze(3);
        let sc = params.chunk(2, 1);
        let h = (self.norm1.forward(&h) * (&sc[0] + 1.0) + &sc[1]).silu();
        let h = self.conv1.forward(&h.dropout(self.dropout, train));
        let s = match &self.skip {
            Some(c) => c.forward(x),
            None => x.shallow_clone(),
        };
        (h + s) * SKIP_SCALE
    }
}

/// Multi-head self-attention over the pixels, with a residual connection.
#[derive(Debug)]
struct Attention {
    norm: nn::GroupNorm,
    qkv: nn::Conv2D,
    proj: nn::Conv2D,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, c: i64, heads: i64) -> Self {
        Self {
            norm: gn(&p / "norm", c),
            qkv: conv(&p / "qkv", c, 3 * c, 1),
            proj: conv(&p / "proj", c, c, 1),
            heads,
        }
    }

    /// `x`: `[B, C, H, W]` → `[B, C, H, W]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let d = c / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x))
            .reshape([b * self.heads, d, 3, h * w]);
        let qkv = qkv.unbind(2);
        let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
        // [N, L, d] × [N, d, L] → [N, L_q, L_k]
        let att = (q.transpose(1, 2).matmul(k) * (1.0 / (d as f64).sqrt())).softmax(2, q.kind());
        // [N, d, L_k] × [N, L_k, L_q] → [N, d, L_q]
        let a = v.matmul(&att.transpose(1, 2)).reshape([b, c, h, w]);
        (x + self.proj.forward(&a)) * SKIP_SCALE
    }
}

#[derive(Debug)]
enum Layer {
    Res(Box<ResBlock>),
    Attn(Box<Attention>),
    Down(nn::Conv2D),
    Up(nn::Conv2D),
}

impl Layer {
    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        match self {
            Layer::Res(r) => r.forward(x, emb, train),
            Layer::Attn(a) => a.forward(x),
            Layer::Down(c) => c.forward(x),
            Layer::Up(c) => {
                let s = x.size();
                c.forward(&x.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None))
            }
        }
    }
}

/// The conditional UNet F(x, c_noise, label).
#[derive(Debug)]
pub struct UNet {
    noise0: nn::Linear,
    noise1: nn::Linear,
    label: ConditionInput,
    conv_in: nn::Conv2D,
    /// Encoder layers; `true` marks a layer whose output is kept as a skip.
    enc: Vec<(Layer, bool)>,
    mid: Vec<Layer>,
    /// Decoder layers; `true` marks a residual block that consumes a skip.
    dec: Vec<(Layer, bool)>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    noise_freqs: i64,
}

impl UNet {
    /// Builds the UNet with parameters under `p` (call [`UNetConfig::validate`] first). The
    /// final convolution starts at zero, so a fresh network outputs F = 0.
    pub fn new(p: nn::Path, c: &UNetConfig) -> Self {
        let emb = c.base_channels * c.emb_mult;
        let levels = c.channel_mult.len();
        let mut enc = Vec::new();
        let mut skips = vec![c.base_channels];
        let mut ch = c.base_channels;
        let e = &p / "enc";
        for (l, m) in c.channel_mult.iter().enumerate() {
            let res = c.resolution >> l;
            let out = c.base_channels * m;
            for b in 0..c.blocks_per_level {
                enc.push((
                    Layer::Res(Box::new(ResBlock::new(
                        &e / format!("l{l}_block{b}"),
                        ch,
                        out,
                        emb,
                        c.dropout,
                    ))),
                    !c.attn_resolutions.contains(&res),
                ));
                ch = out;
                if c.attn_resolutions.contains(&res) {
                    enc.push((
                        Layer::Attn(Box::new(Attention::new(
                            &e / format!("l{l}_attn{b}"),
                            ch,
                            c.heads,
                        ))),
                        true,
                    ));
                }
                skips.push(ch);
            }
            if l + 1 < levels {
                let down = nn::conv2d(
                    &e / format!("l{l}_down"),
                    ch,
                    ch,
                    3,
                    nn::ConvConfig {
                        stride: 2,
                        padding: 1,
                        ..Default::default()
                    },
                );
                enc.push((Layer::Down(down), true));
                skips.push(ch);
            }
        }
        let m = &p / "mid";
        let mid = vec![
            Layer::Res(Box::new(ResBlock::new(
                &m / "block0",
                ch,
                ch,
                emb,
                c.dropout,
            ))),
            Layer::Attn(Box::new(Attention::new(&m / "attn", ch, c.heads))),
            Layer::Res(Box::new(ResBlock::new(
                &m / "block1",
                ch,
                ch,
                emb,
                c.dropout,
            ))),
        ];
        let mut dec = Vec::new();
        let d = &p / "dec";
        for (l, mlt) in c.channel_mult.iter().enumerate().rev() {
            let res = c.resolution >> l;
            let out = c.base_channels * mlt;
            for b in 0..=c.blocks_per_level {
                let skip = skips.pop().unwrap_or(0);
                dec.push((
                    Layer::Res(Box::new(ResBlock::new(
                        &d / format!("l{l}_block{b}"),
                        ch + skip,
                        out,
                        emb,
                        c.dropout,
                    ))),
                    true,
                ));
                ch = out;
                if c.attn_resolutions.contains(&res) {
                    dec.push((
                        Layer::Attn(Box::new(Attention::new(
                            &d / format!("l{l}_attn{b}"),
                            ch,
                            c.heads,
                        ))),
                        false,
                    ));
                }
            }
            if l > 0 {
                dec.push((Layer::Up(conv(&d / format!("l{l}_up"), ch, ch, 3)), false));
            }
        }
        let zero = nn::ConvConfig {
            padding: 1,
            ws_init: nn::Init::Const(0.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Self {
            noise0: nn::linear(&p / "noise0", 2 * c.noise_freqs, emb, Default::default()),
            noise1: nn::linear(&p / "noise1", emb, emb, Default::default()),
            label: ConditionInput::new(&p, c.cond, c.num_classes, emb),
            conv_in: conv(&p / "conv_in", c.in_channels, c.base_channels, 3),
            enc,
            mid,
            dec,
            norm_out: gn(&p / "norm_out", ch),
            conv_out: nn::conv2d(&p / "conv_out", ch, c.in_channels, 3, zero),
            noise_freqs: c.noise_freqs,
        }
    }

    /// The output and the encoder bottleneck (the output of the middle blocks).
    /// `x`: `[B, C, R, R]`, `c_noise`: `[B]`, `labels`: `[B]` int64 in `0..=num_classes` (class
    /// conditioning) or `[B, cond.dim]` float (embedding conditioning; 0 = null) →
    /// (`[B, C, R, R]`, `[B, base·mult[L−1], R/2^(L−1), R/2^(L−1)]`).
    pub fn forward_with_bottleneck(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor) {
        // The embedding is computed in f32 and joins the network in x's kind (f32 or bf16).
        let ff = fourier_features(c_noise, self.noise_freqs, 0.25, 16.0).to_kind(x.kind());
        let emb = (self.noise1.forward(&self.noise0.forward(&ff).silu())
            + self.label.forward(labels, x.kind()))
        .silu();
        let mut h = self.conv_in.forward(x);
        let mut skips = vec![h.shallow_clone()];
        for (layer, keep) in &self.enc {
            h = layer.forward(&h, &emb, train);
            if *keep {
                skips.push(h.shallow_clone());
            }
        }
        for layer in &self.mid {
            h = layer.forward(&h, &emb, train);
        }
        let bottleneck = h.shallow_clone();
        for (layer, takes_skip) in &self.dec {
            if *takes_skip {
                let s = skips.pop().expect("one skip per decoder residual block");
                h = Tensor::cat(&[&h, &s], 1);
            }
            h = layer.forward(&h, &emb, train);
        }
        (
            self.conv_out.forward(&self.norm_out.forward(&h).silu()),
            bottleneck,
        )
    }
}

impl Network for UNet {
    /// `x`: `[B, C, R, R]`, `c_noise`: `[B]`, `labels`: `[B]` → `[B, C, R, R]`.
    fn forward_t(&self, x: &Tensor, c_noise: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        self.forward_with_bottleneck(x, c_noise, labels, train).0
    }

    fn forward_with_bottleneck(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Option<(Tensor, Tensor)> {
        Some(UNet::forward_with_bottleneck(
            self, x, c_noise, labels, train,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    use crate::test_support::tiny_unet_config as tiny;

    fn build(c: &UNetConfig) -> (nn::VarStore, UNet) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet::new(vs.root(), c);
        (vs, net)
    }

    fn randomise_output(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for (n, mut v) in vs.variables() {
                if n.starts_with("conv_out") {
                    v.copy_(&(v.randn_like() * 0.1));
                }
            }
        });
    }

    #[test]
    fn shapes_and_param_count() {
        let _rng = crate::rng_guard();
        let c = tiny();
        c.validate().unwrap();
        let (vs, net) = build(&c);
        let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let (y, b) = net.forward_with_bottleneck(
            &x,
            &Tensor::zeros([3], (Kind::Float, Device::Cpu)),
            &Tensor::from_slice(&[0i64, 1, 3]),
            false,
        );
        assert_eq!(y.size(), vec![3, 1, 8, 8]);
        assert_eq!(b.size()[1..], c.bottleneck_shape()[..]);
        assert_eq!(b.size(), vec![3, 16, 4, 4]);
        let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        // Counted independently from the layer formulas (conv i·o·k²+o, GN 2c, linear i·o+o, …).
        assert_eq!(params, 44_209, "{params}");
        // Zero-initialised output: F = 0 for a fresh network.
        assert_eq!(y.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn gradient_reaches_every_parameter_and_the_input() {
        let _rng = crate::rng_guard();
        let (vs, net) = build(&tiny());
        randomise_output(&vs);
        let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = net.forward_t(
            &x,
            &Tensor::from_slice(&[0.1f32, -0.5]),
            &Tensor::from_slice(&[1i64, 2]),
            true,
        );
        y.square().sum(Kind::Float).backward();
        for (n, v) in vs.variables() {
            let g = v.grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "no gradient for {n}"
            );
        }
        assert!(x.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
    }

    #[test]
    fn label_and_noise_level_change_the_output() {
        let _rng = crate::rng_guard();
        let (vs, net) = build(&tiny());
        randomise_output(&vs);
        let x = Tensor::randn([1, 1, 8, 8], (Kind::Float, Device::Cpu)).repeat([2, 1, 1, 1]);
        let y = net.forward_t(
            &x,
            &Tensor::from_slice(&[0.3f32, 0.3]),
            &Tensor::from_slice(&[0i64, 2]),
            false,
        );
        assert!((y.get(0) - y.get(1)).abs().max().double_value(&[]) > 1e-4);
        let y2 = net.forward_t(
            &x,
            &Tensor::from_slice(&[0.3f32, -1.0]),
            &Tensor::from_slice(&[0i64, 0]),
            false,
        );
        assert!((y2.get(0) - y2.get(1)).abs().max().double_value(&[]) > 1e-4);
        // Same inputs, same outputs (eval mode is deterministic).
        let y3 = net.forward_t(
            &x,
            &Tensor::from_slice(&[0.3f32, 0.3]),
            &Tensor::from_slice(&[0i64, 2]),
            false,
        );
        assert_eq!((y3 - y).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let _rng = crate::rng_guard();
        let mut c = tiny();
        c.resolution = 10;
        c.channel_mult = vec![1, 1, 1];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("net.resolution"));
        let mut c = tiny();
        c.heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("net.heads"));
        let mut c = tiny();
        c.channel_mult = vec![];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("net.channel_mult"));
    }
}
