//! The paper's 2-D result (its Fig. 4) on the seeded 8-class toy, capacity-bound: trains (or
//! reuses) the teacher, then for every student width × number of students K × training seed
//! distils K students with the contiguous partition and the same per-student budget, and
//! measures per-class 2-D histogram ℓ1 distances (64×64 bins over [−2.5, 2.5]²) between the
//! students, the teacher (Heun) and the data. Students of the teacher's width start from the
//! teacher; narrower ones start from TSM (as smaller students do on images).
//!
//! Layout under `out/`: `teacher/`, `pairs.safetensors`, and one run directory per sweep cell
//! and seed, `<method>-w<width>/K<k>/s<seed>/` (partition, students, bundle, `eval.json`).
//! Evaluation noise is fixed (derived from the config's seed); only the students' training seed
//! varies. Every figure of the report is mean ± std over seeds with the per-seed values.

use super::stats::{verdict_lower, Summary, Verdict};
use super::students::{distil_students, student_dir, StudentsJob};
use super::StageKind;
use super::{Observer, Provenance};
use crate::bundle::{Bundle, TeacherRef};
use crate::config::RunConfig;
use crate::data::toy2d::{Toy2d, BOX};
use crate::data::TrainingData;
use crate::diffusion::sample;
use crate::distill::pairs::RegressionPairs;
use crate::eval::{hist_l1, Hist2d};
use crate::model::EdmModel;
use crate::nets::NetConfig;
use crate::partition::{Partition, Strategy};
use crate::run::{ensure_pairs, teacher_id};
use crate::teacher::{train_teacher, Progress};
use crate::train::checkpoint::{read_json, write_bytes_atomic, write_json_atomic};
use crate::{Error, Result};
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The shipped toy configuration (`configs/toy.toml`), embedded so the toy runs from anywhere.
pub const TOY_CONFIG: &str = include_str!("../../../../configs/toy.toml");

/// Histogram bins per axis.
pub const BINS: usize = 64;

/// Samples per class of the plots.
const PLOT_PER_CLASS: usize = 1000;

/// The per-student distillation method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ToyMethod {
    /// Distribution matching (DMD2's stage 1).
    Dm,
    /// Consistency distillation.
    Cd,
}

impl ToyMethod {
    pub fn as_str(self) -> &'static str {
        self.stage().name()
    }

    /// The student stage that trains the generator.
    pub fn stage(self) -> StageKind {
        match self {
            ToyMethod::Dm => StageKind::Dm,
            ToyMethod::Cd => StageKind::Cd,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ToyOptions {
    /// The run config (the toy's teacher, sampler and `[distill]` budgets).
    pub config: RunConfig,
    pub out: PathBuf,
    /// Training seeds of the students.
    pub seeds: Vec<u64>,
    /// Student widths (MLP hidden width); empty = the teacher's width only.
    pub widths: Vec<i64>,
    /// Numbers of students K.
    pub students: Vec<usize>,
    pub method: ToyMethod,
    /// Samples per class of every histogram.
    pub samples_per_class: usize,
    /// Write the report (false: train and evaluate the cells only, e.g. in a worker process).
    pub report: bool,
    pub quick: bool,
    pub provenance: Provenance,
    pub device: Device,
    /// Pilot runs: train and evaluate only this student of every cell (its classes only; the
    /// result goes to `eval-pilot<k>.json`; no report).
    pub pilot_student: Option<usize>,
}

/// Shrinks `cfg` to the smoke-test budget of `--quick` and returns the samples per class to use.
pub fn quick_config(cfg: &mut RunConfig) -> usize {
    cfg.teacher.steps = 1500;
    cfg.teacher.batch_size = 256;
    cfg.teacher.checkpoint_every = 500;
    cfg.distill.iterations = 300;
    cfg.distill.regression_pairs_per_class = 64;
    cfg.distill.checkpoint_every = 300;
    cfg.distill.tsm.steps = 100;
    cfg.distill.tsm.checkpoint_every = 100;
    cfg.distill.cd.iterations = 300;
    2000
}

/// One sweep cell at one seed (`<cell>/s<seed>/eval.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyCellResult {
    /// What made it: the students' config hashes and the evaluation settings.
    pub key: CellKey,
    pub l1_to_teacher: f64,
    pub l1_to_data: f64,
    pub per_class_l1_to_teacher: Vec<f64>,
    pub per_class_l1_to_data: Vec<f64>,
    pub params_per_student: i64,
    /// Summed training-loop seconds of every student and stage.
    pub train_seconds: f64,
    pub partition: Vec<usize>,
}

/// The evaluation key of a cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellKey {
    pub students: Vec<String>,
    pub samples_per_class: usize,
    pub eval_seed: u64,
}

