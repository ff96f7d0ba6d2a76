//! The library's error type: every variant names the file, field, tensor or condition at fault.

use std::path::PathBuf;

/// Errors returned by the `msd` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what was expected (corrupt, truncated, wrong format).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A checkpoint's tensors do not match the network built from the config.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// A configuration value is missing or invalid; `field` is its dotted name.
    #[error("config field `{field}`: {msg}")]
    Config { field: String, msg: String },
    /// A condition (class label) outside the model's range.
    #[error("unknown class {class}: this model has {num_classes} classes (0..={max})", max = num_classes.saturating_sub(1))]
    UnknownClass { class: i64, num_classes: i64 },
    /// Training produced a NaN or infinite value.
    #[error(
        "{what} is not finite at step {step}; the last good checkpoint is kept (suspects: a learning rate too high for the stage (its optimizer's `lr`; set `grad_clip`), or NaN/inf in the data or the starting weights)"
    )]
    NonFinite { what: String, step: u64 },
    /// Training stopped on request (SIGTERM / preemption) after checkpointing at `step`; rerun
    /// the same command to resume.
    #[error(
        "interrupted at step {step}; a checkpoint was written, rerun the same command to resume"
    )]
    Interrupted { step: u64 },
    /// A partition violates its invariants (each condition owned exactly once).
    #[error("partition: {0}")]
    Partition(String),
    /// A bundle is incomplete or inconsistent.
    #[error("bundle {path}: {msg}")]
    Bundle { path: PathBuf, msg: String },
    /// A cluster scheduler's command (e.g. `sbatch`) failed or answered something unexpected.
    #[error("{command}: {msg}")]
    Scheduler { command: String, msg: String },
    /// An invalid argument to a library function.
    #[error("{0}")]
    Invalid(String),
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// `what` (the flag, file or step concerned) failed because of `source`.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

/// Names what an error concerns (as `anyhow::Context` does in the binary).
pub trait ResultExt<T> {
    /// Wraps an error with `what()`; `Interrupted` passes through unwrapped, so that callers
    /// still recognise a stop request.
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| match e.into() {
            e @ Error::Interrupted { .. } => e,
            e => Error::Context {
                what: what().into(),
                source: Box::new(e),
            },
        })
    }
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error for `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A config error for the dotted `field`.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }
}
