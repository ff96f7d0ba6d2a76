//! A multi-student bundle: the partition, K one-step students and (optionally) a reference to the
//! teacher, described by `bundle.json`. Loading validates everything; generation routes each
//! condition to its owner and runs **one network evaluation per sample**: a mixed batch is split
//! by student, each sub-batch evaluated once, and outputs returned in request order. A bundle
//! that references its teacher also records the teacher's sampler settings (steps, guidance),
//! so a comparison with the teacher samples it as the run did.

use crate::diffusion::SamplerConfig;
use crate::model::{EdmModel, ModelSpec};
use crate::partition::Partition;
use crate::train::checkpoint::{self, FORMAT_VERSION};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// One student as listed in `bundle.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentEntry {
    pub id: usize,
    /// Directory holding `model.json` + `model.safetensors`, relative to the bundle file.
    pub dir: String,
    /// The classes it owns (redundant with the partition; checked on load).
    pub classes: Vec<i64>,
    pub params: i64,
    pub spec: ModelSpec,
}

/// The content of `bundle.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleManifest {
    pub format_version: u32,
    pub partition: Partition,
    /// Teacher directory relative to the bundle file, if known.
    pub teacher: Option<String>,
    /// The teacher's sampler (method, steps, guidance…) as its run configured it; absent in
    /// bundles written before it was recorded (and when there is no teacher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_sampler: Option<SamplerConfig>,
    /// The σ at which students are evaluated as generators: a copy of the run's
    /// `distill.sigma_max` (its one owner), checked by [`check_sigma_max`] on write and load.
    pub sigma_max: f64,
    pub students: Vec<StudentEntry>,
}

use crate::diffusion::sigma::check_sigma_max;
/// Range of `sigma_max` a bundle may declare: positive, finite, at most this (EDM uses 80).
pub use crate::diffusion::sigma::SIGMA_MAX_LIMIT;

/// The name of the first parameter that holds a NaN or an infinity, if any (sorted by name).
pub fn non_finite_weight(m: &EdmModel) -> Option<String> {
    let mut vars: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .find(|(_, t)| {
            let all_finite = t
                .f_isfinite()
                .and_then(|f| f.f_all())
                .and_then(|a| a.f_int64_value(&[]));
            !matches!(all_finite, Ok(v) if v != 0)
        })
        .map(|(name, _)| name)
}

/// Checks what a student must satisfy to serve in a bundle: finite weights, a usable
/// `sigma_data`, and as many classes as the partition.
fn check_student(k: usize, m: &EdmModel, partition: &Partition) -> std::result::Result<(), String> {
    let sd = m.spec.precond.sigma_data;
    if !(sd.is_finite() && sd > 0.0) {
        return Err(format!(
            "student {k}: precond.sigma_data must be a positive finite number, got {sd}"
        ));
    }
    match (m.spec.net.cond().embedding_dim(), &partition.prompts) {
        (Some(d), Some(g)) if d as usize == g.dim() => return finite_weights(k, m),
        (Some(d), Some(g)) => {
            return Err(format!(
            "student {k} takes {d}-d prompt embeddings but the partition's prompt groups are {}-d",
            g.dim()
        ))
        }
        (Some(_), None) => {
            return Err(format!(
                "student {k} is prompt-conditional but the partition splits classes"
            ))
        }
        (None, Some(_)) => {
            return Err(format!(
                "student {k} is class-conditional but the partition splits prompts"
            ))
        }
        (None, None) => {}
    }
    if m.num_classes() != partition.num_conditions as i64 {
        return Err(format!(
            "student {k} has {} classes but the partition has {} conditions",
            m.num_classes(),
            partition.num_conditions
        ));
    }
    finite_weights(k, m)
}

fn finite_weights(k: usize, m: &EdmModel) -> std::result::Result<(), String> {
    if let Some(name) = non_finite_weight(m) {
        return Err(format!(
            "student {k}: weight `{name}` holds NaN or infinite values"
        ));
    }
    Ok(())
}

/// The teacher a bundle references: its directory and the sampler settings of its run.
#[derive(Clone, Copy, Debug)]
pub struct TeacherRef<'a> {
    pub dir: &'a Path,
    pub sampler: &'a SamplerConfig,
}

