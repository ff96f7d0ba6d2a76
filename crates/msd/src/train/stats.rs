//! `stats.jsonl`: one JSON object per logged step. On resume, lines past the checkpoint's step
//! are dropped so the log of a resumed run equals that of an uninterrupted one.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only JSON-lines log.
pub struct StatsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl StatsLog {
    /// Opens `path` for appending, first dropping lines whose `"step"` exceeds `keep_up_to`.
    pub fn open(path: &Path, keep_up_to: u64) -> Result<Self> {
        if path.exists() {
            let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let kept: String = s
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|st| st <= keep_up_to)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            super::checkpoint::write_bytes_atomic(path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record.
    pub fn log(&mut self, record: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| Error::io(&self.path, e))
    }
}
