//! Scoring samples generated for prompts: per prompt, the feature classifier's accuracy on the
//! digit the prompt names and the agreement of each measured attribute level (thickness, slant,
//! size; [`crate::data::captions`], thresholds of the training captions) with the level the
//! prompt asks for; averages over seen-template, held-out-template and all prompts; and the
//! Fréchet distance of all samples to the training images in the classifier's feature space.

use super::prompt_set::PromptSpec;
use crate::data::captions::{measure_images, Thresholds};
use crate::eval::fd::frechet_distance_features;
use crate::eval::Classifier;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The scores of one prompt's samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptScore {
    pub text: String,
    pub template: Option<usize>,
    pub heldout: Option<bool>,
    pub label: Option<i64>,
    /// The student that generated them (bundles); `None` for a teacher.
    pub student: Option<usize>,
    pub samples: usize,
    /// Fraction classified as `label`.
    pub digit_accuracy: Option<f64>,
    /// Fractions whose measured level matches the prompt's.
    pub thickness: Option<f64>,
    pub slant: Option<f64>,
    pub size: Option<f64>,
}

/// Means over a set of prompts (each prompt weighs the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub name: String,
    pub prompts: usize,
    pub samples: usize,
    pub digit_accuracy: Option<f64>,
    pub thickness: Option<f64>,
    pub slant: Option<f64>,
    pub size: Option<f64>,
}

/// One line: the set's name, size and the four agreement rates (– where not measured).
impl std::fmt::Display for ScoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
        write!(
            f,
            "{}: {} prompts, digit accuracy {}, thickness {}, slant {}, size {}",
            self.name,
            self.prompts,
            pct(self.digit_accuracy),
            pct(self.thickness),
            pct(self.slant),
            pct(self.size),
        )
    }
}

