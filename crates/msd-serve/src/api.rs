//! The JSON API: request bodies, their validation, and JSON errors. Every bad request is a 4xx
//! answer `{"error": {"code": "...", "message": "..."}}` whose message says what was wrong.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable machine-readable code (`malformed_json`, `unknown_class`, ...).
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (503 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 422: a well-formed request with a value the server cannot serve.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503 with `Retry-After`.
    pub fn busy(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// Output format of a generate request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Npy,
}

/// The body of `POST /v1/generate` (and `POST /v1/teacher`) as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    class: Value,
    #[serde(default = "one")]
    n: u64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    format: Option<String>,
}

pub(crate) fn one() -> u64 {
    1
}

/// A body parsed as `T`; one that does not parse is 400 `malformed_json`, "the body is not a
/// valid {what}: ...".
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not a valid {what}: {e}"),
        )
    })
}

/// Checks `n` samples for each of `groups` groups (classes, or one prompt) against the
/// per-request limit `max_n`: 422 `n_out_of_range` for 0, `n_above_limit` above it.
pub(crate) fn check_n(n: u64, groups: usize, max_n: usize) -> Result<usize, ApiError> {
    if n == 0 {
        return Err(ApiError::invalid(
            "n_out_of_range",
            "field `n` must be at least 1",
        ));
    }
    let total = n.saturating_mul(groups as u64);
    if total > max_n as u64 {
        let what = if groups > 1 {
            format!("n = {n} for {groups} classes asks for {total} samples")
        } else {
            format!("n = {n}")
        };
        return Err(ApiError::invalid(
            "n_above_limit",
            format!("{what}, above this server's limit of {max_n} samples per request"),
        ));
    }
    Ok(n as usize)
}

/// The field `format`: PNG when absent; 422 `unknown_format` for anything but png and npy.
pub(crate) fn parse_format(f: Option<&str>) -> Result<Format, ApiError> {
    match f {
        None | Some("png") => Ok(Format::Png),
        Some("npy") => Ok(Format::Npy),
        Some(f) => Err(ApiError::invalid(
            "unknown_format",
            format!("unknown format {f:?} (expected \"png\" or \"npy\")"),
        )),
    }
}

/// A validated generate request: `n` samples of each class in `classes`, class-major.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    pub classes: Vec<i64>,
    pub n: usize,
    pub seed: u64,
    pub format: Format,
}

impl GenerateRequest {
    /// Parses and checks a body: JSON shape, `n` between 1 and the per-request limit
    /// `max_n` (counting every class of a mixed request), class ids in `0..num_classes`, format.
    pub fn parse(body: &[u8], max_n: usize, num_classes: usize) -> Result<Self, ApiError> {
        let raw: RawRequest = json_body(body, "generate request")?;
        let classes = match &raw.class {
            Value::Number(_) => vec![class_id(&raw.class)?],
            Value::Array(items) => items.iter().map(class_id).collect::<Result<_, _>>()?,
            _ => return Err(bad_class_type()),
        };
        if classes.is_empty() {
            return Err(ApiError::invalid(
                "empty_class_list",
                "field `class`: the list of classes is empty",
            ));
        }
        if let Some(&c) = classes
            .iter()
            .find(|&&c| c < 0 || c as usize >= num_classes)
        {
            return Err(ApiError::invalid(
                "unknown_class",
                format!(
                    "unknown class {c}: this bundle has classes 0..={}",
                    num_classes.saturating_sub(1)
                ),
            ));
        }
        let n = check_n(raw.n, classes.len(), max_n)?;
        let format = parse_format(raw.format.as_deref())?;
        Ok(Self {
            classes,
            n,
            seed: raw.seed,
            format,
        })
    }

    /// One label per sample: `n` of each class, class-major.
    pub fn labels(&self) -> Vec<i64> {
        self.classes
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, self.n))
            .collect()
    }
}

fn bad_class_type() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "field `class` must be a class id (an integer) or a list of class ids",
    )
}

fn class_id(v: &Value) -> Result<i64, ApiError> {
    v.as_i64().ok_or_else(bad_class_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<GenerateRequest, ApiError> {
        GenerateRequest::parse(s.as_bytes(), 16, 8)
    }

    #[test]
    fn good_requests() {
        let r = parse(r#"{"class": 3}"#).unwrap();
        assert_eq!(
            (r.classes, r.n, r.seed, r.format),
            (vec![3], 1, 0, Format::Png)
        );
        let r = parse(r#"{"class": [1, 7], "n": 8, "seed": 9, "format": "npy"}"#).unwrap();
        assert_eq!(r.labels(), [vec![1; 8], vec![7; 8]].concat());
        assert_eq!(r.format, Format::Npy);
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases = [
            ("{", 400, "malformed_json"),
            (r#"{"n": 2}"#, 400, "missing field `class`"),
            (r#"{"class": "3"}"#, 400, "class id"),
            (r#"{"class": 1.5}"#, 400, "class id"),
            (r#"{"class": 1, "n": -1}"#, 400, "invalid value"),
            (
                r#"{"class": 1, "colour": 2}"#,
                400,
                "unknown field `colour`",
            ),
            (r#"{"class": 8}"#, 422, "unknown class 8"),
            (r#"{"class": -1}"#, 422, "unknown class -1"),
            (r#"{"class": []}"#, 422, "empty"),
            (r#"{"class": 1, "n": 0}"#, 422, "at least 1"),
            (r#"{"class": 1, "n": 17}"#, 422, "limit of 16"),
            (r#"{"class": [1, 2], "n": 9}"#, 422, "18 samples"),
            (
                r#"{"class": 1, "format": "gif"}"#,
                422,
                "unknown format \"gif\"",
            ),
        ];
        for (body, status, needle) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{body}: {e:?}");
            assert!(
                e.message.contains(needle) || e.code == needle,
                "{body}: {e:?}"
            );
        }
    }
}
