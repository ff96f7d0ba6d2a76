//! `msd eval --bundle`: the same metrics as the teacher's evaluation, for a bundle of one-step
//! students: balanced labels, each sample from the student that owns its class (one network
//! evaluation), pooled into one set; plus a per-student breakdown (FD against the real images of
//! the student's own classes, class accuracy) and per-class accuracy.

use crate::cmd::eval::{hardware, Args};
use crate::{grid, progress};
use anyhow::{Context, Result};
use msd::bundle::Bundle;
use msd::data::images::ImageDataset;
use msd::eval::{
    balanced_labels, image_metrics, Classifier, ClassifierRecord, EvalReport, FeatureNetInfo,
    MetricsConfig, Reference, SeedsInfo, StudentEval,
};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

/// Evaluates `bundle_path`; `data`, `clf` and the floor are prepared by the caller.
#[allow(clippy::too_many_arguments)]
pub fn run(
    a: &Args,
    data_spec: &str,
    bundle_path: &Path,
    data: &ImageDataset,
    clf: &Classifier,
    clf_dir: &Path,
    record: &ClassifierRecord,
    out: &Path,
    device: Device,
) -> Result<()> {
    let mut bundle = Bundle::load(bundle_path, device)
        .with_context(|| format!("--bundle {}", bundle_path.display()))?;
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
    for s in &mut bundle.students {
        s.set_precision(a.precision);
    }
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
        per_student.push(StudentEval {
            student: k,
            classes: entry.classes.clone(),
            params: entry.params,
            n: r.n,
            fd_own_classes: r.fd,
            class_accuracy: r.class_accuracy,
            precision: r.precision,
            recall: r.recall,
        });
    }
    let per_grid = 10.min(a.n / c as usize).max(1);
    let take = (per_grid * c as usize).min(a.n) as i64;
    grid::write_class_grid(
        &x.narrow(0, 0, take),
        &labels[..take as usize],
        &out.join("samples.png"),
    )?;
    let mut report = EvalReport::new(
        &m,
        &floor,
        FeatureNetInfo::new(clf_dir, clf, record),
        1,
        SeedsInfo::new(a.seed, a.n, a.batch),
        &mc,
        data_spec,
        gen_seconds,
        &hardware(),
    );
    report.bundle = Some(bundle_path.to_path_buf());
    report.net_precision = Some(a.precision);
    report.students = Some(bundle.manifest.students.len());
    report.per_student = Some(per_student);
    report.save(&out.join("eval.json"))?;
    msd::train::checkpoint::write_bytes_atomic(
        &out.join("eval.md"),
        report.to_markdown().as_bytes(),
    )?;
    println!("{}", report.summary_line("students"));
    println!(
        "report: {} and eval.md; grid: {}",
        out.join("eval.json").display(),
        out.join("samples.png").display()
    );
    Ok(())
}
