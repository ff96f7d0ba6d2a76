//! The `[distill]` table of a run config: the settings every student shares (partition, grid,
//! σ range, student network) and the DM stage's own, with one sub-table per other stage
//! (`[distill.tsm]`, `[distill.adm]`, `[distill.cd]`, each defined beside its method).

use super::adm::AdmConfig;
use super::cd::CdConfig;
use super::export::Export;
use super::regression::RegressionDistance;
use super::tsm::TsmConfig;
use crate::diffusion::KarrasGrid;
use crate::nets::NetConfig;
use crate::partition::Strategy;
use crate::train::AdamWConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Settings of multi-student distillation (the `[distill]` table of a run config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Number of students K.
    pub students: usize,
    /// How classes are split among students.
    pub partition: Strategy,
    /// k-means partitions: teacher samples per class whose mean embeds the class.
    pub kmeans_samples_per_class: usize,
    /// Iterations per student; the fake score steps every iteration.
    pub iterations: u64,
    pub batch_size: usize,
    /// The generator steps once every `ttur` iterations.
    pub ttur: u64,
    /// Karras grid for distillation: levels, σ_min, σ_max, ρ.
    pub grid_levels: usize,
    pub sigma_min: f64,
    /// The generator's σ_max, and the one owner of it: one-step students map `σ_max · z` to an
    /// image; the DM/CD grid tops out at it; TSM trains a share of every batch at it; the
    /// regression pairs are drawn from it and record it (pairs from another σ_max are refused,
    /// [`crate::distill::checks::check_pairs_sigma`]); the bundle copies it.
    pub sigma_max: f64,
    pub rho: f64,
    /// Grid index range for the generator's VSD noise level (inclusive).
    pub t_min_index: usize,
    pub t_max_index: usize,
    /// Classifier-free guidance scale of the real (teacher) score in the generator's VSD
    /// gradient (1 = none); match the teacher's evaluation guidance.
    pub real_guidance: f64,
    pub generator_optimizer: AdamWConfig,
    pub fake_optimizer: AdamWConfig,
    pub ema_decay: f64,
    /// Weight of the regression loss (0 = off).
    pub regression_weight: f64,
    /// Distance of the regression loss (`l2`, `pseudo_huber`, `perceptual`).
    #[serde(skip_serializing_if = "RegressionDistance::is_default")]
    pub regression_distance: RegressionDistance,
    /// Which generator a stage exports: its EMA (`ema`) or the raw generator (`raw`, DMD2).
    #[serde(skip_serializing_if = "Export::is_default")]
    pub export: Export,
    /// Regression pairs per class, generated once by the teacher and shared by all students.
    pub regression_pairs_per_class: usize,
    pub regression_batch: usize,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// The students' network; `None` = the teacher's (same-size students, initialised from it).
    /// A different (smaller) network is initialised by TSM when that stage runs, else randomly.
    pub student_net: Option<NetConfig>,
    /// Teacher Score Matching settings (stage 0, for smaller students).
    pub tsm: TsmConfig,
    /// Adversarial distribution matching settings (stage 2).
    pub adm: AdmConfig,
    /// Consistency distillation settings (the alternative per-student method).
    pub cd: CdConfig,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            students: 4,
            partition: Strategy::Contiguous,
            kmeans_samples_per_class: 64,
            iterations: 2000,
            batch_size: 256,
            ttur: 5,
            grid_levels: 1000,
            sigma_min: 0.002,
            sigma_max: crate::diffusion::sigma::EDM_SIGMA_MAX,
            rho: 7.0,
            t_min_index: 20,
            t_max_index: 980,
            real_guidance: 1.0,
            generator_optimizer: AdamWConfig {
                lr: 1e-4,
                beta1: 0.0,
                beta2: 0.99,
                ..Default::default()
            },
            fake_optimizer: AdamWConfig {
                lr: 1e-4,
                beta1: 0.0,
                beta2: 0.99,
                ..Default::default()
            },
            ema_decay: 0.99,
            regression_weight: 0.25,
            regression_distance: RegressionDistance::L2,
            export: Export::Ema,
            regression_pairs_per_class: 512,
            regression_batch: 128,
            checkpoint_every: 1000,
            log_every: 50,
            student_net: None,
            tsm: TsmConfig::default(),
            adm: AdmConfig::default(),
            cd: CdConfig::default(),
        }
    }
}

impl DistillConfig {
    /// The Karras grid these settings describe.
    pub fn grid(&self) -> KarrasGrid {
        KarrasGrid::new(self.grid_levels, self.sigma_min, self.sigma_max, self.rho)
    }

    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::config(format!("distill.{f}"), m.to_string()));
        if self.students == 0 {
            return bad("students", "must be ≥ 1");
        }
        if self.iterations == 0 || self.batch_size == 0 || self.ttur == 0 {
            return bad("iterations / batch_size / ttur", "must be ≥ 1");
        }
        if !(self.real_guidance.is_finite() && self.real_guidance >= 0.0) {
            return bad(
                "real_guidance",
                "must be a finite number ≥ 0 (1 = no guidance)",
            );
        }
        if let Err(m) = crate::diffusion::sigma::check_sigma_max(self.sigma_max) {
            return bad("sigma_max", &m);
        }
        if !(self.sigma_min > 0.0 && self.sigma_min < self.sigma_max) {
            return bad("sigma_min", "must be in (0, sigma_max)");
        }
        if self.grid_levels < 2
            || self.t_min_index > self.t_max_index
            || self.t_max_index >= self.grid_levels
        {
            return bad(
                "t_min_index / t_max_index",
                "need t_min_index ≤ t_max_index < grid_levels",
            );
        }
        self.cd.validate()
    }
}

/// The settings the DM stage computes with (not the cadence, not the other stages' tables):
/// what its hash covers.
#[derive(Serialize)]
pub(crate) struct DmSemantics<'a> {
    iterations: u64,
    batch_size: usize,
    ttur: u64,
    grid: (usize, f64, f64, f64),
    t_range: (usize, usize),
    real_guidance: f64,
    generator_optimizer: &'a AdamWConfig,
    fake_optimizer: &'a AdamWConfig,
    ema_decay: f64,
    regression: (f64, usize, usize),
    #[serde(skip_serializing_if = "RegressionDistance::is_default")]
    regression_distance: RegressionDistance,
    #[serde(skip_serializing_if = "Export::is_default")]
    export: Export,
    student_net: &'a Option<NetConfig>,
}

impl DistillConfig {
    /// The part of the config the DM stage's hash covers.
    pub(crate) fn dm_semantics(&self) -> DmSemantics<'_> {
        DmSemantics {
            iterations: self.iterations,
            batch_size: self.batch_size,
            ttur: self.ttur,
            grid: (self.grid_levels, self.sigma_min, self.sigma_max, self.rho),
            t_range: (self.t_min_index, self.t_max_index),
            real_guidance: self.real_guidance,
            generator_optimizer: &self.generator_optimizer,
            fake_optimizer: &self.fake_optimizer,
            ema_decay: self.ema_decay,
            regression: (
                self.regression_weight,
                self.regression_pairs_per_class,
                self.regression_batch,
            ),
            regression_distance: self.regression_distance,
            export: self.export,
            student_net: &self.student_net,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_a_bad_real_guidance() {
        for g in [f64::NAN, -1.0, f64::INFINITY] {
            let e = DistillConfig {
                real_guidance: g,
                ..Default::default()
            }
            .validate()
            .unwrap_err();
            assert!(e.to_string().contains("distill.real_guidance"), "{e}");
        }
        assert!(DistillConfig::default().validate().is_ok());
    }
}
