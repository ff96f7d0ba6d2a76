//! `msd toy`: the paper's 2-D result (its Fig. 4) on the seeded 8-class toy. Trains (or reuses)
//! the teacher, then for each K distils K students with the contiguous partition at the same
//! per-student architecture and iteration budget, and measures per-class 2-D histogram ℓ1
//! distances (64×64 bins over [−2.5, 2.5]²) between students, teacher (Heun-18) and data.
//! Writes `toy_report.json`, `toy_report.md` and `toy.png`.

use crate::cmd::distill::train_one;
use crate::{plot, progress};
use anyhow::{bail, Context, Result};
use msd::bundle::{Bundle, TeacherRef};
use msd::config::RunConfig;
use msd::data::toy2d::{Toy2d, BOX};
use msd::data::TrainingData;
use msd::diffusion::sample;
use msd::distill::StageKind;
use msd::distill::StudentJob;
use msd::eval::{hist_l1, Hist2d};
use msd::model::EdmModel;
use msd::partition::{Partition, Strategy};
use msd::run::{ensure_pairs, teacher_id};
use msd::teacher::{train_teacher, Progress};
use rand_chacha::rand_core::SeedableRng;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The shipped toy configuration, embedded so `msd toy` runs from anywhere.
pub const TOY_CONFIG: &str = include_str!("../../../../configs/toy.toml");

const BINS: usize = 64;

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (reused: finished pieces are not recomputed).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Numbers of students to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub students: Vec<usize>,
    /// A tiny budget (≤ 2 minutes) for smoke tests; the numbers are not meaningful.
    #[arg(long)]
    pub quick: bool,
    /// Another config instead of the embedded configs/toy.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The students' method: dm (distribution matching) or cd (consistency distillation).
    #[arg(long, value_enum, default_value = "dm")]
    pub method: StageKind,
}

#[derive(Serialize)]
struct RunReport {
    students: usize,
    l1_to_teacher: f64,
    l1_to_data: f64,
    per_class_l1_to_teacher: Vec<f64>,
    per_class_l1_to_data: Vec<f64>,
    params_per_student: i64,
    train_seconds: f64,
    partition: Vec<usize>,
}

#[derive(Serialize)]
struct TeacherReport {
    l1_to_data: f64,
    per_class_l1_to_data: Vec<f64>,
    train_seconds: f64,
    params: i64,
}

#[derive(Serialize)]
struct Report {
    seed: u64,
    method: StageKind,
    quick: bool,
    samples_per_class: usize,
    bins: usize,
    box_half_width: f64,
    per_student_iterations: u64,
    noise_floor_l1: f64,
    per_class_noise_floor_l1: Vec<f64>,
    teacher: TeacherReport,
    runs: Vec<RunReport>,
    wall_seconds: f64,
    hardware: String,
}