/// A row of the report: one width and K, over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyRun {
    pub method: ToyMethod,
    pub width: i64,
    pub students: usize,
    /// How the students start: `teacher` (same width) or `tsm`.
    pub init: String,
    pub params_per_student: i64,
    /// Mean over seeds of the class-averaged ℓ1 to the teacher.
    pub l1_to_teacher: f64,
    pub l1_to_teacher_std: f64,
    pub l1_to_teacher_per_seed: Vec<f64>,
    pub l1_to_data: f64,
    pub l1_to_data_std: f64,
    pub l1_to_data_per_seed: Vec<f64>,
    /// Per class, mean over seeds.
    pub per_class_l1_to_teacher: Vec<f64>,
    pub per_class_l1_to_data: Vec<f64>,
    /// Summed training seconds of the K students (all stages), mean over seeds.
    pub train_seconds: f64,
    pub train_seconds_per_seed: Vec<f64>,
    pub partition: Vec<usize>,
}

/// A claim at one width: K = max students are closer to the teacher than K = min.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyClaim {
    pub claim: String,
    pub width: i64,
    /// The paper's statement (its Fig. 4 is qualitative).
    pub paper: String,
    pub ours: String,
    /// (ℓ1 at K max − ℓ1 at K min) / ℓ1 at K min.
    pub relative_change: f64,
    pub verdict: Verdict,
}

/// One line: the claim, our figure, its relative change and the verdict.
impl std::fmt::Display for ToyClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({:+.1}%) → {}",
            self.claim,
            self.ours,
            100.0 * self.relative_change,
            self.verdict.as_str()
        )
    }
}

/// The teacher's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyTeacher {
    pub width: i64,
    pub params: i64,
    pub l1_to_data: f64,
    pub per_class_l1_to_data: Vec<f64>,
    pub train_seconds: f64,
}

/// `toy_report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyReport {
    pub seeds: Vec<u64>,
    pub method: ToyMethod,
    pub quick: bool,
    pub samples_per_class: usize,
    pub bins: usize,
    pub box_half_width: f64,
    pub per_student_iterations: u64,
    pub tsm_steps: u64,
    /// The distillation's optimisation preset and its settings
    /// ([`crate::distill::preset::describe`]), the same for every run.
    #[serde(default)]
    pub preset: String,
    /// Two independent teacher sample sets against each other, class-averaged.
    pub noise_floor_l1: f64,
    pub per_class_noise_floor_l1: Vec<f64>,
    pub teacher: ToyTeacher,
    pub runs: Vec<ToyRun>,
    pub claims: Vec<ToyClaim>,
    pub provenance: Provenance,
    pub wall_seconds: f64,
}

/// The report plus samples for a figure.
pub struct ToyOutcome {
    pub report: ToyReport,
    /// Teacher samples `[n, 2]` and their labels.
    pub teacher_samples: (Tensor, Vec<i64>),
    /// Student samples of the narrowest width at the first seed: (K, samples, labels) for the
    /// smallest and the largest K.
    pub student_samples: Vec<(usize, Tensor, Vec<i64>)>,
    /// The width of `student_samples`.
    pub sample_width: i64,
}

