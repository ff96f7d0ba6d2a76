//! `GET /v1/bundle`: what the server serves, as one typed struct — the partition, each student
//! (parameters, config), the teacher comparison's sampler (or why there is none) and the limits
//! a client must respect. Built once at start-up; the page and clients read its JSON.

use crate::config::ServeConfig;
use crate::teacher::Teacher;
use msd::bundle::Bundle;
use msd::diffusion::SamplerMethod;
use msd::model::ModelSpec;
use msd::partition::Partition;
use serde::{Deserialize, Serialize};

/// The body of `GET /v1/bundle`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// The bundle's file name.
    pub bundle: Option<String>,
    pub num_classes: usize,
    pub sample_shape: Vec<i64>,
    /// The σ at which the students generate.
    pub sigma_max: f64,
    pub partition: Partition,
    pub students: Vec<StudentInfo>,
    pub teacher: TeacherInfo,
    pub limits: Limits,
}

/// One student of the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentInfo {
    pub id: usize,
    pub classes: Vec<i64>,
    pub params: i64,
    pub spec: ModelSpec,
}

/// The teacher comparison: its sampler when available, else the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherInfo {
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Classifier-free guidance of the teacher's sampler (the run's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    /// Network evaluations per sample (per guidance branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfe: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The request limits of the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_n: usize,
    pub max_teacher_n: usize,
    pub max_batch: usize,
    pub max_wait_ms: f64,
    pub queue_cap: usize,
    /// Longest a request may wait in a queue before it is answered 503.
    pub max_queue_ms: f64,
    /// Most samples per network evaluation.
    pub eval_chunk: usize,
    pub body_limit: usize,
    pub read_timeout_s: f64,
    pub max_connections: usize,
}

impl BundleInfo {
    /// The description of `bundle` served with `cfg`; `teacher` is the running comparison, or
    /// `None` with the reason in `teacher_note`.
    pub fn new(
        bundle: &Bundle,
        cfg: &ServeConfig,
        teacher: Option<&Teacher>,
        teacher_note: Option<String>,
    ) -> Self {
        let m = &bundle.manifest;
        let teacher = match teacher {
            Some(t) => TeacherInfo {
                available: true,
                sampler: Some(t.sampler.method),
                steps: Some(t.sampler.steps),
                guidance: Some(t.sampler.guidance),
                nfe: Some(t.nfe),
                reason: None,
            },
            None => TeacherInfo {
                available: false,
                sampler: None,
                steps: None,
                guidance: None,
                nfe: None,
                reason: Some(teacher_note.unwrap_or_else(|| "no teacher".into())),
            },
        };
        Self {
            bundle: bundle
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned()),
            num_classes: m.partition.num_conditions,
            sample_shape: bundle.sample_shape(),
            sigma_max: m.sigma_max,
            partition: m.partition.clone(),
            students: m
                .students
                .iter()
                .map(|s| StudentInfo {
                    id: s.id,
                    classes: s.classes.clone(),
                    params: s.params,
                    spec: s.spec.clone(),
                })
                .collect(),
            teacher,
            limits: Limits {
                max_n: cfg.max_n,
                max_teacher_n: cfg.max_teacher_n,
                max_batch: cfg.max_batch,
                max_wait_ms: cfg.max_wait.as_secs_f64() * 1e3,
                queue_cap: cfg.queue_cap,
                max_queue_ms: cfg.max_queue.as_secs_f64() * 1e3,
                eval_chunk: cfg.chunk(),
                body_limit: cfg.body_limit,
                read_timeout_s: cfg.read_timeout.as_secs_f64(),
                max_connections: cfg.max_connections,
            },
        }
    }
}