fn hist(x: &Tensor) -> Hist2d {
    Hist2d::from_points(&crate::cmd::sample::to_points(x), BINS, BOX)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Teacher samples of one class, `[n, 2]`.
fn teacher_samples(
    teacher: &EdmModel,
    cfg: &RunConfig,
    class: i64,
    n: usize,
    seed: u64,
) -> Result<Tensor> {
    tch::manual_seed(seed as i64);
    let z = Tensor::randn([n as i64, 2], (Kind::Float, Device::Cpu));
    let l = Tensor::full([n as i64], class, (Kind::Int64, Device::Cpu));
    Ok(sample(teacher, &z, &l, &cfg.sampler)?)
}

pub fn run(a: Args) -> Result<()> {
    let wall = Instant::now();
    let (text, origin) = match &a.config {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?,
            p.clone(),
        ),
        None => (
            TOY_CONFIG.to_string(),
            PathBuf::from("configs/toy.toml (embedded)"),
        ),
    };
    let mut cfg = RunConfig::from_toml(&text, &origin)?;
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let mut n_eval = 10_000;
    if a.quick {
        cfg.teacher.steps = 1500;
        cfg.teacher.batch_size = 256;
        cfg.teacher.checkpoint_every = 500;
        cfg.distill.iterations = 300;
        cfg.distill.regression_pairs_per_class = 64;
        cfg.distill.checkpoint_every = 300;
        cfg.distill.cd.iterations = 300;
        n_eval = 2000;
    }
    if !matches!(a.method, StageKind::Dm | StageKind::Cd) {
        bail!(
            "--method: {} is not a per-student method (dm or cd)",
            a.method
        );
    }
    let iterations = match a.method {
        StageKind::Cd => cfg.distill.cd.iterations,
        _ => cfg.distill.iterations,
    };
    let toy = match cfg.data.open(Path::new("."))?.num_classes() {
        8 => Toy2d::standard(),
        _ => {
            bail!("msd toy runs on the standard 8-class toy (data.kind = \"toy2d\" with defaults)")
        }
    };
    let num_classes = toy.classes.len();
    if let Some(&k) = a.students.iter().find(|&&k| k == 0 || k > num_classes) {
        bail!("--students: {k} is not between 1 and {num_classes}");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    cfg.save(&a.out.join("config.toml"))?;
    let device = Device::Cpu;

    // 1. Teacher.
    let tdir = a.out.join("teacher");
    let bar = progress::bar(cfg.teacher.steps, "teacher");
    let (teacher, tsum) = train_teacher(
        &cfg.model,
        &cfg.teacher,
        &toy,
        &cfg.data.id(),
        &tdir,
        cfg.seed,
        device,
        &mut |p| {
            if let Progress::Step { step, .. } | Progress::Start { step, .. } = p {
                bar.set_position(step)
            }
        },
    )?;
    bar.finish_and_clear();
    println!(
        "teacher: {} parameters, trained in {:.0} s",
        teacher.num_params(),
        tsum.train_seconds
    );

    // 2. Reference sets per class: teacher (two independent sets) and data.
    let eval_seed = cfg.seed.wrapping_add(1_000_003);
    let mut t_a = Vec::new();
    let mut t_hist = Vec::new();
    let mut floor = Vec::new();
    let mut data_hist = Vec::new();
    let mut teacher_to_data = Vec::new();
    for c in 0..num_classes {
        let xa = teacher_samples(&teacher, &cfg, c as i64, n_eval, eval_seed + c as u64)?;
        let xb = teacher_samples(&teacher, &cfg, c as i64, n_eval, eval_seed + 100 + c as u64)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(eval_seed + 200 + c as u64);
        let pts: Vec<[f32; 2]> = toy
            .sample_class(c, n_eval, &mut rng)
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32])
            .collect();
        let hd = Hist2d::from_points(&pts, BINS, BOX);
        let ha = hist(&xa);
        floor.push(hist_l1(&ha, &hist(&xb)));
        teacher_to_data.push(hist_l1(&ha, &hd));
        t_hist.push(ha);
        data_hist.push(hd);
        t_a.push(xa);
    }

    // 3. Students for each K.
    let pairs = ensure_pairs(
        &a.out.join("pairs.safetensors"),
        &teacher,
        &cfg.distill,
        &cfg.sampler,
        cfg.seed,
    )?;
    let tid = teacher_id(&tdir);
    let mut runs = Vec::new();
    let mut panels_k: Vec<(usize, Tensor, Vec<i64>)> = Vec::new();
    for &k in &a.students {
        let kdir = a.out.join(format!("K{k}"));
        let partition = Partition::build(Strategy::Contiguous, num_classes, k, cfg.seed, None)?;
        partition.save(&kdir.join("partition.json"))?;
        let mut secs = 0.0;
        let mut params = 0;
        let mut dirs = Vec::new();
        for s in 0..k {
            let dir = kdir
                .join("students")
                .join(s.to_string())
                .join(a.method.name());
            let job = StudentJob {
                teacher: &teacher,
                partition: &partition,
                student: s,
                pairs: pairs.as_ref(),
                dir: &dir,
                seed: cfg.seed,
                teacher_id: &tid,
                generator_init: None,
                stage: a.method,
                real_data: (a.method == StageKind::Cd).then_some(&toy as &dyn TrainingData),
                data_id: "toy",
                resume_from: None,
            };
            let (g, sum) = train_one(&cfg.distill, &job, &format!("K={k} s{s}"))?;
            secs += sum.train_seconds;
            params = g.num_params();
            dirs.push(dir);
        }
        let bpath = kdir.join("bundle.json");
        Bundle::assemble(
            &bpath,
            &partition,
            &dirs,
            Some(TeacherRef {
                dir: &tdir,
                sampler: &cfg.sampler,
            }),
            cfg.distill.sigma_max,
        )?;
        let bundle = Bundle::load(&bpath, device)?;
        let mut to_teacher = Vec::new();
        let mut to_data = Vec::new();
        let mut all_x = Vec::new();
        let mut all_l = Vec::new();
        for c in 0..num_classes {
            let labels = vec![c as i64; n_eval];
            let z = bundle.noise(n_eval, eval_seed + 300 + c as u64, device);
            let (x, _) = bundle.generate(&labels, &z)?;
            let h = hist(&x);
            to_teacher.push(hist_l1(&h, &t_hist[c]));
            to_data.push(hist_l1(&h, &data_hist[c]));
            all_x.push(x.narrow(0, 0, 1000.min(n_eval as i64)));
            all_l.extend(std::iter::repeat_n(c as i64, 1000.min(n_eval)));
        }
        println!(
            "K = {k}: mean ℓ1 to teacher {:.4}, to data {:.4} ({:.0} s of training)",
            mean(&to_teacher),
            mean(&to_data),
            secs
        );
        panels_k.push((k, Tensor::cat(&all_x, 0), all_l));
        runs.push(RunReport {
            students: k,
            l1_to_teacher: mean(&to_teacher),
            l1_to_data: mean(&to_data),
            per_class_l1_to_teacher: to_teacher,
            per_class_l1_to_data: to_data,
            params_per_student: params,
            train_seconds: secs,
            partition: partition.owner.clone(),
        });
    }

    let report = Report {
        seed: cfg.seed,
        method: a.method,
        quick: a.quick,
        samples_per_class: n_eval,
        bins: BINS,
        box_half_width: BOX,
        per_student_iterations: iterations,
        noise_floor_l1: mean(&floor),
        per_class_noise_floor_l1: floor,
        teacher: TeacherReport {
            l1_to_data: mean(&teacher_to_data),
            per_class_l1_to_data: teacher_to_data,
            train_seconds: tsum.train_seconds,
            params: teacher.num_params(),
        },
        runs,
        wall_seconds: wall.elapsed().as_secs_f64(),
        hardware: crate::cmd::eval::hardware(),
    };
    msd::train::checkpoint::write_json_atomic(&a.out.join("toy_report.json"), &report)?;
    std::fs::write(a.out.join("toy_report.md"), markdown(&report))?;
    write_figure(&a.out.join("toy.png"), &t_a, &panels_k, &report)?;
    println!(
        "noise floor (teacher vs teacher) {:.4}; teacher to data {:.4}",
        report.noise_floor_l1, report.teacher.l1_to_data
    );
    println!("report: {}", a.out.join("toy_report.json").display());
    println!("figure: {}", a.out.join("toy.png").display());
    Ok(())
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Toy MSD: distance to the teacher against the number of students\n\n\
         Metric: per-class ℓ1 between 2-D histograms ({b}×{b} bins over [−{h}, {h}]²) of {n} samples per class, \
         averaged over the 8 classes. Students: one-step (1 NFE), {m} stage, {it} iterations each, contiguous partition. \
         Teacher: Heun-18 (35 NFE). Seed {seed}. Hardware: {hw}. Wall time {w:.0} s.\n\n\
         | K | ℓ1 to teacher | ℓ1 to data | params/student | train s (all students) |\n|---|---|---|---|---|\n",
        m = r.method.name().to_uppercase(), b = r.bins, h = r.box_half_width, n = r.samples_per_class, it = r.per_student_iterations, seed = r.seed, hw = r.hardware, w = r.wall_seconds
    );
    for run in &r.runs {
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {} | {:.0} |\n",
            run.students,
            run.l1_to_teacher,
            run.l1_to_data,
            run.params_per_student,
            run.train_seconds
        ));
    }
    s.push_str(&format!(
        "\nNoise floor (two independent teacher sample sets): {:.4}. Teacher to data: {:.4}.\n\n\
         `toy.png`: teacher samples | K = {} samples | K = {} samples | ℓ1 to teacher against K (blue), noise floor (grey, dashed).\n",
        r.noise_floor_l1,
        r.teacher.l1_to_data,
        r.runs.first().map(|x| x.students).unwrap_or(0),
        r.runs.last().map(|x| x.students).unwrap_or(0)
    ));
    s
}

