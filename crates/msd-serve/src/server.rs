//! The HTTP server: routes, handlers, the metrics middleware, and graceful shutdown.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/generate` | samples as PNG or `.npy`; headers `x-msd-students`, `x-msd-generate-ms`, `x-msd-batch` (samples in the largest batch it rode in) |
//! | `POST /v1/teacher` | the teacher's multi-step samples for the same request (404 without one) |
//! | `GET /v1/bundle` | partition, students (parameters, configs), teacher, limits |
//! | `GET /healthz` | `{"status": "ok"}` |
//! | `GET /metrics` | Prometheus text |
//! | `GET /` | the web page |
//!
//! Only these routes exist; nothing is read from disk after start-up.

use crate::api::{ApiError, Format, GenerateRequest};
use crate::batcher::BatchSettings;
use crate::config::ServeConfig;
use crate::info::BundleInfo;
use crate::metrics::Metrics;
use crate::prompt::Prompts;
use crate::router::{RouteError, Router};
use crate::teacher::{Teacher, TeacherError};
use crate::{noise, page, render};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use msd::bundle::Bundle;
use msd::diffusion::SamplerConfig;
use msd::model::EdmModel;
use msd::nets::text_encoder::TextEncoder;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("server settings: {0}")]
    Config(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct AppState {
    _trimmer: Option<crate::memory::Trimmer>,
    router: Router,
    /// Prompt-conditional bundles: the encoder and the students' prompt path.
    prompts: Option<Arc<Prompts>>,
    teacher: Option<Teacher>,
    metrics: Arc<Metrics>,
    cfg: ServeConfig,
    info: BundleInfo,
}

/// A server over one bundle: all students resident, one batcher thread each.
pub struct Server {
    state: Arc<AppState>,
}

/// Why a prompt bundle has no teacher comparison (`GET /v1/bundle`, and the 404 of
/// `POST /v1/teacher`).
const PROMPT_TEACHER: &str = "the teacher comparison of this server takes classes, and this bundle's students take prompts: compare offline with `msd sample --prompt \"...\" --teacher <the teacher's folder>`";

/// Number of samples and noise values above which noise is drawn off the async threads.
const BLOCKING_NOISE: usize = 1 << 16;

impl Server {
    /// Takes the bundle's students (and loads its teacher, if it references one that loads and
    /// matches) and starts the batchers.
    pub fn new(bundle: Bundle, cfg: ServeConfig) -> Result<Self, ServeError> {
        Self::with_encoder(bundle, cfg, None)
    }

    /// [`Server::new`] with the text encoder that a prompt-conditional bundle needs (see
    /// [`crate::prompt`]); refused for such a bundle when `encoder` is `None`.
    pub fn with_encoder(
        mut bundle: Bundle,
        cfg: ServeConfig,
        encoder: Option<TextEncoder>,
    ) -> Result<Self, ServeError> {
        cfg.validate().map_err(ServeError::Config)?;
        let metrics = Arc::new(Metrics::new()?);
        let k = bundle.students.len();
        metrics.init_students(k);
        let shape = bundle.sample_shape();
        let device = bundle.students[0].device();
        // The teacher comparison takes classes: a prompt bundle's teacher is not loaded.
        let (teacher_model, teacher_note) = if bundle.is_prompt_conditional() {
            (None, Some(PROMPT_TEACHER.to_string()))
        } else {
            load_teacher(&bundle, device, &shape)
        };
        let teacher = match teacher_model {
            Some(m) => Some(Teacher::spawn(
                m,
                SamplerConfig {
                    steps: cfg.teacher_steps.unwrap_or(bundle.teacher_sampler().steps),
                    ..bundle.teacher_sampler()
                },
                cfg.queue_cap,
                shape.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        let info = BundleInfo::new(&bundle, &cfg, teacher.as_ref(), teacher_note);
        // A prompt bundle's batchers take embeddings (the prompt path); class requests to it
        // are refused before they reach them.
        let prompts =
            match (bundle.is_prompt_conditional(), encoder) {
                (false, _) => None,
                (true, None) => return Err(ServeError::Config(
                    "this bundle's students take prompts: start the server with the text encoder"
                        .into(),
                )),
                (true, Some(enc)) => {
                    let p = Prompts::new(enc, bundle.manifest.partition.clone())
                        .map_err(ServeError::Config)?;
                    Some(Arc::new(p))
                }
            };
        let embedding_dim = bundle.students[0]
            .spec
            .net
            .cond()
            .embedding_dim()
            .unwrap_or(0) as usize;
        let students = std::mem::take(&mut bundle.students);
        let settings = BatchSettings {
            max_batch: cfg.max_batch,
            eval_chunk: cfg.chunk(),
            max_wait: cfg.max_wait,
            queue_cap: cfg.queue_cap,
            max_queue: cfg.max_queue,
            delay: cfg.batch_delay,
            sigma_max: bundle.manifest.sigma_max,
            sample_shape: shape,
            embedding_dim,
        };
        let router = Router::start(bundle.manifest.clone(), students, settings, metrics.clone())?;
        let trimmer = cfg
            .trim_after_idle
            .map(crate::memory::Trimmer::start)
            .transpose()?;
        Ok(Self {
            state: Arc::new(AppState {
                _trimmer: trimmer,
                router,
                prompts,
                teacher,
                metrics,
                cfg,
                info,
            }),
        })
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// What `GET /v1/bundle` answers.
    pub fn info(&self) -> &BundleInfo {
        &self.state.info
    }

    /// The axum application.
    pub fn app(&self) -> axum::Router {
        let st = self.state.clone();
        axum::Router::new()
            .route("/", get(index))
            .route("/v1/generate", post(generate))
            .route("/v1/teacher", post(teacher))
            .route("/v1/bundle", get(bundle))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics_text))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(st.cfg.body_limit))
            .layer(middleware::from_fn_with_state(st.clone(), guard_body))
            .layer(middleware::from_fn_with_state(st.clone(), track))
            .with_state(st)
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, finishes the
    /// requests in flight, and stops the batchers.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.app();
        let limits = crate::conn::ConnLimits {
            read_timeout: self.state.cfg.read_timeout,
            max_connections: self.state.cfg.max_connections,
        };
        drop(self);
        crate::conn::serve(listener, app, limits, shutdown).await
    }
}

/// The async runtime of a server: few blocking threads (encoding), since every extra thread
/// gets its own allocator arena and keeps memory after a burst.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.clamp(1, 4))
        .max_blocking_threads(cores.clamp(2, 8))
        .enable_all()
        .build()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn load_teacher(
    bundle: &Bundle,
    device: tch::Device,
    shape: &[i64],
) -> (Option<EdmModel>, Option<String>) {
    let Some(dir) = bundle.teacher_dir() else {
        return (None, Some("the bundle references no teacher".into()));
    };
    let r = EdmModel::load_dir(&dir, device)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            if m.spec.net.sample_shape() != shape {
                Err("its samples have another shape than the students'".into())
            } else if m.num_classes() != bundle.manifest.partition.num_conditions as i64 {
                Err("it has another number of classes than the bundle".into())
            } else {
                Ok(m)
            }
        });
    match r {
        Ok(m) => (Some(m), None),
        Err(e) => {
            let note = format!("the bundle's teacher is unavailable: {e}");
            tracing::warn!("{note}");
            (None, Some(note))
        }
    }
}

