//! Prompt-conditional networks on tiny configs: shapes, the null (zero) embedding path,
//! classifier-free guidance mixing conditional and unconditional outputs, embedding dropout in
//! teacher training, save/load round trips, and class-conditional configs left as they were.

mod common;

use msd::diffusion::{Denoiser, EdmPrecond, Guided};
use msd::model::EdmModel;
use msd::nets::{Conditioning, NetConfig, UNetConfig};
use tch::{Device, Kind, Tensor};

const DIM: i64 = 6;

use common::global_lock as rng_guard;

fn unet(cond: Conditioning) -> NetConfig {
    NetConfig::Unet(UNetConfig {
        in_channels: 1,
        resolution: 8,
        num_classes: 3,
        base_channels: 8,
        channel_mult: vec![1, 2],
        blocks_per_level: 1,
        attn_resolutions: vec![],
        heads: 1,
        dropout: 0.0,
        emb_mult: 2,
        noise_freqs: 4,
        cond,
    })
}

fn mlp(cond: Conditioning) -> NetConfig {
    common::mlp_with(3, 16, 2, 4, cond)
}

const EMB: Conditioning = Conditioning::Embedding { dim: DIM };

/// A fresh model whose UNet output layer is perturbed off zero (a fresh UNet outputs F = 0).
fn model(net: &NetConfig) -> EdmModel {
    let _g = rng_guard();
    tch::manual_seed(3);
    let m = EdmModel::new(net, EdmPrecond::default(), Device::Cpu);
    tch::no_grad(|| {
        for (name, mut v) in m.vs.variables() {
            if name.starts_with("conv_out") {
                v.copy_(&(v.randn_like() * 0.1));
            }
        }
    });
    m
}

fn unit_rows(b: i64, seed: i64) -> Tensor {
    let _g = rng_guard();
    tch::manual_seed(seed);
    let e = Tensor::randn([b, DIM], (Kind::Float, Device::Cpu));
    &e / e.norm_scalaropt_dim(2.0, [1].as_slice(), true)
}

fn x_for(net: &NetConfig, b: i64) -> Tensor {
    let mut s = vec![b];
    s.extend(net.sample_shape());
    let _g = rng_guard();
    tch::manual_seed(9);
    Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu))
}

#[test]
fn embedding_nets_take_b_by_dim_conditions_and_the_prompt_changes_the_output() {
    for net in [unet(EMB), mlp(EMB)] {
        let m = model(&net);
        let x = x_for(&net, 4);
        let s = Tensor::full([4], 2.0, (Kind::Float, Device::Cpu));
        let e = unit_rows(4, 1);
        let d = m.denoise(&x, &s, &e);
        assert_eq!(d.size(), x.size());
        let d2 = m.denoise(&x, &s, &unit_rows(4, 2));
        assert!((&d - &d2).abs().max().double_value(&[]) > 1e-6);
        // No label table, a projection instead; the null (zero) embedding goes through its bias.
        let vars = m.vs.variables();
        assert!(vars.contains_key("cond_proj.weight") && !vars.contains_key("label.weight"));
        let null = m.denoise(&x, &s, &e.zeros_like());
        assert_eq!(null.size(), x.size());
        assert!((&null - &d).abs().max().double_value(&[]) > 1e-6);
    }
}

#[test]
fn guidance_mixes_conditional_and_null_embedding_outputs() {
    let net = unet(EMB);
    let m = model(&net);
    let x = x_for(&net, 3);
    let s = Tensor::full([3], 1.5, (Kind::Float, Device::Cpu));
    let e = unit_rows(3, 4);
    let cond = m.denoise(&x, &s, &e);
    let uncond = m.denoise(&x, &s, &e.zeros_like());
    for w in [0.0, 1.0, 2.5] {
        let g = Guided::new(&m, w, "sampler.guidance")
            .unwrap()
            .denoise(&x, &s, &e);
        let want = &uncond + (&cond - &uncond) * w;
        let err = (g - want).abs().max().double_value(&[]);
        assert!(err < 1e-4, "w = {w}: {err}");
    }
}

#[test]
fn save_and_load_round_trip_an_embedding_net_and_keep_class_json_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let net = mlp(EMB);
    let m = model(&net);
    m.save_dir(dir.path()).unwrap();
    let json = std::fs::read_to_string(dir.path().join("model.json")).unwrap();
    assert!(json.contains("\"embedding\""), "{json}");
    let back = EdmModel::load_dir(dir.path(), Device::Cpu).unwrap();
    assert_eq!(back.spec, m.spec);
    let x = x_for(&net, 2);
    let s = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let e = unit_rows(2, 5);
    assert!(back.denoise(&x, &s, &e).equal(&m.denoise(&x, &s, &e)));
    // A class-conditional config serialises without `cond` (existing files and hashes stay).
    let class = serde_json::to_string(&mlp(Conditioning::Class)).unwrap();
    assert!(!class.contains("cond"), "{class}");
    let old = r#"{"kind":"mlp","dim":2,"num_classes":3,"width":16,"depth":2,"noise_freqs":4}"#;
    let parsed: NetConfig = serde_json::from_str(old).unwrap();
    assert_eq!(parsed, mlp(Conditioning::Class));
    // A class model's weights do not load into an embedding model (names differ).
    let cdir = tempfile::tempdir().unwrap();
    model(&mlp(Conditioning::Class))
        .save_dir(cdir.path())
        .unwrap();
    let mut wrong = model(&net);
    assert!(wrong
        .load_weights(&cdir.path().join("model.safetensors"))
        .is_err());
}

#[test]
fn copy_shared_from_takes_everything_but_the_condition_input() {
    let class = model(&unet(Conditioning::Class));
    let mut text = model(&unet(EMB));
    let copied = text.copy_shared_from(&class).unwrap();
    assert!(!copied
        .iter()
        .any(|n| n.starts_with("label") || n.starts_with("cond_proj")));
    assert_eq!(copied.len() + 2, text.vs.variables().len());
    let c = class.vs.variables();
    for (name, v) in text.vs.variables() {
        if let Some(w) = c.get(&name) {
            assert!(v.equal(w), "{name}");
        }
    }
}
