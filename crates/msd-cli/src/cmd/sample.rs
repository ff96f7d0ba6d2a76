//! `msd sample`: samples from a teacher (multi-step) or from a bundle of students (one network
//! evaluation per sample, routed by class), written as a picture (scatter plot for 2-D data) and
//! optionally as raw values (`.csv` or `.npy`). With `--prompt`, see [`super::sample_prompt`].

use crate::plot;
use anyhow::{bail, Context, Result};
use msd::bundle::Bundle;
use msd::diffusion::{sample, SamplerConfig, SamplerMethod};
use msd::model::EdmModel;
use msd::nets::Precision;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["teacher", "bundle"])))]
pub struct Args {
    /// Teacher directory (holding model.json and model.safetensors).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Bundle of one-step students (bundle.json); --steps/--method/--churn/--guidance do not apply.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Class to sample (repeatable or comma-separated; default: every class).
    #[arg(long, value_delimiter = ',')]
    pub class: Vec<i64>,
    /// Prompt to sample instead of classes (repeatable), for prompt-conditional teachers and
    /// bundles; a bundle routes each prompt to its group's student by the prompt's embedding.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// The all-MiniLM-L6-v2 folder for --prompt (default: scripts/setup-text-encoder.sh's).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Samples per class (per prompt with --prompt).
    #[arg(long, default_value_t = 1000)]
    pub n: i64,
    /// Sampler steps (Heun: 2·steps − 1 network evaluations).
    #[arg(long, default_value_t = 18)]
    pub steps: usize,
    /// The ODE integrator.
    #[arg(long, value_enum, default_value = "heun")]
    pub method: SamplerMethod,
    /// Stochastic churn S_churn (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Picture to write (PNG).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the samples as .csv or .npy (with labels in the last CSV column).
    #[arg(long)]
    pub points: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
    /// Precision of the network's evaluation (f32, or bf16 weights and activations).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device;
    if a.n < 1 {
        bail!("--n must be ≥ 1");
    }
    let method = a.method;
    if a.steps < 1 {
        bail!("--steps must be ≥ 1");
    }
    if !a.guidance.is_finite() {
        bail!("--guidance must be a finite number, got {}", a.guidance);
    }
    if !(a.churn.is_finite() && a.churn >= 0.0) {
        bail!("--churn must be a finite number ≥ 0, got {}", a.churn);
    }
    check_outputs(&a)?;
    if !a.prompt.is_empty() {
        if !a.class.is_empty() {
            bail!("--class and --prompt exclude each other");
        }
        return crate::cmd::sample_prompt::run(&a, device);
    }
    if let Some(b) = &a.bundle {
        return run_bundle(&a, b, device);
    }
    let tdir = a.teacher.clone().unwrap_or_default();
    let mut teacher = EdmModel::load_dir(&tdir, device)
        .with_context(|| format!("--teacher {}", tdir.display()))?;
    teacher.set_precision(a.precision);
    let classes: Vec<i64> = if a.class.is_empty() {
        (0..teacher.num_classes()).collect()
    } else {
        a.class.clone()
    };
    teacher.check_labels(&classes).context("--class")?;
    check_memory(&a, classes.len(), &teacher.spec.net, a.guidance != 1.0)?;
    let cfg = SamplerConfig {
        method,
        steps: a.steps,
        s_churn: a.churn,
        guidance: a.guidance,
        ..Default::default()
    };
    let labels: Vec<i64> = classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, a.n as usize))
        .collect();
    let through_net = labels.len() as i64 * if a.guidance != 1.0 { 2 } else { 1 };
    msd::runtime::apply_threads(msd::runtime::CallSite::TeacherSampling, through_net);
    let x = draw(&teacher, &labels, &cfg, a.seed, device)?;
    write_picture(&x, &labels, &a.out)?;
    if let Some(p) = &a.points {
        write_points(&x, &labels, p)?;
        println!("points: {}", p.display());
    }
    println!(
        "picture: {} ({} samples, {} NFE each)",
        a.out.display(),
        labels.len(),
        cfg.nfe()
    );
    Ok(())
}

fn run_bundle(a: &Args, path: &Path, device: Device) -> Result<()> {
    let mut bundle =
        Bundle::load(path, device).with_context(|| format!("--bundle {}", path.display()))?;
    for s in &mut bundle.students {
        s.set_precision(a.precision);
    }
    let n_classes = bundle.manifest.partition.num_conditions as i64;
    let classes: Vec<i64> = if a.class.is_empty() {
        (0..n_classes).collect()
    } else {
        a.class.clone()
    };
    check_memory(a, classes.len(), &bundle.students[0].spec.net, false)?;
    let labels: Vec<i64> = classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, a.n as usize))
        .collect();
    let z = bundle.noise(labels.len(), a.seed, device);
    msd::runtime::apply_threads(msd::runtime::CallSite::StudentOneStep, labels.len() as i64);
    let (x, owners) = bundle.generate(&labels, &z).context("--class")?;
    write_picture(&x, &labels, &a.out)?;
    if let Some(p) = &a.points {
        write_points(&x, &labels, p)?;
        println!("points: {}", p.display());
    }
    let mut used: Vec<usize> = owners.clone();
    used.sort();
    used.dedup();
    println!(
        "picture: {} ({} samples, 1 NFE each, students {:?})",
        a.out.display(),
        labels.len(),
        used
    );
    Ok(())
}