/// Known routes by name; anything else is counted as `other` (bounded label set).
fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/v1/generate" => "/v1/generate",
        "/v1/teacher" => "/v1/teacher",
        "/v1/bundle" => "/v1/bundle",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    // Decremented on drop too, when a client goes away mid-request.
    struct InFlight(prometheus::IntGauge);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    st.metrics.in_flight.inc();
    let _guard = InFlight(st.metrics.in_flight.clone());
    let r = next.run(req).await;
    st.metrics.observe_response(route, r.status().as_u16());
    r
}

/// Refuses a declared oversize body before reading it (413), reads the body within
/// `read_timeout` (408 otherwise) and within `body_limit` (413), then hands it on. Refusals close
/// the connection, since the rest of the body is never read.
async fn guard_body(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let limit = st.cfg.body_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is above the size limit of {limit} bytes"),
        )
    };
    let close = |e: ApiError| {
        let mut r = e.into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return close(too_large());
    }
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(st.cfg.read_timeout, body.collect()).await {
        Err(_) => close(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                st.cfg.read_timeout.as_secs_f64()
            ),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            close(too_large())
        }
        Ok(Err(e)) => close(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading the request body: {e}"),
        )),
        Ok(Ok(c)) => {
            next.run(Request::from_parts(
                parts,
                axum::body::Body::from(c.to_bytes()),
            ))
            .await
        }
    }
}

async fn index() -> Html<&'static str> {
    Html(page::PAGE)
}

async fn healthz(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "ok", "students": st.info.students.len()}))
}

async fn bundle(State(st): State<Arc<AppState>>) -> Json<BundleInfo> {
    Json(st.info.clone())
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (try GET /, POST /v1/generate, GET /v1/bundle, GET /healthz, GET /metrics)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

pub(crate) fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is above the size limit of {limit} bytes"),
        )
    } else {
        ApiError::new(e.status(), "bad_body", e.body_text())
    }
}

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
}

