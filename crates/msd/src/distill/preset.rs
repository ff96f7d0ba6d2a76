//! Which optimisation preset a `[distill]` table follows — the project's defaults or DMD2's
//! reference settings (`configs/*-dmd2.toml`) — and a one-line description of it, so that a
//! report can say which preset each of its rows used.
//!
//! ```
//! use msd::distill::{preset::Preset, DistillConfig};
//! assert_eq!(Preset::of(&DistillConfig::default()), Preset::Msd);
//! ```

use super::export::Export;
use super::DistillConfig;
use crate::train::adamw::AdamWConfig;
use serde::{Deserialize, Serialize};

/// The optimisation preset of a distillation config (β, weight decay, clip, what is exported,
/// how the ADM head is clipped; learning rates, budgets and the regression weight are free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The project's defaults: AdamW β = (0, 0.99), no weight decay, no warm-up, the EMA of the
    /// generator exported, fake score and GAN head clipped apart.
    Msd,
    /// DMD2's reference: AdamW β = (0.9, 0.999), weight decay 0.01, warm-up, the raw generator
    /// exported, fake score and GAN head clipped as one set.
    Dmd2,
    /// Anything else.
    Custom,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn is_msd(o: &AdamWConfig) -> bool {
    same(o.beta1, 0.0) && same(o.beta2, 0.99) && o.weight_decay == 0.0 && o.warmup_steps == 0
}

fn is_dmd2(o: &AdamWConfig) -> bool {
    same(o.beta1, 0.9) && same(o.beta2, 0.999) && same(o.weight_decay, 0.01) && o.warmup_steps > 0
}

impl Preset {
    /// The preset `d` follows.
    pub fn of(d: &DistillConfig) -> Self {
        let (g, f) = (&d.generator_optimizer, &d.fake_optimizer);
        if is_msd(g) && is_msd(f) && d.export == Export::Ema && !d.adm.joint_clip {
            Preset::Msd
        } else if is_dmd2(g) && is_dmd2(f) && d.export == Export::Raw && d.adm.joint_clip {
            Preset::Dmd2
        } else {
            Preset::Custom
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Msd => "msd defaults",
            Preset::Dmd2 => "DMD2 reference",
            Preset::Custom => "custom",
        }
    }
}

fn optimizer(o: &AdamWConfig) -> String {
    let clip = if o.grad_clip > 0.0 {
        format!("{}", o.grad_clip)
    } else {
        "none".into()
    };
    format!(
        "AdamW lr {} β ({}, {}), weight decay {}, warm-up {}, clip {clip}",
        o.lr, o.beta1, o.beta2, o.weight_decay, o.warmup_steps
    )
}

/// One line naming `d`'s preset and the settings that make it, e.g. `msd defaults (generator:
/// AdamW lr 0.0002 β (0, 0.99), …; exported: EMA 0.95; regression weight 0.25, l2)`.
pub fn describe(d: &DistillConfig) -> String {
    let export = match d.export {
        Export::Ema => format!("EMA {}", d.ema_decay),
        Export::Raw => "raw generator".into(),
    };
    let head_clip = if d.adm.joint_clip {
        "with the fake score"
    } else {
        "apart"
    };
    format!(
        "{} (generator: {}; fake score: {}; ADM head clipped {head_clip}; exported: {export}; \
regression weight {}, {})",
        Preset::of(d).name(),
        optimizer(&d.generator_optimizer),
        optimizer(&d.fake_optimizer),
        d.regression_weight,
        serde_plain_name(&d.regression_distance),
    )
}

/// The TOML spelling of a unit enum variant (`l2`, `pseudo_huber`, …).
fn serde_plain_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use std::path::Path;

    fn distill_of(file: &str) -> DistillConfig {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        RunConfig::load(&root.join(file)).unwrap().distill
    }

    #[test]
    fn the_shipped_configs_name_their_presets() {
        assert_eq!(Preset::of(&distill_of("mnist-distill.toml")), Preset::Msd);
        assert_eq!(
            Preset::of(&distill_of("mnist-distill-dmd2.toml")),
            Preset::Dmd2
        );
        assert_eq!(Preset::of(&distill_of("toy-dmd2.toml")), Preset::Dmd2);
    }

    #[test]
    fn a_changed_beta_is_neither_preset_and_the_line_says_so() {
        let mut d = DistillConfig::default();
        d.generator_optimizer.beta1 = 0.5;
        assert_eq!(Preset::of(&d), Preset::Custom);
        let line = describe(&d);
        assert!(line.starts_with("custom (generator: AdamW"), "{line}");
        assert!(line.contains("β (0.5, 0.99)"), "{line}");
        assert!(line.contains("regression weight 0.25, l2"), "{line}");
    }

    #[test]
    fn the_dmd2_line_names_the_raw_generator_and_the_joint_clip() {
        let line = describe(&distill_of("mnist-distill-dmd2.toml"));
        assert!(line.starts_with("DMD2 reference ("), "{line}");
        assert!(line.contains("exported: raw generator"), "{line}");
        assert!(line.contains("clipped with the fake score"), "{line}");
        assert!(line.contains("weight decay 0.01"), "{line}");
    }
}
