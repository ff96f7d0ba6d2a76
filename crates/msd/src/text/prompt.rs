//! Checking and embedding one user prompt (CLI `--prompt`, HTTP `"prompt"`): surrounding white
//! space is trimmed; an empty prompt and one over [`MAX_PROMPT_BYTES`] are refused with an error
//! naming `field` (the encoder would truncate a long prompt to 256 tokens silently, and an empty
//! one would embed as the bare `[CLS] [SEP]`, which is no request). Any Unicode is accepted: the
//! encoder's tokenizer normalises it (lower-casing, accent stripping) and maps unknown
//! characters to `[UNK]`.

use crate::error::ResultExt;
use crate::nets::text_encoder::{default_model_dir, TextEncoder};
use crate::{Error, Result};
use std::path::Path;

/// Longest prompt accepted, in bytes of UTF-8 (≈ the encoder's 256-token window of English).
pub const MAX_PROMPT_BYTES: usize = 1024;

/// The trimmed prompt, or an error naming `field`.
pub fn check_prompt<'a>(prompt: &'a str, field: &str) -> Result<&'a str> {
    let p = prompt.trim();
    if p.is_empty() {
        return Err(Error::config(
            field,
            "is empty; describe the digit, e.g. \"a thin eight\"",
        ));
    }
    if p.len() > MAX_PROMPT_BYTES {
        return Err(Error::config(
            field,
            format!(
                "is {} bytes; at most {MAX_PROMPT_BYTES} are accepted",
                p.len()
            ),
        ));
    }
    Ok(p)
}

/// The checked prompt's embedding (`[dim]`, unit norm).
pub fn embed_prompt(encoder: &TextEncoder, prompt: &str, field: &str) -> Result<Vec<f32>> {
    let p = check_prompt(prompt, field)?;
    let e = encoder.encode(&[p], 1)?;
    Ok(Vec::try_from(e.get(0).to_device(tch::Device::Cpu))?)
}

/// Loads the prompt encoder from `dir` (the `--encoder` flag) or the default cache folder.
pub fn load_encoder(dir: Option<&Path>, device: tch::Device) -> Result<TextEncoder> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => default_model_dir().ok_or_else(|| {
            Error::Invalid(
                "--encoder: no HOME or MSD_TORCH_HOME to find the text encoder under".into(),
            )
        })?,
    };
    TextEncoder::load(&dir, device).ctx(|| format!("--encoder {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_prompts_are_refused_naming_the_field() {
        for bad in ["", "   \n\t "] {
            let e = check_prompt(bad, "--prompt").unwrap_err().to_string();
            assert!(e.contains("--prompt") && e.contains("empty"), "{e}");
        }
        let long = "eight ".repeat(2000);
        let e = check_prompt(&long, "prompt").unwrap_err().to_string();
        assert!(e.contains("prompt") && e.contains("1024"), "{e}");
        assert_eq!(
            check_prompt("  a thin eight ", "p").unwrap(),
            "a thin eight"
        );
        assert_eq!(
            check_prompt("une huit épaisse ✓", "p").unwrap(),
            "une huit épaisse ✓"
        );
        // The limit counts bytes: 341 three-byte characters fit, 342 do not.
        assert!(check_prompt(&"✓".repeat(341), "p").is_ok());
        assert!(check_prompt(&"✓".repeat(342), "p").is_err());
    }
}
