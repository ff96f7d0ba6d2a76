//! Prompt files for evaluation: one prompt per line, either plain text or a JSON object
//! `{"text": "...", "label": 8, "levels": {"thickness": "low", ...}, "template": 6}` whose
//! optional fields say what the prompt asks for (the digit, the attribute levels) and how it is
//! worded (a held-out template or not), so that generated images can be scored against it.
//! Blank lines and lines starting with `#` are skipped. [`standard_prompts`] writes the set this
//! project evaluates with: for every digit, seeded level combinations, each worded once with a
//! training template and once with a held-out one.

use crate::data::captions::{render, training_templates, Levels, HELDOUT_TEMPLATES, NUM_DIGITS};
use crate::{Error, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluation prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    pub text: String,
    /// The digit the prompt names, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
    /// The attribute levels the prompt asks for, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Levels>,
    /// The caption template that worded it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<usize>,
}

impl PromptSpec {
    /// Whether the wording is one no model trained on (a held-out template); `None` if unknown.
    pub fn heldout(&self) -> Option<bool> {
        self.template.map(|t| HELDOUT_TEMPLATES.contains(&t))
    }
}

/// Parses a prompt file's text; errors name `origin` and the line.
pub fn parse_prompt_file(text: &str, origin: &Path) -> Result<Vec<PromptSpec>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let spec = if l.starts_with('{') {
            serde_json::from_str::<PromptSpec>(l)
                .map_err(|e| Error::format(origin, format!("line {}: {e}", i + 1)))?
        } else {
            PromptSpec {
                text: l.to_string(),
                label: None,
                levels: None,
                template: None,
            }
        };
        if let Some(c) = spec.label.filter(|c| !(0..NUM_DIGITS).contains(c)) {
            return Err(Error::format(
                origin,
                format!("line {}: label {c} is not a digit 0..=9", i + 1),
            ));
        }
        crate::text::prompt::check_prompt(&spec.text, "text")
            .map_err(|e| Error::format(origin, format!("line {}: {e}", i + 1)))?;
        out.push(spec);
    }
    if out.is_empty() {
        return Err(Error::format(origin, "holds no prompt"));
    }
    Ok(out)
}

/// Reads a prompt file (see the module docs).
pub fn read_prompt_file(path: &Path) -> Result<Vec<PromptSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_prompt_file(&text, path)
}

/// `per_digit` seeded level combinations for every digit, each worded by a random training
/// template and a random held-out template: `20·per_digit` prompts, digit-major.
pub fn standard_prompts(per_digit: usize, seed: u64) -> Result<Vec<PromptSpec>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all = Levels::all();
    let train = training_templates();
    let mut out = Vec::new();
    for label in 0..NUM_DIGITS {
        for _ in 0..per_digit {
            let lv = all[rng.gen_range(0..all.len())];
            let seen = train[rng.gen_range(0..train.len())];
            let held = HELDOUT_TEMPLATES[rng.gen_range(0..HELDOUT_TEMPLATES.len())];
            for t in [seen, held] {
                out.push(PromptSpec {
                    text: render(t, label, lv)?,
                    label: Some(label),
                    levels: Some(lv),
                    template: Some(t),
                });
            }
        }
    }
    Ok(out)
}

/// The prompts as a prompt file (JSON lines).
pub fn to_prompt_file(prompts: &[PromptSpec]) -> String {
    prompts
        .iter()
        .map(|p| serde_json::to_string(p).unwrap_or_default() + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_bad_lines_name_the_line() {
        let p = standard_prompts(2, 0).unwrap();
        assert_eq!(p.len(), 40);
        assert_eq!(p.iter().filter(|s| s.heldout() == Some(true)).count(), 20);
        assert_eq!(p, standard_prompts(2, 0).unwrap());
        let back = parse_prompt_file(&to_prompt_file(&p), Path::new("p.jsonl")).unwrap();
        assert_eq!(back, p);
        let mixed = "# a comment\n\na thin eight\n{\"text\": \"a one\", \"label\": 1}\n";
        let m = parse_prompt_file(mixed, Path::new("m")).unwrap();
        assert_eq!((m.len(), m[0].label, m[1].label), (2, None, Some(1)));
        let e = parse_prompt_file("ok\n{\"text\": \"x\", \"label\": 12}", Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("12"), "{e}");
        let e = parse_prompt_file("{\"txt\": 1}", Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(parse_prompt_file("# only\n", Path::new("f")).is_err());
        let long = format!("{}\n", "y".repeat(2000));
        assert!(parse_prompt_file(&long, Path::new("f")).is_err());
    }
}