fn write_figure(
    path: &Path,
    teacher: &[Tensor],
    runs: &[(usize, Tensor, Vec<i64>)],
    r: &Report,
) -> Result<()> {
    let scatter = |x: &Tensor, labels: &[i64]| {
        let mut p = plot::Panel::new(400, BOX);
        for (pt, &c) in crate::cmd::sample::to_points(x).iter().zip(labels) {
            p.scatter(std::slice::from_ref(pt), plot::palette(c as usize));
        }
        p.img
    };
    let mut panels = Vec::new();
    let tl: Vec<i64> = (0..teacher.len() as i64)
        .flat_map(|c| std::iter::repeat_n(c, 1000))
        .collect();
    let tx = Tensor::cat(
        &teacher
            .iter()
            .map(|t| t.narrow(0, 0, 1000.min(t.size()[0])))
            .collect::<Vec<_>>(),
        0,
    );
    panels.push(scatter(&tx, &tl));
    if let Some((_, x, l)) = runs.first() {
        panels.push(scatter(x, l));
    }
    if runs.len() > 1 {
        let (_, x, l) = &runs[runs.len() - 1];
        panels.push(scatter(x, l));
    }
    let ys: Vec<f64> = r.runs.iter().map(|x| x.l1_to_teacher).collect();
    panels.push(plot::line_chart(
        &[(ys, plot::palette(0))],
        &[(r.noise_floor_l1, image::Rgb([150, 150, 150]))],
        400,
    ));
    plot::hstack(&panels)
        .save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