impl ToyOutcome {
    /// The figure: teacher samples | narrowest width at the smallest K | … at the largest K |
    /// per width: ℓ1 to the teacher against K with ± std bars and the noise floor.
    pub fn figure(&self) -> crate::Result<image::RgbImage> {
        use crate::viz::{hstack, line_chart, palette, ChartSpec, HLine, Panel, Series};
        let scatter = |x: &Tensor, labels: &[i64]| {
            let mut p = Panel::new(400, BOX);
            for (pt, &c) in points(x).iter().zip(labels) {
                p.scatter(std::slice::from_ref(pt), palette(c as usize));
            }
            p.img
        };
        let mut panels = vec![scatter(&self.teacher_samples.0, &self.teacher_samples.1)];
        for (_, x, l) in &self.student_samples {
            panels.push(scatter(x, l));
        }
        let r = &self.report;
        let ymax = r
            .runs
            .iter()
            .map(|x| x.l1_to_teacher + x.l1_to_teacher_std)
            .fold(r.noise_floor_l1, f64::max)
            * 1.1;
        let mut widths: Vec<i64> = r.runs.iter().map(|x| x.width).collect();
        widths.dedup();
        for w in widths {
            let runs: Vec<&ToyRun> = r.runs.iter().filter(|x| x.width == w).collect();
            let series = Series {
                name: "students".into(),
                points: runs
                    .iter()
                    .map(|x| (x.students as f64, x.l1_to_teacher))
                    .collect(),
                std: runs.iter().map(|x| x.l1_to_teacher_std).collect(),
                colour: palette(0),
            };
            let floor = HLine {
                name: "noise floor".into(),
                y: r.noise_floor_l1,
                colour: image::Rgb([150, 150, 150]),
            };
            let mut spec =
                ChartSpec::new(&format!("width {w}"), "students K", "ℓ1 to teacher", 400);
            spec.y_range = Some((0.0, ymax.max(1e-9)));
            spec.integer_x = true;
            panels.push(line_chart(&spec, &[series], &[floor])?);
        }
        Ok(hstack(&panels))
    }
}

/// The teacher, the reference histograms and the shared pairs: what every cell needs.
pub struct ToyContext {
    opts: ToyOptions,
    toy: Toy2d,
    teacher: EdmModel,
    teacher_id: String,
    teacher_seconds: f64,
    pairs: Option<RegressionPairs>,
    eval_seed: u64,
    teacher_hist: Vec<Hist2d>,
    data_hist: Vec<Hist2d>,
    floor: Vec<f64>,
    teacher_to_data: Vec<f64>,
}

/// What the cached reference histograms were drawn with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RefKey {
    teacher: String,
    samples_per_class: usize,
    eval_seed: u64,
    sampler: serde_json::Value,
}

/// `reference.json`: the teacher's histograms per class and the noise floor.
#[derive(Serialize, Deserialize)]
struct RefCache {
    key: RefKey,
    teacher: Vec<Vec<f64>>,
    floor: Vec<f64>,
}

fn hist(x: &Tensor) -> Hist2d {
    Hist2d::from_points(&points(x), BINS, BOX)
}

/// `[N, 2]` tensor → points.
pub use crate::draw::to_points as points;

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
    let z = Tensor::randn([n as i64, 2], (Kind::Float, teacher.device()));
    let l = Tensor::full([n as i64], class, (Kind::Int64, teacher.device()));
    sample(teacher, &z, &l, &cfg.sampler)
}

impl ToyOptions {
    fn teacher_width(&self) -> Result<i64> {
        match &self.config.model.net {
            NetConfig::Mlp(m) => Ok(m.width),
            _ => Err(Error::config(
                "model.net.kind",
                "the toy needs an MLP teacher (kind = \"mlp\")",
            )),
        }
    }

    /// The widths swept (the teacher's when none are given).
    pub fn widths(&self) -> Result<Vec<i64>> {
        Ok(if self.widths.is_empty() {
            vec![self.teacher_width()?]
        } else {
            self.widths.clone()
        })
    }

    /// The run directory of a cell at a seed.
    pub fn cell_dir(&self, width: i64, k: usize, seed: u64) -> PathBuf {
        self.out
            .join(format!("{}-w{width}", self.method.as_str()))
            .join(format!("K{k}"))
            .join(format!("s{seed}"))
    }
}

