use msd::diffusion::EdmPrecond;
use msd::model::EdmModel;
use msd::nets::{NetConfig, UNetConfig};
use msd::train::{AdamW, AdamWConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
fn main() {
    tch::set_num_threads(2);
    let args: Vec<String> = std::env::args().collect();
    let base: i64 = args[1].parse().unwrap();
    let mult: Vec<i64> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let blocks: i64 = args[3].parse().unwrap();
    let attn: Vec<i64> = args[4].split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let res: i64 = args[5].parse().unwrap();
    let bs: i64 = args[6].parse().unwrap();
    let c = UNetConfig { in_channels: 1, resolution: res, num_classes: 10, base_channels: base, channel_mult: mult, blocks_per_level: blocks, attn_resolutions: attn, heads: 1, dropout: 0.0, emb_mult: 4, noise_freqs: 16 };
    let m = EdmModel::new(&NetConfig::Unet(c), EdmPrecond::default(), Device::Cpu);
    let mut opt = AdamW::new(&m.vs, AdamWConfig::default());
    println!("params {}", m.num_params());
    let x = Tensor::randn([bs, 1, res, res], (Kind::Float, Device::Cpu));
    let s = Tensor::ones([bs], (Kind::Float, Device::Cpu));
    let l = Tensor::zeros([bs], (Kind::Int64, Device::Cpu));
    for i in 0..6 {
        let t = Instant::now();
        let d = m.denoise_t(&x, &s, &l, true);
        let loss = (d - &x).square().mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let tr = t.elapsed().as_secs_f64();
        let t = Instant::now();
        tch::no_grad(|| m.denoise_t(&x, &s, &l, false));
        println!("{i} train {:.0} ms fwd {:.0} ms", tr * 1e3, t.elapsed().as_secs_f64() * 1e3);
    }
}
