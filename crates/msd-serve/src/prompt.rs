//! Free-text prompts for prompt-conditional bundles: `POST /v1/generate {"prompt": "...", "n": 8}`.
//!
//! The prompt is checked ([`msd::text::prompt::check_prompt`]: empty → 422 `empty_prompt`, over
//! [`MAX_PROMPT_BYTES`] → 413 `prompt_too_large`), embedded with all-MiniLM-L6-v2, assigned to a
//! group of the bundle's prompt partition, and that group's student generates the `n` samples
//! in one network evaluation each, through its batcher like a class request (the same batching,
//! admission and 503 + `Retry-After`; [`crate::router::Router::generate_embedded`]). The answer carries the student in `x-msd-students` (one
//! number: a prompt has one owner). Noise comes from the request's seed ([`crate::noise`]), so
//! the samples depend only on (prompt, n, seed).
//!
//! `n` and `format` are checked as in class requests ([`crate::api`]: one validator for both).

use crate::api::{check_n, json_body, one, parse_format, ApiError, Format};
use crate::router::Router;
use axum::http::StatusCode;
use msd::nets::text_encoder::TextEncoder;
use msd::partition::Partition;
use msd::text::prompt::{check_prompt, MAX_PROMPT_BYTES};
use serde::Deserialize;
use std::sync::{Arc, Mutex};

/// The body of a prompt request as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPromptRequest {
    prompt: String,
    #[serde(default = "one")]
    n: u64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    format: Option<String>,
}

/// A validated prompt request.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptRequest {
    /// Trimmed.
    pub prompt: String,
    pub n: usize,
    pub seed: u64,
    pub format: Format,
}

/// Whether a body is a prompt request (a JSON object with a `prompt` field).
pub fn is_prompt_request(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| v.get("prompt").is_some())
        .unwrap_or(false)
}

impl PromptRequest {
    /// Parses and checks a body; errors name the field.
    pub fn parse(body: &[u8], max_n: usize) -> Result<Self, ApiError> {
        let raw: RawPromptRequest = json_body(body, "prompt request")?;
        let prompt = check_prompt(&raw.prompt, "prompt").map_err(|e| {
            if raw.prompt.trim().len() > MAX_PROMPT_BYTES {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "prompt_too_large",
                    e.to_string(),
                )
            } else {
                ApiError::invalid("empty_prompt", e.to_string())
            }
        })?;
        let n = check_n(raw.n, 1, max_n)?;
        let format = parse_format(raw.format.as_deref())?;
        Ok(Self {
            prompt: prompt.to_string(),
            n,
            seed: raw.seed,
            format,
        })
    }
}

/// The encoder and the prompt partition of a prompt-conditional bundle.
pub struct Prompts {
    encoder: Mutex<TextEncoder>,
    partition: Partition,
}

impl Prompts {
    /// Holds `encoder` and the bundle's prompt `partition`.
    pub fn new(encoder: TextEncoder, partition: Partition) -> Result<Self, String> {
        let groups = partition
            .prompts
            .as_ref()
            .ok_or("the bundle's partition splits classes, not prompts")?;
        if groups.dim() as i64 != encoder.dim() {
            return Err(format!(
                "the bundle routes {}-d prompt embeddings but the text encoder gives {}-d",
                groups.dim(),
                encoder.dim()
            ));
        }
        Ok(Self {
            encoder: Mutex::new(encoder),
            partition,
        })
    }

    /// Embeds the prompt and routes it: its student and its embedding. Blocking: call from a
    /// blocking thread.
    pub fn route(&self, prompt: &str) -> Result<(usize, Vec<f32>), String> {
        let e = {
            let enc = self
                .encoder
                .lock()
                .map_err(|_| "the text encoder failed earlier")?;
            msd::text::prompt::embed_prompt(&enc, prompt, "prompt").map_err(|e| e.to_string())?
        };
        let k = self.partition.route_prompt(&e).map_err(|e| e.to_string())?;
        Ok((k, e))
    }
}

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
}

/// The answer to a prompt request: samples as PNG (one row) or `.npy`, with the student in
/// `x-msd-students`.
pub async fn respond_prompt(
    prompts: Arc<Prompts>,
    router: &Router,
    body: &[u8],
    max_n: usize,
) -> Result<axum::response::Response, ApiError> {
    let req = PromptRequest::parse(body, max_n)?;
    let shape = router.sample_shape().to_vec();
    let z = crate::server::draw_noise(req.n, shape.clone(), req.seed).await?;
    let prompt = req.prompt.clone();
    let (k, e) = tokio::task::spawn_blocking(move || prompts.route(&prompt))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(internal)?;
    let out = router
        .generate_embedded(k, &e, z)
        .await
        .map_err(crate::server::route_error)?;
    let n = req.n;
    let format = req.format;
    let x = out.x;
    let (bytes, ct) = tokio::task::spawn_blocking(move || match format {
        Format::Png => crate::render::png(&x, &shape, &vec![0; n], 1).map(|b| (b, "image/png")),
        Format::Npy => crate::render::npy(&x, n, &shape).map(|b| (b, "application/x-npy")),
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(internal)?;
    Ok(crate::server::respond(
        bytes,
        ct,
        vec![
            ("x-msd-students", k.to_string()),
            ("x-msd-generate-ms", crate::server::ms(out.generate)),
            ("x-msd-samples", n.to_string()),
            ("x-msd-batch", out.batch_rows.to_string()),
            ("x-msd-nfe", "1".into()),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_requests_are_checked_field_by_field() {
        let ok = PromptRequest::parse(br#"{"prompt": " a thin eight ", "n": 8}"#, 64).unwrap();
        assert_eq!(
            (ok.prompt.as_str(), ok.n, ok.format),
            ("a thin eight", 8, Format::Png)
        );
        let e = PromptRequest::parse(br#"{"prompt": "   "}"#, 64).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "empty_prompt"));
        let long = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(10_000));
        let e = PromptRequest::parse(long.as_bytes(), 64).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "prompt_too_large"));
        assert!(e.message.contains("1024"), "{}", e.message);
        // The same checks of `n` and `format` as class requests.
        let e = PromptRequest::parse(br#"{"prompt": "a one", "n": 65}"#, 64).unwrap_err();
        assert_eq!(e.code, "n_above_limit");
        assert!(e.message.contains("limit of 64"), "{}", e.message);
        let e = PromptRequest::parse(br#"{"prompt": "a one", "n": 0}"#, 64).unwrap_err();
        assert_eq!(e.code, "n_out_of_range");
        let e = PromptRequest::parse(br#"{"prompt": "a", "format": "gif"}"#, 64).unwrap_err();
        assert_eq!(
            (e.code, e.message.contains("\"gif\"")),
            ("unknown_format", true)
        );
        let e = PromptRequest::parse(br#"{"prompt": "a one", "class": 1}"#, 64).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        let u = PromptRequest::parse(
            "{\"prompt\": \"un huit \u{e9}pais \u{2713}\"}".as_bytes(),
            4,
        );
        assert_eq!(u.unwrap().prompt, "un huit \u{e9}pais \u{2713}");
        assert!(is_prompt_request(br#"{"prompt": ""}"#));
        assert!(!is_prompt_request(br#"{"class": 1}"#));
        assert!(!is_prompt_request(b"not json"));
    }
}