impl ToyContext {
    /// Checks the options, trains (or reuses) the teacher, draws the reference sets and the
    /// shared regression pairs.
    pub fn prepare(opts: ToyOptions, obs: &mut dyn Observer) -> Result<Self> {
        let cfg = &opts.config;
        let toy = match cfg.data.open(Path::new("."))?.num_classes() {
            8 => Toy2d::standard(),
            _ => return Err(Error::config(
                "data",
                "the toy runs on the standard 8-class toy (data.kind = \"toy2d\" with defaults)",
            )),
        };
        let num_classes = toy.classes.len();
        if let Some(&k) = opts.students.iter().find(|&&k| k == 0 || k > num_classes) {
            return Err(Error::Invalid(format!(
                "--students: {k} is not between 1 and {num_classes}"
            )));
        }
        if opts.students.is_empty() || opts.seeds.is_empty() {
            return Err(Error::Invalid(
                "--students and --seeds need at least one value each".into(),
            ));
        }
        if let Some(w) = opts.widths.iter().find(|&&w| w < 1) {
            return Err(Error::Invalid(format!("--widths: {w} is not ≥ 1")));
        }
        if opts.samples_per_class < 10 {
            return Err(Error::Invalid("samples per class must be ≥ 10".into()));
        }
        let tw = opts.teacher_width()?;
        std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
        cfg.save(&opts.out.join("config.toml"))?;

        let tdir = opts.out.join("teacher");
        obs.begin("teacher", cfg.teacher.steps);
        let r = train_teacher(
            &cfg.model,
            &cfg.teacher,
            &toy,
            &cfg.data.id(),
            &tdir,
            cfg.seed,
            opts.device,
            &mut |p| {
                if let Progress::Step { step, .. } | Progress::Start { step, .. } = p {
                    obs.step(step)
                }
            },
        );
        obs.end();
        let (teacher, tsum) = r?;
        obs.note(&format!(
            "teacher: width {tw}, {} parameters, trained in {:.0} s",
            teacher.num_params(),
            tsum.train_seconds
        ));

        // Reference sets per class: the teacher (two independent sets, cached in
        // `reference.json`: 35 NFE per sample is the costly part) and the data.
        let n = opts.samples_per_class;
        let eval_seed = cfg.seed.wrapping_add(1_000_003);
        let tid = teacher_id(&tdir);
        let ref_key = RefKey {
            teacher: tid.clone(),
            samples_per_class: n,
            eval_seed,
            sampler: serde_json::to_value(&cfg.sampler).unwrap_or_default(),
        };
        let ref_path = opts.out.join("reference.json");
        let cached = read_json::<RefCache>(&ref_path)
            .ok()
            .filter(|r| r.key == ref_key);
        let reference = match cached {
            Some(r) => r,
            None => {
                obs.note("drawing the teacher's reference sets");
                let (mut hists, mut floor) = (Vec::new(), Vec::new());
                for c in 0..num_classes {
                    let xa = teacher_samples(&teacher, cfg, c as i64, n, eval_seed + c as u64)?;
                    let xb =
                        teacher_samples(&teacher, cfg, c as i64, n, eval_seed + 100 + c as u64)?;
                    let ha = hist(&xa);
                    floor.push(hist_l1(&ha, &hist(&xb)));
                    hists.push(ha.p);
                }
                let r = RefCache {
                    key: ref_key,
                    teacher: hists,
                    floor,
                };
                write_json_atomic(&ref_path, &r)?;
                r
            }
        };
        let (mut teacher_hist, mut data_hist, mut teacher_to_data) =
            (Vec::new(), Vec::new(), Vec::new());
        for c in 0..num_classes {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(eval_seed + 200 + c as u64);
            let pts: Vec<[f32; 2]> = toy
                .sample_class(c, n, &mut rng)
                .iter()
                .map(|p| [p[0] as f32, p[1] as f32])
                .collect();
            let hd = Hist2d::from_points(&pts, BINS, BOX);
            let ha = Hist2d {
                bins: BINS,
                half: BOX,
                p: reference.teacher[c].clone(),
            };
            teacher_to_data.push(hist_l1(&ha, &hd));
            teacher_hist.push(ha);
            data_hist.push(hd);
        }
        let floor = reference.floor;
        let pairs = ensure_pairs(
            &opts.out.join("pairs.safetensors"),
            &teacher,
            &cfg.distill,
            &cfg.sampler,
            cfg.seed,
        )?;
        Ok(Self {
            teacher_id: tid,
            teacher_seconds: tsum.train_seconds,
            toy,
            teacher,
            pairs,
            eval_seed,
            teacher_hist,
            data_hist,
            floor,
            teacher_to_data,
            opts,
        })
    }