/// A loaded bundle: all students resident on one device.
pub struct Bundle {
    pub manifest: BundleManifest,
    pub path: PathBuf,
    pub students: Vec<EdmModel>,
}

fn rel(from: &Path, to: &Path) -> String {
    // Paths inside the run directory are written relative to it; anything else stays absolute.
    match to.strip_prefix(from) {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => std::fs::canonicalize(to)
            .unwrap_or_else(|_| to.to_path_buf())
            .to_string_lossy()
            .into_owned(),
    }
}

impl Bundle {
    /// Writes `bundle_path` for `partition` and the student directories (index = student id),
    /// after loading each student to check it; returns the manifest. `teacher` (if any) is
    /// recorded with its sampler settings.
    pub fn assemble(
        bundle_path: &Path,
        partition: &Partition,
        student_dirs: &[PathBuf],
        teacher: Option<TeacherRef<'_>>,
        sigma_max: f64,
    ) -> Result<BundleManifest> {
        partition.validate()?;
        let bad = |msg: String| Error::Bundle {
            path: bundle_path.to_path_buf(),
            msg,
        };
        check_sigma_max(sigma_max).map_err(&bad)?;
        if student_dirs.len() != partition.students {
            return Err(bad(format!(
                "the partition has {} students but {} student directories were given",
                partition.students,
                student_dirs.len()
            )));
        }
        let base = bundle_path.parent().unwrap_or(Path::new("."));
        let mut students = Vec::new();
        for (k, dir) in student_dirs.iter().enumerate() {
            if !dir.join("model.safetensors").exists() {
                return Err(bad(format!(
                    "student {k} is missing: no {}",
                    dir.join("model.safetensors").display()
                )));
            }
            let m = EdmModel::load_dir(dir, Device::Cpu)
                .map_err(|e| bad(format!("student {k}: {e}")))?;
            check_student(k, &m, partition).map_err(&bad)?;
            students.push(StudentEntry {
                id: k,
                dir: rel(base, dir),
                classes: partition.classes_of(k),
                params: m.num_params(),
                spec: m.spec.clone(),
            });
        }
        let manifest = BundleManifest {
            format_version: FORMAT_VERSION,
            partition: partition.clone(),
            teacher: teacher.map(|t| rel(base, t.dir)),
            teacher_sampler: teacher.map(|t| t.sampler.clone()),
            sigma_max,
            students,
        };
        checkpoint::write_json_atomic(bundle_path, &manifest)?;
        Ok(manifest)
    }

