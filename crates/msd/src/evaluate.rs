//! One image evaluation of a teacher or a bundle of one-step students, as `msd eval` runs it:
//! the defaults taken from the run the model belongs to, the real reference and its held-out
//! floor ([`Scorer`]), balanced seeded generation, the metrics (plus, for a bundle, a
//! per-student breakdown) and the files written: `eval.json`, `eval.md` and `samples.png`.
//! Progress goes through a callback (samples generated so far); the library prints nothing.

use crate::bundle::Bundle;
use crate::config::RunConfig;
use crate::data::{ImageDataset, TrainingData};
use crate::diffusion::SamplerConfig;
use crate::eval::{
    balanced_labels, generate, image_metrics, Classifier, ClassifierRecord, EvalReport,
    FeatureNetInfo, ImageMetrics, MetricsConfig, Reference, SeedsInfo, StudentEval,
};
use crate::model::EdmModel;
use crate::nets::Precision;
use crate::runtime::{apply_threads, CallSite};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// The shipped dataset (MNIST-10k), relative to the repository root: the data of last resort.
pub const DEFAULT_DATA: &str =
    "idx:data/mnist10k/images-idx3-ubyte.gz,data/mnist10k/labels-idx1-ubyte.gz";

/// CPU model name, its widest vector extension and the number of threads torch uses (recorded
/// in every report): "AMD EPYC" alone names both an AVX2 Zen 3 and an AVX-512 part, whose
/// timings differ.
pub fn hardware() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let simd = field("flags").map_or(String::new(), |f| simd_level(&f));
    format!("{model}{simd}, {} torch threads", tch::get_num_threads())
}

/// The widest x86 vector extension in a `/proc/cpuinfo` flags line, as " (AVX-512 BF16)",
/// " (AVX-512)", " (AVX2)", or "" for none of them.
fn simd_level(flags: &str) -> String {
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    match (has("avx512f"), has("avx512_bf16"), has("avx2")) {
        (true, true, _) => " (AVX-512 BF16)".into(),
        (true, false, _) => " (AVX-512)".into(),
        (false, _, true) => " (AVX2)".into(),
        _ => String::new(),
    }
}

/// The path `name` in the folder that holds `anchor` (a teacher directory or a bundle file):
/// where an evaluation's defaults and outputs live.
pub fn beside(anchor: &Path, name: &str) -> PathBuf {
    let t = anchor.components().as_path();
    t.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(name)
}

/// The config of the run `anchor` belongs to: `config.toml` in the folder holding it, if any,
/// with that folder.
pub fn run_config_beside(anchor: &Path) -> Result<Option<(PathBuf, RunConfig)>> {
    let root = beside(anchor, "");
    let p = root.join("config.toml");
    if !p.is_file() {
        return Ok(None);
    }
    Ok(Some((root, RunConfig::load(&p)?)))
}

/// Where the evaluation's data came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataOrigin {
    /// Given explicitly.
    Given,
    /// The run's own `[data]`, beside the model.
    Run,
    /// No run config beside the model: [`DEFAULT_DATA`].
    Default,
}

/// What an evaluation samples with and scores against, after defaults.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The `--data` spec (paths relative to the working directory).
    pub data: String,
    pub data_origin: DataOrigin,
    /// The teacher's sampler (ignored for bundles).
    pub sampler: SamplerConfig,
}

/// Fills in the defaults for the model at `anchor`: the given values, else its run's config,
/// else MNIST-10k and EDM's Heun-18 unguided.
pub fn resolve(
    anchor: &Path,
    data: Option<&str>,
    steps: Option<usize>,
    guidance: Option<f64>,
) -> Result<Resolved> {
    let run = run_config_beside(anchor)?;
    let (data, data_origin) = match (data, &run) {
        (Some(s), _) => (s.to_string(), DataOrigin::Given),
        (None, Some((root, cfg))) => {
            let mut d = cfg.data.clone();
            d.rebase(root, Path::new("."))?;
            (d.to_spec(), DataOrigin::Run)
        }
        (None, None) => (DEFAULT_DATA.into(), DataOrigin::Default),
    };
    let mut sampler = run.map(|(_, c)| c.sampler).unwrap_or_default();
    if let Some(s) = steps {
        sampler.steps = s;
    }
    if let Some(g) = guidance {
        sampler.guidance = g;
    }
    Ok(Resolved {
        data,
        data_origin,
        sampler,
    })
}

/// How many samples, from which seeds, in which batches, at which precision.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    pub n: usize,
    /// First noise seed; batch b uses seed + b.
    pub seed: u64,
    pub batch: usize,
    pub precision: Precision,
    pub device: Device,
}