    pub fn options(&self) -> &ToyOptions {
        &self.opts
    }

    /// The noise floor (two teacher sets), class-averaged.
    pub fn noise_floor(&self) -> f64 {
        mean(&self.floor)
    }

    /// The run config of a cell: the student network (narrower ones start from TSM) and the seed.
    fn cell_config(&self, width: i64) -> Result<(RunConfig, Vec<StageKind>)> {
        let mut cfg = self.opts.config.clone();
        let tw = self.opts.teacher_width()?;
        if width == tw {
            cfg.distill.student_net = None;
            Ok((cfg, vec![self.opts.method.stage()]))
        } else {
            let NetConfig::Mlp(mut m) = cfg.model.net.clone() else {
                return Err(Error::config("model.net.kind", "the toy needs an MLP"));
            };
            m.width = width;
            cfg.distill.student_net = Some(NetConfig::Mlp(m));
            Ok((cfg, vec![StageKind::Tsm, self.opts.method.stage()]))
        }
    }

    /// Trains (or reuses) and evaluates (or reuses) one cell at one seed.
    pub fn cell(
        &self,
        width: i64,
        k: usize,
        seed: u64,
        obs: &mut dyn Observer,
    ) -> Result<ToyCellResult> {
        let dir = self.opts.cell_dir(width, k, seed);
        let (mut cfg, stages) = self.cell_config(width)?;
        cfg.distill.students = k;
        let num_classes = self.toy.classes.len();
        let partition = Partition::build(Strategy::Contiguous, num_classes, k, cfg.seed, None)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        partition.save(&dir.join("partition.json"))?;
        let data_id = cfg.data.id();
        let done = distil_students(
            &StudentsJob {
                distill: &cfg.distill,
                teacher: &self.teacher,
                teacher_id: &self.teacher_id,
                partition: &partition,
                pairs: self.pairs.as_ref(),
                data: Some(&self.toy as &dyn TrainingData),
                data_id: &data_id,
                root: &dir,
                seed,
                stages: &stages,
                device: self.opts.device,
                label: &format!("w{width} K={k} s{seed}"),
                only: self.opts.pilot_student,
            },
            obs,
        )?;
        let key = CellKey {
            students: done.hashes.clone(),
            samples_per_class: self.opts.samples_per_class,
            eval_seed: self.eval_seed,
        };
        let eval_path = match self.opts.pilot_student {
            Some(p) => dir.join(format!("eval-pilot{p}.json")),
            None => dir.join("eval.json"),
        };
        if let Ok(r) = read_json::<ToyCellResult>(&eval_path) {
            if r.key == key {
                return Ok(r);
            }
        }
        let n = self.opts.samples_per_class;
        let (mut to_teacher, mut to_data) = (Vec::new(), Vec::new());
        if let Some(p) = self.opts.pilot_student {
            let g = EdmModel::load_dir(
                &student_dir(&dir, p, self.opts.method.stage()),
                self.opts.device,
            )?;
            for c in partition.classes_of(p) {
                tch::manual_seed((self.eval_seed + 300 + c as u64) as i64);
                let z = Tensor::randn([n as i64, 2], (Kind::Float, self.opts.device));
                let l = Tensor::full([n as i64], c, (Kind::Int64, self.opts.device));
                let h = hist(&tch::no_grad(|| {
                    g.generate(&z, &l, self.opts.config.distill.sigma_max)
                }));
                to_teacher.push(hist_l1(&h, &self.teacher_hist[c as usize]));
                to_data.push(hist_l1(&h, &self.data_hist[c as usize]));
            }
        }
        let bundle = match self.opts.pilot_student {
            Some(_) => None,
            None => Some(self.bundle(&dir, &partition)?),
        };
        for c in (0..num_classes).filter(|_| bundle.is_some()) {
            let x = self.student_samples(bundle.as_ref().expect("checked"), c, n)?;
            let h = hist(&x);
            to_teacher.push(hist_l1(&h, &self.teacher_hist[c]));
            to_data.push(hist_l1(&h, &self.data_hist[c]));
        }
        let r = ToyCellResult {
            key,
            l1_to_teacher: mean(&to_teacher),
            l1_to_data: mean(&to_data),
            per_class_l1_to_teacher: to_teacher,
            per_class_l1_to_data: to_data,
            params_per_student: done.params,
            train_seconds: done.train_seconds,
            partition: partition.owner.clone(),
        };
        write_json_atomic(&eval_path, &r)?;
        obs.note(&format!(
            "width {width}, K = {k}, seed {seed}: ℓ1 to teacher {:.4}, to data {:.4} ({:.0} s of training)",
            r.l1_to_teacher, r.l1_to_data, r.train_seconds
        ));
        Ok(r)
    }