/// Refuses `--n` × classes samples when one batch of them would not fit in memory.
pub(crate) fn check_memory(
    a: &Args,
    classes: usize,
    net: &msd::nets::NetConfig,
    guided: bool,
) -> Result<()> {
    let total = (a.n as u64).saturating_mul(classes as u64);
    let what = format!("--n {} ({total} samples over {classes} classes)", a.n);
    msd::limits::check_fits(&what, msd::limits::sampling_bytes(net, total, guided))?;
    Ok(())
}

/// Samples `labels.len()` points with the given sampler (guided if `cfg.guidance` ≠ 1), seeded.
pub fn draw(
    model: &EdmModel,
    labels: &[i64],
    cfg: &SamplerConfig,
    seed: u64,
    device: Device,
) -> Result<Tensor> {
    tch::manual_seed(seed as i64);
    let mut shape = vec![labels.len() as i64];
    shape.extend(model.spec.net.sample_shape());
    let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
    let l = Tensor::from_slice(labels).to_device(device);
    Ok(sample(model, &z, &l, cfg)?)
}

/// A picture of samples: a scatter plot (coloured by class) for 2-D data, a grid with one row
/// per class for images.
pub fn write_picture(x: &Tensor, labels: &[i64], out: &Path) -> Result<()> {
    if x.dim() == 4 {
        return crate::grid::write_class_grid(x, labels, out);
    }
    if x.dim() != 2 || x.size()[1] != 2 {
        bail!(
            "pictures of samples of shape {:?} are not supported yet",
            &x.size()[1..]
        );
    }
    let pts = to_points(x);
    let mut panel = plot::Panel::new(512, msd::data::toy2d::BOX);
    for (p, &c) in pts.iter().zip(labels) {
        panel.scatter(std::slice::from_ref(p), plot::palette(c as usize));
    }
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    panel
        .img
        .save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// `[N, 2]` tensor → points.
pub fn to_points(x: &Tensor) -> Vec<[f32; 2]> {
    let v: Vec<f32> = Vec::try_from(x.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
        .unwrap_or_default();
    v.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// Refuses output paths that could not be written, before any sampling: `--out` must be a
/// picture file name (not a directory), `--points` a `.csv` or `.npy` one.
fn check_outputs(a: &Args) -> Result<()> {
    if a.out.is_dir() {
        bail!(
            "--out {} is a directory; give a picture file name such as {}",
            a.out.display(),
            a.out.join("samples.png").display()
        );
    }
    if image::ImageFormat::from_path(&a.out).is_err() {
        bail!(
            "--out {}: not a picture file name (use .png)",
            a.out.display()
        );
    }
    if let Some(p) = &a.points {
        if !matches!(p.extension().and_then(|e| e.to_str()), Some("csv" | "npy")) || p.is_dir() {
            bail!("--points {}: use a .csv or .npy file name", p.display());
        }
    }
    Ok(())
}

/// Writes samples as CSV (values then label per row) or `.npy` (values only).
pub fn write_points(x: &Tensor, labels: &[i64], path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => x
            .to_device(Device::Cpu)
            .write_npy(path)
            .with_context(|| format!("writing {}", path.display()))?,
        Some("csv") => {
            let flat = x.to_device(Device::Cpu).flatten(1, -1);
            let v: Vec<f32> = Vec::try_from(flat.flatten(0, -1))?;
            let d = flat.size()[1] as usize;
            let mut s = String::new();
            for (row, l) in v.chunks_exact(d).zip(labels) {
                for val in row {
                    s.push_str(&format!("{val},"));
                }
                s.push_str(&format!("{l}\n"));
            }
            std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
        }
        _ => bail!("--points {}: use a .csv or .npy file name", path.display()),
    }
    Ok(())
}

/// A preview picture of every class (used by training to show progress).
pub fn preview(model: &EdmModel, cfg: &SamplerConfig, seed: u64, out: &Path) -> Result<()> {
    let per = if model.spec.net.sample_shape().len() == 1 {
        500
    } else {
        8
    };
    let labels: Vec<i64> = (0..model.num_classes())
        .flat_map(|c| std::iter::repeat_n(c, per))
        .collect();
    let x = draw(model, &labels, cfg, seed, model.device())?;
    // Written whole or not at all (temp + rename), so that a preview a kill cut short is
    // missing, and redone on resume, rather than truncated. The temp name keeps the image
    // extension (the encoder picks the format from it); the run lock removes it after a kill.
    let tmp = out.with_file_name(format!(
        "{}.{}.tmp.png",
        out.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("preview"),
        std::process::id()
    ));
    write_picture(&x, &labels, &tmp)?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))
}