pub(crate) async fn draw_noise(n: usize, shape: Vec<i64>, seed: u64) -> Result<Vec<f32>, ApiError> {
    let per: usize = shape.iter().product::<i64>() as usize;
    if n * per < BLOCKING_NOISE {
        return Ok(noise::noise(n, &shape, seed));
    }
    tokio::task::spawn_blocking(move || noise::noise(n, &shape, seed))
        .await
        .map_err(|e| internal(format!("noise: {e}")))
}

/// Parses a request body and checks that its format can be produced.
fn parse(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
    max_n: usize,
) -> Result<GenerateRequest, ApiError> {
    let body = body.map_err(|e| body_error(e, st.cfg.body_limit))?;
    let req = GenerateRequest::parse(&body, max_n, st.router.num_classes())?;
    if req.format == Format::Png && !render::png_supported(st.router.sample_shape()) {
        return Err(ApiError::invalid(
            "unsupported_format",
            format!(
                "samples of shape {:?} have no PNG picture; ask for format \"npy\"",
                st.router.sample_shape()
            ),
        ));
    }
    Ok(req)
}

/// Encodes samples off the async threads.
async fn encode(
    req: &GenerateRequest,
    x: Vec<f32>,
    labels: Vec<i64>,
    shape: Vec<i64>,
) -> Result<(Vec<u8>, &'static str), ApiError> {
    let (format, groups) = (req.format, req.classes.len());
    tokio::task::spawn_blocking(move || match format {
        Format::Png => render::png(&x, &shape, &labels, groups).map(|b| (b, "image/png")),
        Format::Npy => render::npy(&x, labels.len(), &shape).map(|b| (b, "application/x-npy")),
    })
    .await
    .map_err(|e| internal(format!("encoding: {e}")))?
    .map_err(internal)
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("?"))
}

pub(crate) fn respond(
    body: Vec<u8>,
    content_type: &'static str,
    extra: Vec<(&'static str, String)>,
) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (k, v) in extra {
        h.insert(HeaderName::from_static(k), header_value(v));
    }
    r
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The answer to a request the router could not serve.
pub(crate) fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::UnknownClass { .. } => ApiError::invalid("unknown_class", e.to_string()),
        RouteError::Busy { retry_after_s, .. } => ApiError::busy(e.to_string(), retry_after_s),
        RouteError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        ),
        RouteError::Failed(m) => internal(m),
    }
}

async fn generate(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| body_error(e, st.cfg.body_limit))?;
    match (&st.prompts, crate::prompt::is_prompt_request(&body)) {
        (Some(p), _) => {
            return crate::prompt::respond_prompt(p.clone(), &st.router, &body, st.cfg.max_n).await;
        }
        (None, true) => {
            return Err(ApiError::invalid(
                "prompts_unsupported",
                "this bundle's students take classes (field `class`), not prompts",
            ))
        }
        (None, false) => {}
    }
    let req = parse(&st, Ok(body), st.cfg.max_n)?;
    let labels = req.labels();
    let shape = st.router.sample_shape().to_vec();
    let z = draw_noise(labels.len(), shape.clone(), req.seed).await?;
    let g = st.router.generate(&labels, z).await.map_err(route_error)?;
    let n = labels.len();
    let (body, ct) = encode(&req, g.x, labels, shape).await?;
    let students = g
        .students
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok(respond(
        body,
        ct,
        vec![
            ("x-msd-students", students),
            ("x-msd-generate-ms", ms(g.generate)),
            ("x-msd-samples", n.to_string()),
            ("x-msd-batch", g.batch_rows.to_string()),
            ("x-msd-nfe", "1".into()),
        ],
    ))
}

async fn teacher(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Some(t) = st.teacher.as_ref() else {
        let reason = st.info.teacher.reason.clone().unwrap_or_default();
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no_teacher", reason));
    };
    let req = parse(&st, body, st.cfg.max_teacher_n)?;
    let labels = req.labels();
    let shape = st.router.sample_shape().to_vec();
    let z = draw_noise(labels.len(), shape.clone(), req.seed).await?;
    let (x, dt) = t.generate(labels.clone(), z).await.map_err(|e| match e {
        TeacherError::Busy => ApiError::busy(e.to_string(), st.cfg.retry_after_s),
        TeacherError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        ),
        TeacherError::Failed(m) => internal(m),
    })?;
    let n = labels.len();
    let (body, ct) = encode(&req, x, labels, shape).await?;
    Ok(respond(
        body,
        ct,
        vec![
            ("x-msd-generate-ms", ms(dt)),
            ("x-msd-samples", n.to_string()),
            ("x-msd-nfe", t.nfe.to_string()),
        ],
    ))
}