    fn bundle(&self, dir: &Path, partition: &Partition) -> Result<Bundle> {
        let dirs: Vec<PathBuf> = (0..partition.students)
            .map(|s| student_dir(dir, s, self.opts.method.stage()))
            .collect();
        let path = dir.join("bundle.json");
        Bundle::assemble(
            &path,
            partition,
            &dirs,
            Some(TeacherRef {
                dir: &self.opts.out.join("teacher"),
                sampler: &self.opts.config.sampler,
            }),
            self.opts.config.distill.sigma_max,
        )?;
        Bundle::load(&path, self.opts.device)
    }

    /// `n` one-step samples of class `c` from the fixed evaluation noise.
    fn student_samples(&self, bundle: &Bundle, c: usize, n: usize) -> Result<Tensor> {
        let labels = vec![c as i64; n];
        let z = bundle.noise(n, self.eval_seed + 300 + c as u64, self.opts.device);
        Ok(bundle.generate(&labels, &z)?.0)
    }

    /// Plot samples (first [`PLOT_PER_CLASS`] of every class) of a finished cell.
    fn plot_samples(&self, width: i64, k: usize, seed: u64) -> Result<(Tensor, Vec<i64>)> {
        let dir = self.opts.cell_dir(width, k, seed);
        let partition = Partition::load(&dir.join("partition.json"))?;
        let bundle = self.bundle(&dir, &partition)?;
        let m = PLOT_PER_CLASS.min(self.opts.samples_per_class);
        let (mut xs, mut ls) = (Vec::new(), Vec::new());
        for c in 0..self.toy.classes.len() {
            let x = self.student_samples(&bundle, c, self.opts.samples_per_class)?;
            xs.push(x.narrow(0, 0, m as i64));
            ls.extend(std::iter::repeat_n(c as i64, m));
        }
        Ok((Tensor::cat(&xs, 0), ls))
    }

    /// Every cell of the sweep (the given widths and seeds only).
    pub fn cells(&self, widths: &[i64], seeds: &[u64], obs: &mut dyn Observer) -> Result<()> {
        for &w in widths {
            for &k in &self.opts.students {
                for &s in seeds {
                    self.cell(w, k, s, obs)?;
                }
            }
        }
        Ok(())
    }

