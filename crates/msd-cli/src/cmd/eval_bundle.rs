//! `msd eval --bundle`: the same metrics as the teacher's evaluation, for a bundle of one-step
//! students: balanced labels, each sample from the student that owns its class (one network
//! evaluation), pooled into one set; plus a per-student breakdown (FD against the real images of
//! the student's own classes, class accuracy) and per-class accuracy.

use crate::cmd::eval::{hardware, per_class_table, Args};
use crate::{grid, progress};
use anyhow::{Context, Result};
use msd::bundle::Bundle;
use msd::data::images::ImageDataset;
use msd::eval::{balanced_labels, image_metrics, Classifier, MetricsConfig, Reference};
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

/// Evaluates `bundle_path`; `data`, `clf` and the floor are prepared by the caller.
#[allow(clippy::too_many_arguments)]
pub fn run(
    a: &Args,
    bundle_path: &Path,
    data: &ImageDataset,
    clf: &Classifier,
    clf_dir: &Path,
    heldout_accuracy: f64,
    out: &Path,
    device: Device,
) -> Result<()> {
    let mut bundle = Bundle::load(bundle_path, device)
        .with_context(|| format!("--bundle {}", bundle_path.display()))?;
    for s in &mut bundle.students {
        s.set_precision(a.precision);
    }
    let c = bundle.manifest.partition.num_conditions as i64;
    let mc = MetricsConfig::default();
    let reference = Reference::new(clf, data.train_images())?;
    let floor = image_metrics(
        clf,
        &reference,
        data.heldout_images(),
        data.heldout_labels(),
        &mc,
    )?;
    let labels = balanced_labels(a.n, c);
    msd::runtime::apply_threads(msd::runtime::CallSite::StudentOneStep, a.batch as i64);
    let bar = progress::bar(a.n as u64, "generating");
    let t0 = Instant::now();
    let mut xs = Vec::new();
    for (b, chunk) in labels.chunks(a.batch.max(1)).enumerate() {
        let z = bundle.noise(chunk.len(), a.seed.wrapping_add(b as u64), device);
        xs.push(bundle.generate(chunk, &z)?.0.to_device(Device::Cpu));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let gen_seconds = t0.elapsed().as_secs_f64();
    let x = Tensor::cat(&xs, 0);
    let m = image_metrics(clf, &reference, &x, &labels, &mc)?;

    // Per student: its own samples against the real training images of its own classes.
    let mut per_student = Vec::new();
    for (k, entry) in bundle.manifest.students.iter().enumerate() {
        let rows: Vec<i64> = (0..labels.len())
            .filter(|&i| entry.classes.contains(&labels[i]))
            .map(|i| i as i64)
            .collect();
        let real_rows: Vec<i64> = (0..data.train_labels().len())
            .filter(|&i| entry.classes.contains(&data.train_labels()[i]))
            .map(|i| i as i64)
            .collect();
        let xs = x.index_select(0, &Tensor::from_slice(&rows));
        let ls: Vec<i64> = rows.iter().map(|&i| labels[i as usize]).collect();
        let real = data
            .train_images()
            .index_select(0, &Tensor::from_slice(&real_rows));
        let r = image_metrics(clf, &Reference::new(clf, &real)?, &xs, &ls, &mc)?;
        per_student.push(json!({ "student": k, "classes": entry.classes, "params": entry.params, "n": r.n, "fd_own_classes": r.fd, "class_accuracy": r.class_accuracy, "precision": r.precision, "recall": r.recall }));
    }
    let per_grid = 10.min(a.n / c as usize).max(1);
    let take = (per_grid * c as usize).min(a.n) as i64;
    grid::write_class_grid(
        &x.narrow(0, 0, take),
        &labels[..take as usize],
        &out.join("samples.png"),
    )?;
    let hw = hardware();
    let batches = a.n.div_ceil(a.batch.max(1));
    let report = json!({
        "n": m.n, "fd": m.fd, "kid": m.kid, "kid_std": m.kid_std, "precision": m.precision, "recall": m.recall,
        "class_accuracy": m.class_accuracy, "per_class_accuracy": m.per_class_accuracy,
        "floor_fd": floor.fd, "floor": floor,
        "reference": { "split": "train", "n": m.n_reference },
        "feature_net": { "path": clf_dir, "heldout_accuracy": heldout_accuracy, "features": clf.config.features },
        "bundle": bundle_path, "students": bundle.manifest.students.len(), "per_student": per_student,
        "nfe": 1,
        "seeds": { "first": a.seed, "last": a.seed + batches as u64 - 1, "batch": a.batch, "rule": "batch b draws its noise after manual_seed(first + b); sample i asks for class i mod C" },
        "metrics": mc, "data": a.data, "generation_seconds": gen_seconds, "hardware": hw, "precision": a.precision,
    });
    msd::train::checkpoint::write_json_atomic(&out.join("eval.json"), &report)?;
    let mut md = format!(
        "# Evaluation of `{}` ({} one-step students)\n\nFeature network: the project's own CNN classifier `{}` (penultimate layer, {} features; held-out accuracy {:.2}%) — not Inception, so these FD/KID figures are not comparable with published FID.\n\nSamples: {} (balanced, classes i mod {}), 1 NFE each from the owning student, seeds {}..={} (batches of {}); reference: training split ({} images). Hardware: {}; generation took {:.1} s.\n\n| set | n | FD | KID | precision | recall | class accuracy |\n|---|---|---|---|---|---|---|\n",
        bundle_path.display(), bundle.manifest.students.len(), clf_dir.display(), clf.config.features, 100.0 * heldout_accuracy,
        m.n, c, a.seed, a.seed + batches as u64 - 1, a.batch, m.n_reference, hw, gen_seconds
    );
    for (name, r) in [("students (pooled)", &m), ("held-out real (floor)", &floor)] {
        md.push_str(&format!(
            "| {name} | {} | {:.3} | {:.4} ± {:.4} | {:.3} | {:.3} | {:.2}% |\n",
            r.n,
            r.fd,
            r.kid,
            r.kid_std,
            r.precision,
            r.recall,
            100.0 * r.class_accuracy
        ));
    }
    md.push_str("\nPer student (FD against the real images of its own classes):\n\n| student | classes | params | n | FD (own classes) | class accuracy |\n|---|---|---|---|---|---|\n");
    for s in &per_student {
        md.push_str(&format!(
            "| {} | {:?} | {} | {} | {:.3} | {:.2}% |\n",
            s["student"],
            s["classes"]
                .as_array()
                .map(|v| v.iter().filter_map(|c| c.as_i64()).collect::<Vec<_>>())
                .unwrap_or_default(),
            s["params"],
            s["n"],
            s["fd_own_classes"].as_f64().unwrap_or(f64::NAN),
            100.0 * s["class_accuracy"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    md.push_str(&per_class_table(
        "Per-class accuracy:",
        &m.per_class_accuracy,
    ));
    msd::train::checkpoint::write_bytes_atomic(&out.join("eval.md"), md.as_bytes())?;
    println!(
        "students: FD {:.3} (floor {:.3}), KID {:.4}, precision {:.3}, recall {:.3}, class accuracy {:.2}% on {} samples (1 NFE)",
        m.fd, floor.fd, m.kid, m.precision, m.recall, 100.0 * m.class_accuracy, m.n
    );
    println!(
        "report: {} and eval.md; grid: {}",
        out.join("eval.json").display(),
        out.join("samples.png").display()
    );
    Ok(())
}
