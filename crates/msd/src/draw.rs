//! Drawing samples into files (what `msd sample` does): from a teacher (multi-step, optionally
//! guided) or a bundle of one-step students (routed by class, or by prompt embedding), written
//! as a picture (a scatter plot for 2-D data, one grid row per class or prompt for images) and
//! optionally as raw values (`.csv` with the label last, or `.npy`). Also the training preview.

use crate::bundle::Bundle;
use crate::diffusion::{sample, SamplerConfig};
use crate::error::ResultExt;
use crate::model::EdmModel;
use crate::nets::{NetConfig, Precision};
use crate::text::prompt::{embed_prompt, load_encoder};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What to sample from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A teacher directory (model.json + model.safetensors).
    Teacher(PathBuf),
    /// A bundle of one-step students (bundle.json).
    Bundle(PathBuf),
}

impl Source {
    /// What the `--teacher` / `--bundle` flags name (a bundle when both are given).
    pub fn from_flags(teacher: Option<PathBuf>, bundle: Option<PathBuf>) -> Result<Self> {
        match (teacher, bundle) {
            (_, Some(b)) => Ok(Source::Bundle(b)),
            (Some(t), None) => Ok(Source::Teacher(t)),
            (None, None) => Err(invalid("give --teacher or --bundle".into())),
        }
    }
}

/// The options of one draw (the flags of `msd sample`).
#[derive(Clone, Debug)]
pub struct DrawOptions {
    pub source: Source,
    /// Classes to sample (empty: every class).
    pub classes: Vec<i64>,
    /// Prompts to sample instead of classes.
    pub prompts: Vec<String>,
    /// The text encoder's folder for prompts (default: the cache's).
    pub encoder: Option<PathBuf>,
    /// Samples per class (per prompt).
    pub n: i64,
    /// The teacher's sampler (method, steps, churn, guidance).
    pub sampler: SamplerConfig,
    pub seed: u64,
    /// The picture (PNG).
    pub out: PathBuf,
    /// The values (`.csv` or `.npy`).
    pub points: Option<PathBuf>,
    pub device: Device,
    pub precision: Precision,
}

/// What was drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Drawn {
    /// Classes from a teacher with `nfe` network evaluations each.
    Teacher { nfe: usize },
    /// Classes from a bundle; the students that were used (sorted).
    Bundle { students: Vec<usize> },
    /// Prompts (one picture row each); with a bundle, the student each was routed to.
    Prompts { routed: Vec<usize> },
}