    /// Runs (or reuses) every cell and writes `toy_report.json` and `toy_report.md`.
    pub fn report(&self, wall: Instant, obs: &mut dyn Observer) -> Result<ToyOutcome> {
        let o = &self.opts;
        let widths = o.widths()?;
        let tw = o.teacher_width()?;
        let mut runs = Vec::new();
        for &w in &widths {
            for &k in &o.students {
                let cells: Vec<ToyCellResult> = o
                    .seeds
                    .iter()
                    .map(|&s| self.cell(w, k, s, obs))
                    .collect::<Result<_>>()?;
                let col = |f: &dyn Fn(&ToyCellResult) -> f64| -> Vec<f64> {
                    cells.iter().map(f).collect()
                };
                let t = Summary::of(&col(&|c| c.l1_to_teacher));
                let d = Summary::of(&col(&|c| c.l1_to_data));
                let secs = col(&|c| c.train_seconds);
                let per_class = |f: &dyn Fn(&ToyCellResult, usize) -> f64| -> Vec<f64> {
                    (0..self.toy.classes.len())
                        .map(|c| mean(&cells.iter().map(|r| f(r, c)).collect::<Vec<_>>()))
                        .collect()
                };
                runs.push(ToyRun {
                    method: o.method,
                    width: w,
                    students: k,
                    init: if w == tw { "teacher" } else { "tsm" }.into(),
                    params_per_student: cells[0].params_per_student,
                    l1_to_teacher: t.mean,
                    l1_to_teacher_std: t.std,
                    l1_to_teacher_per_seed: t.per_seed,
                    l1_to_data: d.mean,
                    l1_to_data_std: d.std,
                    l1_to_data_per_seed: d.per_seed,
                    per_class_l1_to_teacher: per_class(&|r, c| r.per_class_l1_to_teacher[c]),
                    per_class_l1_to_data: per_class(&|r, c| r.per_class_l1_to_data[c]),
                    train_seconds: mean(&secs),
                    train_seconds_per_seed: secs,
                    partition: cells[0].partition.clone(),
                });
            }
        }
        let claims = claims(&runs, &widths, &o.students);
        let report = ToyReport {
            seeds: o.seeds.clone(),
            method: o.method,
            quick: o.quick,
            samples_per_class: o.samples_per_class,
            bins: BINS,
            box_half_width: BOX,
            per_student_iterations: match o.method {
                ToyMethod::Dm => o.config.distill.iterations,
                ToyMethod::Cd => o.config.distill.cd.iterations,
            },
            tsm_steps: o.config.distill.tsm.steps,
            preset: crate::distill::preset::describe(&o.config.distill),
            noise_floor_l1: mean(&self.floor),
            per_class_noise_floor_l1: self.floor.clone(),
            teacher: ToyTeacher {
                width: tw,
                params: self.teacher.num_params(),
                l1_to_data: mean(&self.teacher_to_data),
                per_class_l1_to_data: self.teacher_to_data.clone(),
                train_seconds: self.teacher_seconds,
            },
            runs,
            claims,
            provenance: o.provenance.clone(),
            wall_seconds: wall.elapsed().as_secs_f64(),
        };
        write_json_atomic(&o.out.join("toy_report.json"), &report)?;
        write_bytes_atomic(&o.out.join("toy_report.md"), markdown(&report).as_bytes())?;
        let sample_width = *widths.iter().min().unwrap_or(&tw);
        let mut student_samples = Vec::new();
        let (kmin, kmax) = (
            *o.students.iter().min().unwrap_or(&1),
            *o.students.iter().max().unwrap_or(&1),
        );
        for k in if kmin == kmax {
            vec![kmin]
        } else {
            vec![kmin, kmax]
        } {
            let (x, l) = self.plot_samples(sample_width, k, o.seeds[0])?;
            student_samples.push((k, x, l));
        }
        let m = PLOT_PER_CLASS.min(o.samples_per_class);
        let mut tx = Vec::new();
        for c in 0..self.toy.classes.len() {
            tx.push(teacher_samples(
                &self.teacher,
                &o.config,
                c as i64,
                m,
                self.eval_seed + c as u64,
            )?);
        }
        let tl = (0..self.toy.classes.len() as i64)
            .flat_map(|c| std::iter::repeat_n(c, m))
            .collect();
        Ok(ToyOutcome {
            report,
            teacher_samples: (Tensor::cat(&tx, 0), tl),
            student_samples,
            sample_width,
        })
    }
}

/// Per width: is ℓ1 to the teacher at the largest K below the smallest K's?
fn claims(runs: &[ToyRun], widths: &[i64], students: &[usize]) -> Vec<ToyClaim> {
    let (Some(&kmin), Some(&kmax)) = (students.iter().min(), students.iter().max()) else {
        return Vec::new();
    };
    if kmin == kmax {
        return Vec::new();
    }
    let summary = |r: &ToyRun| Summary {
        mean: r.l1_to_teacher,
        std: r.l1_to_teacher_std,
        per_seed: r.l1_to_teacher_per_seed.clone(),
    };
    widths
        .iter()
        .filter_map(|&w| {
            let find = |k| runs.iter().find(|r| r.width == w && r.students == k);
            let (lo, hi) = (find(kmin)?, find(kmax)?);
            let (a, b) = (summary(hi), summary(lo));
            Some(ToyClaim {
                claim: format!(
                    "width {w}: K = {kmax} students are closer to the teacher than K = {kmin} (ℓ1)"
                ),
                width: w,
                paper: "Fig. 4: more students, closer to the teacher".into(),
                ours: format!("{} vs {}", a.show(4), b.show(4)),
                relative_change: (a.mean - b.mean) / b.mean,
                verdict: verdict_lower(&a, &b),
            })
        })
        .collect()
}

