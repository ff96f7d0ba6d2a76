//! Atomic writes (temp file, fsync, rename) and checked loads for weights, optimiser state and
//! JSON; and the checkpoint directory of a training stage, with a `latest` pointer that is only
//! moved once every file of a checkpoint is on disk.
//!
//! Layout of a stage directory:
//! `checkpoints/step-000500/{model,ema,optim*}.safetensors`, `checkpoints/latest.json`.

use crate::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Tensor};

/// Current on-disk format version of checkpoints and artifacts.
pub const FORMAT_VERSION: u32 = 1;

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(s)
}

fn fsync_and_rename(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        // Persist the rename itself; failure to open a directory is not fatal on every OS.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes bytes to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp_path(path);
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::io(&tmp, e))?;
    fsync_and_rename(&tmp, path)
}

/// Writes a value as pretty JSON atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::format(path, e.to_string()))?;
    write_bytes_atomic(path, s.as_bytes())
}

/// Reads and parses a JSON file; errors name the file and the position.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| Error::format(path, e.to_string()))
}

/// Writes named tensors to a safetensors file atomically (tensors are moved to CPU first).
pub fn write_tensors_atomic(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    let tmp = tmp_path(path);
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| Error::format(&tmp, e.to_string()))?;
    fsync_and_rename(&tmp, path)
}

/// Reads every tensor of a safetensors file; a missing or corrupt file gives a clear error.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    Tensor::read_safetensors(path)
        .map_err(|e| Error::format(path, format!("not a readable safetensors file ({e})")))
}

/// Saves all variables of `vs` (sorted by name) atomically.
pub fn save_varstore(vs: &VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    write_tensors_atomic(path, &named)
}

/// Loads a safetensors file into `vs`, first checking that the names and shapes match exactly;
/// the error names the first tensor that is missing, unexpected, or of another shape.
pub fn load_varstore(vs: &mut VarStore, path: &Path) -> Result<()> {
    let file = read_tensors(path)?;
    let vars = vs.variables();
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let Some((_, t)) = file.iter().find(|(n, _)| n == name) else {
            return Err(bad(format!(
                "missing tensor `{name}` that the config's network has (shape {:?})",
                vars[name].size()
            )));
        };
        if t.size() != vars[name].size() {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?} in the file but {:?} in the network built from the config",
                t.size(),
                vars[name].size()
            )));
        }
    }
    if let Some((n, t)) = file.iter().find(|(n, _)| !vars.contains_key(n)) {
        return Err(bad(format!(
            "unexpected tensor `{n}` (shape {:?}) that the config's network does not have",
            t.size()
        )));
    }
    tch::no_grad(|| {
        for (name, mut v) in vars {
            if let Some((_, t)) = file.iter().find(|(n, _)| *n == name) {
                v.f_copy_(&t.to_kind(v.kind()))?;
            }
        }
        Ok::<(), tch::TchError>(())
    })?;
    Ok(())
}

/// What `state.json` of a checkpoint records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    pub format_version: u32,
    /// Number of completed steps.
    pub step: u64,
    pub seed: u64,
    /// Hash of the resolved config that produced this run; resuming with another config is refused.
    pub config_hash: String,
    /// The runner's non-tensor state at this step.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: CheckpointExtra,
}

/// The non-tensor state a checkpoint holds besides the step (`state.json`'s `extra`). Every
/// method's own state is tensors ([`super::runner::Slot`]) plus the step: its random draws come
/// from `(seed, step, stream)` and its log window restarts on resume, so the runner's two facts
/// are all there is. Fields missing in older files read as their defaults.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointExtra {
    /// Training wall time accumulated up to this checkpoint (over resumptions).
    #[serde(default)]
    pub train_seconds: f64,
    /// The loss of the step before the checkpoint (JSON `null` when not finite; NaN when
    /// unknown): the final loss when a resumed run has no step left to run.
    #[serde(default = "nan", deserialize_with = "null_as_nan")]
    pub loss: f64,
}

impl Default for CheckpointExtra {
    fn default() -> Self {
        Self {
            train_seconds: 0.0,
            loss: f64::NAN,
        }
    }
}