/// Scores `x` (`[n, 1, H, W]` in [−1, 1]), the samples generated for `spec`.
pub fn score_prompt(
    spec: &PromptSpec,
    student: Option<usize>,
    x: &Tensor,
    classifier: &Classifier,
    thresholds: &Thresholds,
) -> Result<PromptScore> {
    let n = x.size()[0] as usize;
    if n == 0 {
        return Err(Error::Invalid("score_prompt: no samples".into()));
    }
    let frac = |hits: usize| hits as f64 / n as f64;
    let digit_accuracy = match spec.label {
        Some(c) => Some(frac(
            classifier.predict(x)?.iter().filter(|&&p| p == c).count(),
        )),
        None => None,
    };
    let (mut th, mut sl, mut sz) = (None, None, None);
    if let (Some(want), Some(c)) = (spec.levels, spec.label) {
        let attrs = measure_images(x)?;
        let got = attrs
            .iter()
            .map(|a| thresholds.levels(c, a))
            .collect::<Result<Vec<_>>>()?;
        th = Some(frac(
            got.iter().filter(|l| l.thickness == want.thickness).count(),
        ));
        sl = Some(frac(got.iter().filter(|l| l.slant == want.slant).count()));
        sz = Some(frac(got.iter().filter(|l| l.size == want.size).count()));
    }
    Ok(PromptScore {
        text: spec.text.clone(),
        template: spec.template,
        heldout: spec.heldout(),
        label: spec.label,
        student,
        samples: n,
        digit_accuracy,
        thickness: th,
        slant: sl,
        size: sz,
    })
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let xs: Vec<f64> = v.flatten().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The summary of the scores selected by `keep`, named `name` (`None` if none is selected).
pub fn summarise(
    name: &str,
    scores: &[PromptScore],
    keep: impl Fn(&PromptScore) -> bool,
) -> Option<ScoreSummary> {
    let s: Vec<&PromptScore> = scores.iter().filter(|s| keep(s)).collect();
    if s.is_empty() {
        return None;
    }
    Some(ScoreSummary {
        name: name.into(),
        prompts: s.len(),
        samples: s.iter().map(|x| x.samples).sum(),
        digit_accuracy: mean(s.iter().map(|x| x.digit_accuracy)),
        thickness: mean(s.iter().map(|x| x.thickness)),
        slant: mean(s.iter().map(|x| x.slant)),
        size: mean(s.iter().map(|x| x.size)),
    })
}

/// All, seen-template and held-out-template summaries (those with any prompt).
pub fn summaries(scores: &[PromptScore]) -> Vec<ScoreSummary> {
    [
        summarise("all prompts", scores, |_| true),
        summarise("training templates", scores, |s| s.heldout == Some(false)),
        summarise("held-out templates", scores, |s| s.heldout == Some(true)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// FD between generated `x` and `real` images in `classifier`'s feature space.
pub fn feature_fd(classifier: &Classifier, x: &Tensor, real: &Tensor) -> Result<f64> {
    let (fx, _) = classifier.embed(x)?;
    let (fr, _) = classifier.embed(real)?;
    frechet_distance_features(&fx, &fr)
}

/// `eval_prompts.json`: one model's samples scored against a prompt file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptEvalReport {
    /// What was sampled (teacher directory or bundle file) and how.
    pub model: String,
    pub sampling: String,
    pub prompt_file: String,
    pub samples_per_prompt: usize,
    pub seed: u64,
    /// Machine and threads, and the wall time of generation (the machine may be shared).
    pub hardware: String,
    pub generate_seconds: f64,
    /// FD of all samples against `fd_real` training images (classifier features).
    pub fd: f64,
    pub fd_real: usize,
    /// Prompts per student (bundles).
    pub prompts_per_student: Vec<usize>,
    pub summaries: Vec<ScoreSummary>,
    pub scores: Vec<PromptScore>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.1}%", 100.0 * x))
}

impl PromptEvalReport {
    /// The report as Markdown: the summaries, then one row per prompt.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# Prompt evaluation: {}\n\n{}; {} samples per prompt, seed {}; prompts from `{}`.\n\
             Generation {:.0} s on {}.\n\nFD (classifier features) of all {} samples vs {} \
             training images: **{:.3}**.\n",
            self.model,
            self.sampling,
            self.samples_per_prompt,
            self.seed,
            self.prompt_file,
            self.generate_seconds,
            self.hardware,
            self.scores.iter().map(|x| x.samples).sum::<usize>(),
            self.fd_real,
            self.fd
        );
        if !self.prompts_per_student.is_empty() {
            s += &format!("\nPrompts per student: {:?}.\n", self.prompts_per_student);
        }
        s += "\n| prompts | n | samples | digit accuracy | thickness | slant | size |\n|---|---|---|---|---|---|---|\n";
        for m in &self.summaries {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                m.name,
                m.prompts,
                m.samples,
                pct(m.digit_accuracy),
                pct(m.thickness),
                pct(m.slant),
                pct(m.size)
            );
        }
        s += "\n| prompt | held out | student | digit | thickness | slant | size |\n|---|---|---|---|---|---|---|\n";
        for r in &self.scores {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.text.replace('|', "\\|"),
                r.heldout
                    .map_or("?".into(), |h| if h { "yes" } else { "no" }.to_string()),
                r.student.map_or("–".into(), |k| k.to_string()),
                pct(r.digit_accuracy),
                pct(r.thickness),
                pct(r.slant),
                pct(r.size)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(heldout: Option<bool>, acc: f64) -> PromptScore {
        PromptScore {
            text: "t".into(),
            template: None,
            heldout,
            label: Some(1),
            student: None,
            samples: 4,
            digit_accuracy: Some(acc),
            thickness: None,
            slant: Some(acc / 2.0),
            size: None,
        }
    }

    #[test]
    fn summaries_average_per_prompt_and_split_by_wording() {
        let s = [
            score(Some(false), 1.0),
            score(Some(true), 0.5),
            score(None, 0.0),
        ];
        let all = summaries(&s);
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].prompts, all[0].samples), (3, 12));
        assert!((all[0].digit_accuracy.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(all[1].digit_accuracy, Some(1.0));
        assert_eq!(all[2].slant, Some(0.25));
        assert_eq!(all[0].thickness, None);
        assert!(summarise("none", &s, |_| false).is_none());
    }
}