/// The scoring side of an evaluation: the feature network, the real training split as the
/// reference, and the held-out split's metrics as the floor.
pub struct Scorer<'a> {
    pub clf: &'a Classifier,
    pub clf_dir: &'a Path,
    pub record: &'a ClassifierRecord,
    pub data: &'a ImageDataset,
    /// The data spec recorded in the report.
    pub data_spec: &'a str,
    pub metrics: MetricsConfig,
    reference: Reference,
    floor: ImageMetrics,
}

impl<'a> Scorer<'a> {
    /// Embeds the training split and scores the held-out split against it.
    pub fn new(
        clf: &'a Classifier,
        clf_dir: &'a Path,
        record: &'a ClassifierRecord,
        data: &'a ImageDataset,
        data_spec: &'a str,
    ) -> Result<Self> {
        let metrics = MetricsConfig::default();
        let reference = Reference::new(clf, data.train_images())?;
        let floor = image_metrics(
            clf,
            &reference,
            data.heldout_images(),
            data.heldout_labels(),
            &metrics,
        )?;
        Ok(Self {
            clf,
            clf_dir,
            record,
            data,
            data_spec,
            metrics,
            reference,
            floor,
        })
    }

    /// The report of generated samples `x` for `labels`, beside the floor.
    fn report(
        &self,
        x: &Tensor,
        labels: &[i64],
        nfe: usize,
        s: &EvalSettings,
        secs: f64,
    ) -> Result<EvalReport> {
        let m = image_metrics(self.clf, &self.reference, x, labels, &self.metrics)?;
        let mut r = EvalReport::new(
            &m,
            &self.floor,
            FeatureNetInfo::new(self.clf_dir, self.clf, self.record),
            nfe,
            SeedsInfo::new(s.seed, s.n, s.batch),
            &self.metrics,
            self.data_spec,
            secs,
            &hardware(),
        );
        r.net_precision = Some(s.precision);
        r.fd_raw = Some(crate::eval::raw_fd(self.clf, &self.reference, x)?);
        Ok(r)
    }
}

/// A finished evaluation: its report and the samples it scored.
pub struct Evaluated {
    pub report: EvalReport,
    /// `[n, C, H, W]` on the CPU.
    pub x: Tensor,
    pub labels: Vec<i64>,
    /// Number of classes of the model.
    pub classes: usize,
}

impl Evaluated {
    /// Writes `eval.json`, `eval.md` and `samples.png` (up to 10 samples per class) into `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let (n, classes) = (self.labels.len(), self.classes.max(1));
        let per_grid = 10.min(n / classes).max(1);
        let take = (per_grid * classes).min(n);
        let grid = crate::viz::class_grid(&self.x.narrow(0, 0, take as i64), &self.labels[..take])?;
        crate::viz::save_png(&grid, &out.join("samples.png"))?;
        self.report.save(&out.join("eval.json"))?;
        crate::train::checkpoint::write_bytes_atomic(
            &out.join("eval.md"),
            self.report.to_markdown().as_bytes(),
        )
    }
}

/// Checks that `data` are images of the classes and shape `teacher` makes.
pub fn check_data_fits(data: &ImageDataset, teacher: &EdmModel) -> Result<()> {
    if data.num_classes() != teacher.num_classes()
        || data.sample_shape() != teacher.spec.net.sample_shape()
    {
        return Err(Error::Invalid(format!(
            "the data have {} classes of shape {:?} but the teacher makes {} classes of shape {:?}",
            data.num_classes(),
            data.sample_shape(),
            teacher.num_classes(),
            teacher.spec.net.sample_shape()
        )));
    }
    Ok(())
}

