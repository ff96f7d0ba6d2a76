//! What a launch made, from typed options: the shared artifacts, the Slurm scripts (and, when
//! submitted, the job ids) or the Kubernetes manifests, with a `Display` that is the summary
//! `msd launch` shows (where everything is, what to run next).

use super::k8s::{self, K8sManifests, K8sOptions};
use super::slurm::{self, SlurmOptions, SlurmScripts, Submitted};
use crate::run::RunDir;
use crate::Result;
use std::fmt;
use std::path::{Path, PathBuf};

/// A Slurm launch: the scripts written and, unless a dry run, the submission.
pub struct SlurmLaunch {
    pub run: RunDir,
    /// Students of the partition.
    pub partition_students: usize,
    pub students: Vec<usize>,
    pub scripts: SlurmScripts,
    pub submitted: Option<Submitted>,
}

/// Writes the scripts of `o` and submits them with `sbatch` unless `dry_run`; the partition
/// (with `partition_students` students) is already made.
pub fn launch_slurm(
    o: &SlurmOptions,
    partition_students: usize,
    dry_run: bool,
    sbatch: &Path,
) -> Result<SlurmLaunch> {
    let scripts = slurm::write_scripts(o)?;
    let submitted = if dry_run {
        None
    } else {
        Some(slurm::submit(&scripts, sbatch)?)
    };
    Ok(SlurmLaunch {
        run: RunDir::new(&o.run),
        partition_students,
        students: o.students.clone(),
        scripts,
        submitted,
    })
}

impl fmt::Display for SlurmLaunch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (run, s) = (&self.run, &self.scripts);
        write!(
            f,
            "shared: {} ({} students)",
            run.partition_path().display(),
            self.partition_students
        )?;
        if run.pairs_path().exists() {
            write!(f, ", {}", run.pairs_path().display())?;
        }
        writeln!(f)?;
        writeln!(f, "scripts: {}", s.array_script.display())?;
        writeln!(f, "         {}", s.bundle_script.display())?;
        let Some(sub) = &self.submitted else {
            writeln!(
                f,
                "dry run: nothing submitted; submit with\n  sbatch {}",
                s.array_script.display()
            )?;
            return write!(
                f,
                "  sbatch --dependency=afterok:<array job id> {}",
                s.bundle_script.display()
            );
        };
        writeln!(
            f,
            "array job: {} (students {:?})",
            sub.array_job, self.students
        )?;
        writeln!(
            f,
            "bundle job: {} (after every student succeeds)",
            sub.bundle_job
        )?;
        for &k in &self.students {
            writeln!(
                f,
                "log of student {k}: {} (task {}_{k})",
                s.student_log(k).display(),
                sub.array_job
            )?;
        }
        write!(f, "log of the bundle job: {}", s.bundle_log().display())
    }
}

/// A Kubernetes launch: the manifests written for the run at `run`.
pub struct K8sLaunch {
    pub run: PathBuf,
    pub options: K8sOptions,
    pub manifests: K8sManifests,
}

/// Writes the manifests of `o` for the run at `run` (absolute).
pub fn launch_k8s(run: &Path, o: K8sOptions) -> Result<K8sLaunch> {
    let manifests = k8s::write_manifests(run, &o)?;
    Ok(K8sLaunch {
        run: run.to_path_buf(),
        options: o,
        manifests,
    })
}

impl fmt::Display for K8sLaunch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (m, o) = (&self.manifests, &self.options);
        writeln!(
            f,
            "students: {} (Indexed Job, {} completions)",
            m.students.display(),
            o.students
        )?;
        writeln!(f, "bundle:   {}", m.bundle.display())?;
        write!(
            f,
            "copy {} onto the volume `{}`",
            self.run.display(),
            o.claim
        )?;
        if !o.sub_path.is_empty() {
            write!(f, " at {}", o.sub_path)?;
        }
        write!(f, ", then run {}", m.submit.display())
    }
}