    /// Loads and validates a bundle: format version, partition, one entry per student with the
    /// classes the partition gives it, and every student's weights against its config.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let manifest: BundleManifest = checkpoint::read_json(path)?;
        let bad = |msg: String| Error::Bundle {
            path: path.to_path_buf(),
            msg,
        };
        if manifest.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        manifest
            .partition
            .validate()
            .map_err(|e| bad(e.to_string()))?;
        if manifest.students.len() != manifest.partition.students {
            return Err(bad(format!(
                "lists {} students but the partition has {}",
                manifest.students.len(),
                manifest.partition.students
            )));
        }
        check_sigma_max(manifest.sigma_max).map_err(&bad)?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Two entries on the same weights would make one student serve another's classes.
        let mut seen: Vec<(PathBuf, usize)> = Vec::new();
        for (k, e) in manifest.students.iter().enumerate() {
            let dir = base.join(&e.dir);
            let key = std::fs::canonicalize(&dir).unwrap_or(dir);
            if let Some((_, j)) = seen.iter().find(|(d, _)| *d == key) {
                return Err(bad(format!(
                    "students {j} and {k} point at the same weights ({})",
                    e.dir
                )));
            }
            seen.push((key, k));
        }
        let mut students = Vec::new();
        for (k, e) in manifest.students.iter().enumerate() {
            if e.id != k {
                return Err(bad(format!("student entry {k} has id {}", e.id)));
            }
            if e.classes != manifest.partition.classes_of(k) {
                return Err(bad(format!(
                    "student {k} lists classes {:?} but the partition gives it {:?}",
                    e.classes,
                    manifest.partition.classes_of(k)
                )));
            }
            let dir = base.join(&e.dir);
            let m = EdmModel::load_dir(&dir, device)
                .map_err(|err| bad(format!("student {k}: {err}")))?;
            if m.spec != e.spec {
                return Err(bad(format!(
                    "student {k}: {} does not match the config recorded in the bundle",
                    dir.join("model.json").display()
                )));
            }
            check_student(k, &m, &manifest.partition).map_err(&bad)?;
            students.push(m);
        }
        Ok(Self {
            manifest,
            path: path.to_path_buf(),
            students,
        })
    }

    /// The teacher directory, if the bundle references one.
    pub fn teacher_dir(&self) -> Option<PathBuf> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        self.manifest.teacher.as_ref().map(|t| base.join(t))
    }

    /// The sampler the teacher comparison uses: the one recorded in the bundle, or EDM's
    /// default (deterministic Heun-18, unguided) for bundles that predate the record.
    pub fn teacher_sampler(&self) -> SamplerConfig {
        self.manifest.teacher_sampler.clone().unwrap_or_default()
    }

    /// The student that owns `class`.
    pub fn route(&self, class: i64) -> Result<usize> {
        self.manifest.partition.route(class)
    }

    /// Shape of one sample.
    pub fn sample_shape(&self) -> Vec<i64> {
        self.students[0].spec.net.sample_shape()
    }

    /// Generates one sample per label from noise `z` (`[N, ...]`): each student evaluates its
    /// sub-batch once. Returns the samples `[N, ...]` in request order and, per sample, the
    /// student that produced it.
    pub fn generate(&self, labels: &[i64], z: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        if self.is_prompt_conditional() {
            return Err(Error::Invalid(
                "this bundle's students take prompts, not class labels (use --prompt)".into(),
            ));
        }
        let owners = labels
            .iter()
            .map(|&c| self.route(c))
            .collect::<Result<Vec<_>>>()?;
        let device = z.device();
        let out = z.zeros_like();
        tch::no_grad(|| {
            for (k, student) in self.students.iter().enumerate() {
                let rows: Vec<i64> = (0..labels.len())
                    .filter(|&i| owners[i] == k)
                    .map(|i| i as i64)
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let idx = Tensor::from_slice(&rows).to_device(device);
                let sub_labels = Tensor::from_slice(
                    &rows.iter().map(|&i| labels[i as usize]).collect::<Vec<_>>(),
                )
                .to_device(device);
                let x = student.generate(
                    &z.index_select(0, &idx),
                    &sub_labels,
                    self.manifest.sigma_max,
                );
                let _ = out.shallow_clone().index_copy_(0, &idx, &x);
            }
        });
        Ok((out, owners))
    }

    /// Whether the students take prompt embeddings (the partition splits prompts).
    pub fn is_prompt_conditional(&self) -> bool {
        self.manifest.partition.prompts.is_some()
    }

    /// The student for a prompt embedding `embedding` (`[dim]`).
    pub fn route_prompt(&self, embedding: &[f32]) -> Result<usize> {
        self.manifest.partition.route_prompt(embedding)
    }

    /// Generates one sample per row of `z` (`[N, ...]`) for the prompt embedding `embedding`
    /// (`[dim]`): the prompt's student evaluates the batch once. Returns `[N, ...]` and the
    /// student.
    pub fn generate_prompt(&self, embedding: &[f32], z: &Tensor) -> Result<(Tensor, usize)> {
        let k = self.route_prompt(embedding)?;
        let n = z.size()[0];
        let e = Tensor::from_slice(embedding)
            .to_device(z.device())
            .unsqueeze(0)
            .expand([n, embedding.len() as i64], false);
        let x = tch::no_grad(|| self.students[k].generate(z, &e, self.manifest.sigma_max));
        Ok((x, k))
    }

    /// Seeded noise for `n` samples of this bundle's shape.
    pub fn noise(&self, n: usize, seed: u64, device: Device) -> Tensor {
        tch::manual_seed(seed as i64);
        let mut shape = vec![n as i64];
        shape.extend(self.sample_shape());
        Tensor::randn(shape.as_slice(), (Kind::Float, device))
    }
}