/// The result of [`draw_to_files`].
#[derive(Clone, Debug, PartialEq)]
pub struct DrawOutcome {
    /// Samples drawn in all.
    pub samples: usize,
    pub drawn: Drawn,
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

/// Checks the options, draws, and writes the picture (and values).
pub fn draw_to_files(o: &DrawOptions) -> Result<DrawOutcome> {
    if o.n < 1 {
        return Err(invalid("--n must be ≥ 1".into()));
    }
    if o.sampler.steps < 1 {
        return Err(invalid("--steps must be ≥ 1".into()));
    }
    if !o.sampler.guidance.is_finite() {
        return Err(invalid(format!(
            "--guidance must be a finite number, got {}",
            o.sampler.guidance
        )));
    }
    let churn = o.sampler.s_churn;
    if !(churn.is_finite() && churn >= 0.0) {
        return Err(invalid(format!(
            "--churn must be a finite number ≥ 0, got {churn}"
        )));
    }
    check_outputs(&o.out, o.points.as_deref())?;
    if !o.prompts.is_empty() {
        if !o.classes.is_empty() {
            return Err(invalid("--class and --prompt exclude each other".into()));
        }
        return draw_prompts(o);
    }
    let (x, labels, drawn) = match &o.source {
        Source::Bundle(path) => {
            let mut bundle =
                Bundle::load(path, o.device).ctx(|| format!("--bundle {}", path.display()))?;
            for s in &mut bundle.students {
                s.set_precision(o.precision);
            }
            let classes = classes_or_all(&o.classes, bundle.manifest.partition.num_conditions);
            check_memory(o.n, classes.len(), &bundle.students[0].spec.net, false)?;
            let labels = repeat_each(&classes, o.n as usize);
            let z = bundle.noise(labels.len(), o.seed, o.device);
            crate::runtime::apply_threads(
                crate::runtime::CallSite::StudentOneStep,
                labels.len() as i64,
            );
            let (x, owners) = bundle.generate(&labels, &z).ctx(|| "--class")?;
            let mut students = owners;
            students.sort();
            students.dedup();
            (x, labels, Drawn::Bundle { students })
        }
        Source::Teacher(dir) => {
            let mut teacher =
                EdmModel::load_dir(dir, o.device).ctx(|| format!("--teacher {}", dir.display()))?;
            teacher.set_precision(o.precision);
            let classes = classes_or_all(&o.classes, teacher.num_classes() as usize);
            teacher.check_labels(&classes).ctx(|| "--class")?;
            let guided = o.sampler.guidance != 1.0;
            check_memory(o.n, classes.len(), &teacher.spec.net, guided)?;
            let labels = repeat_each(&classes, o.n as usize);
            let through_net = labels.len() as i64 * if guided { 2 } else { 1 };
            crate::runtime::apply_threads(crate::runtime::CallSite::TeacherSampling, through_net);
            let x = draw(&teacher, &labels, &o.sampler, o.seed, o.device)?;
            let nfe = o.sampler.nfe();
            (x, labels, Drawn::Teacher { nfe })
        }
    };
    write_outputs(o, &x, &labels)?;
    Ok(DrawOutcome {
        samples: labels.len(),
        drawn,
    })
}

fn classes_or_all(classes: &[i64], n: usize) -> Vec<i64> {
    if classes.is_empty() {
        (0..n as i64).collect()
    } else {
        classes.to_vec()
    }
}

/// Each of `items` `n` times in a row.
fn repeat_each(items: &[i64], n: usize) -> Vec<i64> {
    items
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, n))
        .collect()
}

fn write_outputs(o: &DrawOptions, x: &Tensor, labels: &[i64]) -> Result<()> {
    write_picture(x, labels, &o.out)?;
    if let Some(p) = &o.points {
        write_points(x, labels, p)?;
    }
    Ok(())
}

/// Prompts from a prompt-conditional teacher (guided with the null embedding) or bundle (each
/// prompt routed to its group's student by its embedding); one picture row per prompt.
fn draw_prompts(o: &DrawOptions) -> Result<DrawOutcome> {
    let encoder = load_encoder(o.encoder.as_deref(), Device::Cpu)?;
    let embeddings = o
        .prompts
        .iter()
        .map(|p| embed_prompt(&encoder, p, "--prompt"))
        .collect::<Result<Vec<Vec<f32>>>>()?;
    let n = o.n as usize;
    // Picture rows and CSV labels: the prompt's index.
    let rows = repeat_each(&(0..o.prompts.len() as i64).collect::<Vec<_>>(), n);
    let mut routed = Vec::new();
    let x = match &o.source {
        Source::Bundle(path) => {
            let mut bundle =
                Bundle::load(path, o.device).ctx(|| format!("--bundle {}", path.display()))?;
            if !bundle.is_prompt_conditional() {
                return Err(invalid(format!(
                    "--bundle {}: its students take classes, not prompts (use --class)",
                    path.display()
                )));
            }
            for s in &mut bundle.students {
                s.set_precision(o.precision);
            }
            check_memory(o.n, o.prompts.len(), &bundle.students[0].spec.net, false)?;
            let z = bundle.noise(rows.len(), o.seed, o.device);
            let mut out = Vec::new();
            for (i, e) in embeddings.iter().enumerate() {
                let (x, k) = bundle
                    .generate_prompt(e, &z.narrow(0, (i * n) as i64, n as i64))
                    .ctx(|| "--prompt")?;
                routed.push(k);
                out.push(x);
            }
            Tensor::cat(&out, 0)
        }
        Source::Teacher(dir) => {
            let mut teacher =
                EdmModel::load_dir(dir, o.device).ctx(|| format!("--teacher {}", dir.display()))?;
            match teacher.spec.net.cond().embedding_dim() {
                Some(d) if d as usize == embeddings[0].len() => {}
                _ => {
                    return Err(invalid(format!(
                        "--teacher {}: it does not take {}-d prompt embeddings",
                        dir.display(),
                        embeddings[0].len()
                    )))
                }
            }
            teacher.set_precision(o.precision);
            let guided = o.sampler.guidance != 1.0;
            check_memory(o.n, o.prompts.len(), &teacher.spec.net, guided)?;
            let flat: Vec<f32> = rows
                .iter()
                .flat_map(|&i| embeddings[i as usize].iter().copied())
                .collect();
            let cond = Tensor::from_slice(&flat)
                .view([rows.len() as i64, embeddings[0].len() as i64])
                .to_device(o.device);
            let z = seeded_noise(&teacher.spec.net, rows.len(), o.seed, o.device);
            sample(&teacher, &z, &cond, &o.sampler)?
        }
    };
    write_outputs(o, &x, &rows)?;
    Ok(DrawOutcome {
        samples: rows.len(),
        drawn: Drawn::Prompts { routed },
    })
}

