//! `msd sample --prompt`: samples a prompt-conditional teacher (multi-step, optionally guided
//! with the null embedding) or bundle (one step, each prompt routed to its group's student by
//! its embedding); one picture row per prompt.

use super::sample::{check_memory, write_picture, write_points, Args};
use crate::cmd::text::load_encoder;
use anyhow::{bail, Context, Result};
use msd::bundle::Bundle;
use msd::diffusion::{sample, SamplerConfig};
use msd::model::EdmModel;
use msd::text::prompt::embed_prompt;
use tch::{Device, Kind, Tensor};

pub fn run(a: &Args, device: Device) -> Result<()> {
    let encoder = load_encoder(a.encoder.as_deref(), Device::Cpu)?;
    let embeddings = a
        .prompt
        .iter()
        .map(|p| embed_prompt(&encoder, p, "--prompt"))
        .collect::<msd::Result<Vec<Vec<f32>>>>()?;
    let n = a.n as usize;
    // Picture rows and CSV labels: the prompt's index.
    let rows: Vec<i64> = (0..a.prompt.len() as i64)
        .flat_map(|i| std::iter::repeat_n(i, n))
        .collect();
    let x = match (&a.bundle, &a.teacher) {
        (Some(path), _) => {
            let mut bundle = Bundle::load(path, device)
                .with_context(|| format!("--bundle {}", path.display()))?;
            if !bundle.is_prompt_conditional() {
                bail!(
                    "--bundle {}: its students take classes, not prompts (use --class)",
                    path.display()
                );
            }
            for s in &mut bundle.students {
                s.set_precision(a.precision);
            }
            check_memory(a, a.prompt.len(), &bundle.students[0].spec.net, false)?;
            let z = bundle.noise(rows.len(), a.seed, device);
            let mut out = Vec::new();
            for (i, (p, e)) in a.prompt.iter().zip(&embeddings).enumerate() {
                let (x, k) = bundle
                    .generate_prompt(e, &z.narrow(0, (i * n) as i64, n as i64))
                    .context("--prompt")?;
                println!("prompt {i} {:?} → student {k}", p.trim());
                out.push(x);
            }
            Tensor::cat(&out, 0)
        }
        (None, Some(dir)) => {
            let mut teacher = EdmModel::load_dir(dir, device)
                .with_context(|| format!("--teacher {}", dir.display()))?;
            match teacher.spec.net.cond().embedding_dim() {
                Some(d) if d as usize == embeddings[0].len() => {}
                _ => bail!(
                    "--teacher {}: it does not take {}-d prompt embeddings",
                    dir.display(),
                    embeddings[0].len()
                ),
            }
            teacher.set_precision(a.precision);
            check_memory(a, a.prompt.len(), &teacher.spec.net, a.guidance != 1.0)?;
            let cfg = SamplerConfig {
                method: a.method,
                steps: a.steps,
                s_churn: a.churn,
                guidance: a.guidance,
                ..Default::default()
            };
            let flat: Vec<f32> = rows
                .iter()
                .flat_map(|&i| embeddings[i as usize].iter().copied())
                .collect();
            let cond = Tensor::from_slice(&flat)
                .view([rows.len() as i64, embeddings[0].len() as i64])
                .to_device(device);
            tch::manual_seed(a.seed as i64);
            let mut shape = vec![rows.len() as i64];
            shape.extend(teacher.spec.net.sample_shape());
            let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
            sample(&teacher, &z, &cond, &cfg)?
        }
        (None, None) => bail!("--prompt needs --teacher or --bundle"),
    };
    write_picture(&x, &rows, &a.out)?;
    if let Some(p) = &a.points {
        write_points(&x, &rows, p)?;
        println!("points: {}", p.display());
    }
    println!(
        "picture: {} ({} prompts × {n} samples, one row per prompt)",
        a.out.display(),
        a.prompt.len()
    );
    Ok(())
}