fn markdown(r: &ToyReport) -> String {
    let seeds: Vec<String> = r.seeds.iter().map(|s| s.to_string()).collect();
    let mut s = format!(
        "# Toy MSD: distance to the teacher against the number of students and the student width\n\n\
         Generated by `{cmd}` (commit `{commit}`). Hardware: {hw}. Wall time {w:.0} s.\n\n\
         Metric: per-class ℓ1 between 2-D histograms ({b}×{b} bins over [−{h}, {h}]²) of {n} samples per class, \
         averaged over the 8 classes; mean ± std (sample std) over training seeds {seeds}, per-seed values in \
         `toy_report.json`. Evaluation noise is the same for every seed. Students: one-step (1 NFE), method {m}, \
         {it} iterations each, contiguous partition; students of the teacher's width ({tw}) start from the teacher, \
         narrower ones from TSM ({tsm} steps). Teacher: Heun ({tp} parameters).\n\n\
         Optimisation preset of every run: {preset}.\n\n\
         | width | K | init | params/student | ℓ1 to teacher | ℓ1 to data | train s (K students, mean) |\n|---|---|---|---|---|---|---|\n",
        cmd = r.provenance.command,
        commit = r.provenance.commit,
        hw = r.provenance.hardware,
        w = r.wall_seconds,
        b = r.bins,
        h = r.box_half_width,
        n = r.samples_per_class,
        seeds = seeds.join(", "),
        m = r.method.as_str().to_uppercase(),
        it = r.per_student_iterations,
        tw = r.teacher.width,
        tsm = r.tsm_steps,
        tp = r.teacher.params,
        preset = r.preset,
    );
    for run in &r.runs {
        let t = Summary {
            mean: run.l1_to_teacher,
            std: run.l1_to_teacher_std,
            per_seed: run.l1_to_teacher_per_seed.clone(),
        };
        let d = Summary {
            mean: run.l1_to_data,
            std: run.l1_to_data_std,
            per_seed: run.l1_to_data_per_seed.clone(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} |\n",
            run.width,
            run.students,
            run.init,
            run.params_per_student,
            t.show(4),
            d.show(4),
            run.train_seconds
        ));
    }
    s.push_str(&format!(
        "\nNoise floor (two independent teacher sample sets): {:.4}. Teacher to data: {:.4}.\n\n",
        r.noise_floor_l1, r.teacher.l1_to_data
    ));
    if !r.claims.is_empty() {
        s.push_str(
            "| claim | paper | ours (ℓ1, mean ± std) | change | verdict |\n|---|---|---|---|---|\n",
        );
        for c in &r.claims {
            s.push_str(&format!(
                "| {} | {} | {} | {:+.1}% | {} |\n",
                c.claim,
                c.paper,
                c.ours,
                100.0 * c.relative_change,
                c.verdict.as_str()
            ));
        }
        s.push_str("\nVerdict: `held` when the intervals mean ± std do not overlap in the claimed direction, `reversed` when they separate the other way, else `within noise`; `pending` with fewer than 3 seeds.\n\n");
    }
    s.push_str("`toy.png`: teacher samples | narrowest width, smallest K | narrowest width, largest K | one panel per width: ℓ1 to the teacher against K (mean, bars ± std; grey dashed: noise floor).\n");
    s
}

/// Trains, evaluates and reports the whole sweep in this process.
pub fn run_toy(opts: ToyOptions, obs: &mut dyn Observer) -> Result<Option<ToyOutcome>> {
    let wall = Instant::now();
    let ctx = ToyContext::prepare(opts, obs)?;
    let o = ctx.options();
    ctx.cells(&o.widths()?, &o.seeds, obs)?;
    if !o.report {
        return Ok(None);
    }
    ctx.report(wall, obs).map(Some)
}