/// Refuses `n` × `classes` samples when one batch of them would not fit in memory.
pub fn check_memory(n: i64, classes: usize, net: &NetConfig, guided: bool) -> Result<()> {
    let total = (n as u64).saturating_mul(classes as u64);
    let what = format!("--n {n} ({total} samples over {classes} classes)");
    crate::limits::check_fits(&what, crate::limits::sampling_bytes(net, total, guided))
}

/// `n` standard normal inputs of the net's sample shape, after seeding the global generator.
fn seeded_noise(net: &NetConfig, n: usize, seed: u64, device: Device) -> Tensor {
    tch::manual_seed(seed as i64);
    let mut shape = vec![n as i64];
    shape.extend(net.sample_shape());
    Tensor::randn(shape.as_slice(), (Kind::Float, device))
}

/// Samples `labels.len()` points with the given sampler (guided if `cfg.guidance` ≠ 1), seeded.
pub fn draw(
    model: &EdmModel,
    labels: &[i64],
    cfg: &SamplerConfig,
    seed: u64,
    device: Device,
) -> Result<Tensor> {
    let z = seeded_noise(&model.spec.net, labels.len(), seed, device);
    let l = Tensor::from_slice(labels).to_device(device);
    sample(model, &z, &l, cfg)
}

/// A picture of samples: a scatter plot (coloured by class) for 2-D data (`[N, 2]`), a grid with
/// one row per class for images (`[N, C, H, W]`); the parent folder is created.
pub fn write_picture(x: &Tensor, labels: &[i64], out: &Path) -> Result<()> {
    let writing = || format!("writing {}", out.display());
    if x.dim() == 4 {
        let img = crate::viz::class_grid(x, labels)?;
        return crate::viz::save_png(&img, out).ctx(writing);
    }
    if x.dim() != 2 || x.size()[1] != 2 {
        return Err(invalid(format!(
            "pictures of samples of shape {:?} are not supported yet",
            &x.size()[1..]
        )));
    }
    let mut panel = crate::viz::Panel::new(512, crate::data::toy2d::BOX);
    for (p, &c) in to_points(x).iter().zip(labels) {
        panel.scatter(std::slice::from_ref(p), crate::viz::palette(c as usize));
    }
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io(d, e))
            .ctx(|| format!("creating {}", d.display()))?;
    }
    // The format follows the file name's extension.
    panel
        .img
        .save(out)
        .map_err(|e| Error::Invalid(e.to_string()))
        .ctx(writing)
}