fn nan() -> f64 {
    f64::NAN
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn null_as_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl TrainState {
    /// Training wall time accumulated up to this checkpoint (over resumptions).
    pub fn train_seconds(&self) -> f64 {
        self.extra.train_seconds
    }
}

/// The `checkpoints/` folder of one training stage.
pub struct CheckpointDir {
    pub root: PathBuf,
    /// How many step folders to keep.
    pub keep: usize,
}

#[derive(Serialize, Deserialize)]
struct Latest {
    dir: String,
}

impl CheckpointDir {
    pub fn new(stage_dir: &Path) -> Self {
        Self {
            root: stage_dir.join("checkpoints"),
            keep: 2,
        }
    }

    /// The newest complete checkpoint's folder and state, if any.
    pub fn latest(&self) -> Result<Option<(PathBuf, TrainState)>> {
        let p = self.root.join("latest.json");
        if !p.exists() {
            return Ok(None);
        }
        let l: Latest = read_json(&p)?;
        let dir = self.root.join(l.dir);
        let state: TrainState = read_json(&dir.join("state.json"))?;
        if state.format_version != FORMAT_VERSION {
            return Err(Error::format(
                dir.join("state.json"),
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    state.format_version
                ),
            ));
        }
        Ok(Some((dir, state)))
    }

    /// The newest checkpoint to resume from, refusing one written for another config (`hash`).
    pub fn resume(&self, hash: &str) -> Result<Option<(PathBuf, TrainState)>> {
        match self.latest()? {
            Some((_, state)) if state.config_hash != hash => Err(Error::Invalid(format!(
                "{} holds a run made with another config, seed, data or teacher (hash {} vs {hash}); use another output directory or delete it",
                self.root.parent().unwrap_or(&self.root).display(),
                state.config_hash
            ))),
            other => Ok(other),
        }
    }

    /// Writes a checkpoint: `write` fills the new step folder; then `state.json`, then the
    /// `latest` pointer move atomically, then old folders are pruned.
    pub fn save(
        &self,
        state: &TrainState,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let name = format!("step-{:09}", state.step);
        let dir = self.root.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        write(&dir)?;
        write_json_atomic(&dir.join("state.json"), state)?;
        write_json_atomic(
            &self.root.join("latest.json"),
            &Latest { dir: name.clone() },
        )?;
        self.prune(&name);
        Ok(dir)
    }

    fn prune(&self, current: &str) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut dirs: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("step-") && n.as_str() <= current)
            .collect();
        dirs.sort();
        let excess = dirs.len().saturating_sub(self.keep);
        for d in &dirs[..excess] {
            let _ = std::fs::remove_dir_all(self.root.join(d));
        }
    }
}

/// A short, stable hash (hex) of any serialisable value, used to tie checkpoints to configs.
pub fn config_hash<T: Serialize>(value: &T) -> String {
    use sha2::{Digest, Sha256};
    let s = serde_json::to_string(value).unwrap_or_default();
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn roundtrip_and_mismatch_errors_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("a", &[2, 3], nn::Init::Const(1.5));
        save_varstore(&vs, &p).unwrap();
        let mut vs2 = VarStore::new(Device::Cpu);
        let _ = vs2.root().var("a", &[2, 3], nn::Init::Const(0.0));
        load_varstore(&mut vs2, &p).unwrap();
        assert_eq!(vs2.variables()["a"].double_value(&[1, 2]), 1.5);

        let mut vs3 = VarStore::new(Device::Cpu);
        let _ = vs3.root().var("a", &[3, 3], nn::Init::Const(0.0));
        let e = load_varstore(&mut vs3, &p).unwrap_err().to_string();
        assert!(
            e.contains("`a`") && e.contains("[2, 3]") && e.contains("[3, 3]"),
            "{e}"
        );

        let mut vs4 = VarStore::new(Device::Cpu);
        let _ = vs4.root().var("b", &[2, 3], nn::Init::Const(0.0));
        let e = load_varstore(&mut vs4, &p).unwrap_err().to_string();
        assert!(e.contains("missing tensor `b`"), "{e}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, b"not a safetensors file").unwrap();
        let e = read_tensors(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("safetensors"),
            "{e}"
        );
        let e = read_tensors(&dir.path().join("none.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.safetensors"), "{e}");
    }

    #[test]
    fn latest_pointer_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let c = CheckpointDir::new(dir.path());
        assert!(c.latest().unwrap().is_none());
        for step in [10, 20, 30] {
            let st = TrainState {
                format_version: FORMAT_VERSION,
                step,
                seed: 1,
                config_hash: "h".into(),
                extra: CheckpointExtra {
                    train_seconds: step as f64,
                    loss: if step == 30 { f64::NAN } else { 0.5 },
                },
            };
            c.save(&st, |d| write_bytes_atomic(&d.join("x"), b"1"))
                .unwrap();
        }
        let (d, st) = c.latest().unwrap().unwrap();
        assert_eq!(st.step, 30);
        assert_eq!(st.train_seconds(), 30.0);
        assert!(
            st.extra.loss.is_nan(),
            "a NaN loss is written as null and read back"
        );
        assert!(d.ends_with("step-000000030"));
        assert!(!c.root.join("step-000000010").exists());
        assert!(c.root.join("step-000000020").exists());
    }

    /// `state.json` files written when `extra` was untyped JSON still read: the two fields, a
    /// `null` loss, a `null` or missing `extra`.
    #[test]
    fn older_state_files_read() {
        let read = |t: &str| serde_json::from_str::<TrainState>(t).unwrap().extra;
        let head = r#""format_version":1,"step":5,"seed":2,"config_hash":"h""#;
        let e = read(&format!(
            r#"{{{head},"extra":{{"train_seconds":1.5,"loss":0.25}}}}"#
        ));
        assert_eq!((e.train_seconds, e.loss), (1.5, 0.25));
        let e = read(&format!(
            r#"{{{head},"extra":{{"train_seconds":2.0,"loss":null}}}}"#
        ));
        assert!(e.train_seconds == 2.0 && e.loss.is_nan());
        for t in [
            format!(r#"{{{head},"extra":null}}"#),
            format!(r#"{{{head}}}"#),
        ] {
            let e = read(&t);
            assert!(e.train_seconds == 0.0 && e.loss.is_nan());
        }
    }
}
