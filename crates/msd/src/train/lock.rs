//! An advisory lock on a run directory, so that two writers (two `msd train-teacher` on one
//! `--out`) cannot share it: the second is refused at once with the first one's pid. The lock is
//! an OS file lock (`flock` on Unix) on `DIR/.lock`, released when the holder exits, however it
//! exits, so a killed run leaves no stale lock. Taking the lock also removes the temp files
//! (`NAME.PID.tmp`) that killed writers leave behind: with the lock held, no one else can be
//! writing them.
//!
//! Writers that may run side by side on one run (`msd distill --student k` jobs of an array)
//! take the run's lock *shared* ([`RunLock::shared`]) and an exclusive lock on the part they own
//! (`students/k`); whole-run writers (`train-teacher`, `import-teacher`, `partition`) take it
//! exclusively ([`RunLock::acquire`]), so they refuse to start while any student trains.

use crate::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How deep below a locked directory temp files are looked for: deep enough for
/// `students/k/STAGE/checkpoints/step-N/` under a run.
const TMP_DEPTH: usize = 6;

/// A held lock; released on drop (or when the process exits).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    exclusive: bool,
    /// Temp files of earlier, killed writers removed when the lock was taken.
    pub removed_tmp: Vec<PathBuf>,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let (mut file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(dir, &mut file)),
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let pid = std::process::id().to_string();
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(pid.as_bytes());
        let removed_tmp = remove_stale_tmp(dir, TMP_DEPTH);
        Ok(Self {
            file,
            path,
            exclusive: true,
            removed_tmp,
        })
    }

    /// Locks `dir` shared: other shared holders may run beside this one, an exclusive holder
    /// refuses it (and is refused). When no one else holds the lock, the temp files of killed
    /// writers are removed first (the lock is briefly exclusive for that).
    pub fn shared(dir: &Path) -> Result<Self> {
        let (mut file, path) = open(dir)?;
        let removed_tmp = match file.try_lock() {
            Ok(()) => {
                // Downgraded to shared below (flock converts the lock in place).
                remove_stale_tmp(dir, TMP_DEPTH)
            }
            Err(TryLockError::WouldBlock) => Vec::new(),
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(dir, &mut file)),
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        Ok(Self {
            file,
            path,
            exclusive: false,
            removed_tmp,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only an exclusive holder wrote its pid.
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
        let _ = self.file.unlock();
    }
}

/// Creates `dir` if needed and opens `dir/.lock`.
fn open(dir: &Path) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((file, path))
}

/// The error for a lock held elsewhere, naming the exclusive holder's pid when it wrote one.
fn in_use(dir: &Path, file: &mut File) -> Error {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    let holder = holder.trim();
    let who = if holder.is_empty() {
        "another msd process".to_string()
    } else {
        format!("another msd process (pid {holder})")
    };
    Error::Invalid(format!(
        "{} is in use by {who}; wait for it to finish or use another directory",
        dir.display()
    ))
}

/// Whether `name` is a temp file of the atomic writers: `NAME.PID.tmp` (or `NAME.PID.tmp.png`
/// for images, whose encoder picks the format from the extension).
fn is_writer_tmp(name: &str) -> bool {
    let name = name.strip_suffix(".png").unwrap_or(name);
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    match stem.rsplit_once('.') {
        Some((base, pid)) => {
            !base.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Removes writer temp files under `dir` (down to `depth` levels); returns what it removed.
fn remove_stale_tmp(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && depth > 0 {
            removed.extend(remove_stale_tmp(&p, depth - 1));
        } else if t.is_file()
            && e.file_name().to_str().is_some_and(is_writer_tmp)
            && std::fs::remove_file(&p).is_ok()
        {
            removed.push(p);
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let first = RunLock::acquire(&run).unwrap();
        let e = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        RunLock::acquire(&run).unwrap();
    }

    #[test]
    fn shared_holders_coexist_and_exclude_an_exclusive_one() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        std::fs::create_dir_all(run.join("students")).unwrap();
        let stale = run.join("students").join("pairs.safetensors.99.tmp");
        std::fs::write(&stale, b"x").unwrap();
        let a = RunLock::shared(&run).unwrap();
        assert_eq!(a.removed_tmp, vec![stale.clone()]);
        // A second shared holder: allowed, and it removes nothing another holder may write.
        std::fs::write(&stale, b"x").unwrap();
        let b = RunLock::shared(&run).unwrap();
        assert!(b.removed_tmp.is_empty() && stale.exists());
        let e = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop((a, b));
        let x = RunLock::acquire(&run).unwrap();
        let e = RunLock::shared(&run).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(x);
        RunLock::shared(&run).unwrap();
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("teacher").join("ckpt");
        std::fs::create_dir_all(&sub).unwrap();
        let stale = [
            sub.join("model.safetensors.4242.tmp"),
            d.path().join("teacher").join("train.json.17.tmp"),
            d.path().join("teacher").join("step-0000004.17.tmp.png"),
        ];
        let keep = [
            sub.join("model.safetensors"),
            d.path().join("notes.tmp"),
            d.path().join("x.abc.tmp"),
            d.path().join("step-0000004.png"),
        ];
        for p in stale.iter().chain(&keep) {
            std::fs::write(p, b"x").unwrap();
        }
        let lock = RunLock::acquire(d.path()).unwrap();
        let mut want = stale.to_vec();
        want.sort();
        assert_eq!(lock.removed_tmp, want);
        assert!(stale.iter().all(|p| !p.exists()));
        assert!(keep.iter().all(|p| p.exists()));
    }
}