/// Evaluates a teacher sampled with `sampler`; `on` hears the number of samples drawn so far.
pub fn evaluate_teacher(
    teacher: &mut EdmModel,
    teacher_path: &Path,
    sampler: &SamplerConfig,
    scorer: &Scorer,
    s: &EvalSettings,
    on: &mut dyn FnMut(usize),
) -> Result<Evaluated> {
    check_data_fits(scorer.data, teacher)?;
    teacher.set_precision(s.precision);
    let labels = balanced_labels(s.n, teacher.num_classes());
    let through_net = s.batch as i64 * if sampler.guidance != 1.0 { 2 } else { 1 };
    apply_threads(CallSite::TeacherSampling, through_net);
    let t0 = Instant::now();
    let x = generate(
        teacher,
        &teacher.spec.net.sample_shape(),
        &labels,
        sampler,
        s.seed,
        s.batch,
        s.device,
        on,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let mut report = scorer.report(&x, &labels, sampler.nfe(), s, secs)?;
    report.teacher = Some(teacher_path.to_path_buf());
    report.sampler = Some(sampler.clone());
    Ok(Evaluated {
        report,
        x,
        labels,
        classes: teacher.num_classes() as usize,
    })
}

/// Evaluates a bundle: balanced labels, each sample from the student that owns its class (one
/// network evaluation), pooled into one set; plus per student its own samples against the real
/// training images of its own classes. `on` hears the number of samples drawn so far.
pub fn evaluate_bundle(
    bundle: &mut Bundle,
    bundle_path: &Path,
    scorer: &Scorer,
    s: &EvalSettings,
    on: &mut dyn FnMut(usize),
) -> Result<Evaluated> {
    let c = bundle.manifest.partition.num_conditions as i64;
    let labels = balanced_labels(s.n, c);
    for st in &mut bundle.students {
        st.set_precision(s.precision);
    }
    apply_threads(CallSite::StudentOneStep, s.batch as i64);
    let t0 = Instant::now();
    let mut xs = Vec::new();
    let mut done = 0;
    for (b, chunk) in labels.chunks(s.batch.max(1)).enumerate() {
        let z = bundle.noise(chunk.len(), s.seed.wrapping_add(b as u64), s.device);
        xs.push(bundle.generate(chunk, &z)?.0.to_device(Device::Cpu));
        done += chunk.len();
        on(done);
    }
    let secs = t0.elapsed().as_secs_f64();
    let x = Tensor::cat(&xs, 0);
    let mut report = scorer.report(&x, &labels, 1, s, secs)?;

    let data = scorer.data;
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
        let reference = Reference::new(scorer.clf, &real)?;
        let r = image_metrics(scorer.clf, &reference, &xs, &ls, &scorer.metrics)?;
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
    report.bundle = Some(bundle_path.to_path_buf());
    report.students = Some(bundle.manifest.students.len());
    report.per_student = Some(per_student);
    Ok(Evaluated {
        report,
        x,
        labels,
        classes: c as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_widest_vector_extension_is_named() {
        assert_eq!(simd_level("fpu sse2 avx avx2 fma"), " (AVX2)");
        assert_eq!(simd_level("avx2 avx512f avx512bw"), " (AVX-512)");
        assert_eq!(simd_level("avx2 avx512f avx512_bf16"), " (AVX-512 BF16)");
        // A flag is a whole word: avx512_vnni alone is not avx512f.
        assert_eq!(simd_level("sse4_2 avx512_vnni"), "");
    }

    #[test]
    fn defaults_come_from_the_run_beside_the_model() {
        let d = tempfile::tempdir().unwrap();
        let anchor = d.path().join("teacher");
        // No run config: MNIST-10k and Heun-18 unguided, unless given.
        let r = resolve(&anchor, None, None, None).unwrap();
        assert_eq!(
            (r.data.as_str(), r.data_origin),
            (DEFAULT_DATA, DataOrigin::Default)
        );
        assert_eq!(r.sampler, SamplerConfig::default());
        std::fs::write(
            d.path().join("config.toml"),
            r#"
            [data]
            kind = "idx"
            images = "../imgs/i.gz"
            labels = "../imgs/l.gz"
            heldout = 7
            [model.net]
            kind = "mlp"
            dim = 2
            num_classes = 2
            width = 8
            depth = 1
            [teacher]
            steps = 1
            batch_size = 1
            label_dropout = 0.1
            [sampler]
            steps = 9
            guidance = 2.0
        "#,
        )
        .unwrap();
        let r = resolve(&anchor, None, None, Some(1.5)).unwrap();
        assert_eq!(r.data_origin, DataOrigin::Run);
        // The run's data (paths re-expressed relative to the working directory).
        let got = crate::data::DataConfig::parse_spec(&r.data).unwrap();
        let crate::data::DataConfig::Idx(i) = got else {
            panic!("{}", r.data)
        };
        assert_eq!(i.heldout, 7);
        assert_eq!(i.images.file_name().unwrap(), "i.gz");
        assert_eq!((r.sampler.steps, r.sampler.guidance), (9, 1.5));
        let r = resolve(&anchor, Some("folder:x"), Some(3), None).unwrap();
        assert_eq!(
            (r.data.as_str(), r.data_origin, r.sampler.steps),
            ("folder:x", DataOrigin::Given, 3)
        );
        assert_eq!(beside(Path::new("teacher"), "eval"), Path::new("./eval"));
    }
}