/// `[N, 2]` tensor → points.
pub fn to_points(x: &Tensor) -> Vec<[f32; 2]> {
    let v: Vec<f32> = Vec::try_from(x.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
        .unwrap_or_default();
    v.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// Refuses output paths that could not be written, before any sampling: `out` must be a
/// picture file name (not a directory), `points` a `.csv` or `.npy` one.
pub fn check_outputs(out: &Path, points: Option<&Path>) -> Result<()> {
    if out.is_dir() {
        return Err(invalid(format!(
            "--out {} is a directory; give a picture file name such as {}",
            out.display(),
            out.join("samples.png").display()
        )));
    }
    if image::ImageFormat::from_path(out).is_err() {
        return Err(invalid(format!(
            "--out {}: not a picture file name (use .png)",
            out.display()
        )));
    }
    if let Some(p) = points {
        if !matches!(p.extension().and_then(|e| e.to_str()), Some("csv" | "npy")) || p.is_dir() {
            return Err(invalid(format!(
                "--points {}: use a .csv or .npy file name",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Writes samples as CSV (values then label per row) or `.npy` (values only).
pub fn write_points(x: &Tensor, labels: &[i64], path: &Path) -> Result<()> {
    let writing = || format!("writing {}", path.display());
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => x.to_device(Device::Cpu).write_npy(path).ctx(writing)?,
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
            std::fs::write(path, s)
                .map_err(|e| Error::io(path, e))
                .ctx(writing)?;
        }
        _ => {
            return Err(invalid(format!(
                "--points {}: use a .csv or .npy file name",
                path.display()
            )))
        }
    }
    Ok(())
}

/// A preview picture of every class (500 points per class for 2-D data, 8 images otherwise),
/// written whole or not at all (temp + rename), so that a preview a kill cut short is missing,
/// and redone on resume, rather than truncated.
pub fn preview(model: &EdmModel, cfg: &SamplerConfig, seed: u64, out: &Path) -> Result<()> {
    let per = if model.spec.net.sample_shape().len() == 1 {
        500
    } else {
        8
    };
    let labels = repeat_each(&(0..model.num_classes()).collect::<Vec<_>>(), per);
    let x = draw(model, &labels, cfg, seed, model.device())?;
    // The temp name keeps the image extension (the encoder picks the format from it); the run
    // lock removes it after a kill.
    let tmp = out.with_file_name(format!(
        "{}.{}.tmp.png",
        out.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("preview"),
        std::process::id()
    ));
    write_picture(&x, &labels, &tmp)?;
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(out, e))
        .ctx(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_checked_before_sampling_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_outputs(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("--out") && e.contains("is a directory"), "{e}");
        let e = check_outputs(&dir.path().join("a.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a picture file name"), "{e}");
        let png = dir.path().join("a.png");
        let e = check_outputs(&png, Some(&dir.path().join("p.json")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--points") && e.contains(".csv or .npy"), "{e}");
        check_outputs(&png, Some(&dir.path().join("p.csv"))).unwrap();
    }

    #[test]
    fn csv_points_hold_values_then_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.csv");
        let x = Tensor::from_slice(&[1.5f32, -2.0, 0.25, 3.0]).view([2, 2]);
        write_points(&x, &[7, 3], &p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1.5,-2,7\n0.25,3,3\n");
        assert_eq!(to_points(&x), vec![[1.5, -2.0], [0.25, 3.0]]);
    }

    #[test]
    fn a_2d_picture_is_written_and_other_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub").join("s.png");
        let x = Tensor::from_slice(&[0.0f32, 0.0, 1.0, -1.0]).view([2, 2]);
        write_picture(&x, &[0, 1], &out).unwrap();
        assert_eq!(image::open(&out).unwrap().width(), 512);
        let e = write_picture(
            &Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
            &[0, 1],
            &out,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not supported"), "{e}");
    }
}
