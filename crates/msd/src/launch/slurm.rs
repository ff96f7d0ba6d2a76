//! Slurm: a job array whose task k runs `msd distill --run R --student k` (all requested
//! stages), and a bundle job that depends on the whole array (`afterok`). Scripts go to
//! `R/launch/slurm/`, logs to `R/launch/slurm/logs/` (one file per student, appended across
//! requeues). Tasks ask to be requeued on preemption (`--requeue`); Slurm's SIGTERM makes
//! `msd` checkpoint and exit with status 75, and the requeued task resumes from that checkpoint.
//! Before the time limit the batch shell gets SIGUSR1 (`--signal=B:USR1@…`): it stops `msd`
//! the same way and requeues the task itself.

use super::{ranges, shell_quote, BundleEval};
use crate::distill::StageKind;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Exit status of `msd` when a trainer stopped on SIGTERM/SIGINT after writing a checkpoint.
pub const EXIT_INTERRUPTED: i32 = 75;

/// What to launch and the resources of each task.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The `msd` binary the tasks run (absolute path, visible on the compute nodes).
    pub program: PathBuf,
    /// The run directory (absolute path on a file system shared by the nodes).
    pub run: PathBuf,
    /// Students to train (array task ids).
    pub students: Vec<usize>,
    /// Stages each task runs, in order; the last one is bundled.
    pub stages: Vec<StageKind>,
    /// `--device` of `msd distill` (`cpu`, `cuda`).
    pub device: String,
    /// Slurm partition (`--partition`).
    pub partition: Option<String>,
    /// Generic resources per task (`--gres`, e.g. `gpu:1`).
    pub gres: Option<String>,
    /// CPUs per task (`--cpus-per-task`); also `msd --threads`.
    pub cpus_per_task: Option<u32>,
    /// Time limit per task (`--time`, e.g. `4:00:00`).
    pub time: Option<String>,
    /// Seconds before the time limit at which a task checkpoints and requeues itself.
    pub warn_seconds: u32,
    /// Prefix of the job names.
    pub job_name: String,
    /// Evaluate the bundle in the bundle job, after assembling it.
    pub eval: Option<BundleEval>,
}

/// The files `write_scripts` made.
#[derive(Clone, Debug)]
pub struct SlurmScripts {
    pub dir: PathBuf,
    pub array_script: PathBuf,
    pub bundle_script: PathBuf,
    pub logs: PathBuf,
}

impl SlurmScripts {
    /// The log of student `k` (all its attempts, appended).
    pub fn student_log(&self, k: usize) -> PathBuf {
        self.logs.join(format!("student-{k}.log"))
    }
    /// The log of the bundle job.
    pub fn bundle_log(&self) -> PathBuf {
        self.logs.join("bundle.log")
    }
}

/// Job ids of a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The array job (its tasks are `<id>_<k>`).
    pub array_job: String,
    /// The bundle job, held until every task of the array ended with status 0.
    pub bundle_job: String,
}

/// The directory of a run's Slurm scripts.
pub fn scripts_dir(run: &Path) -> PathBuf {
    run.join("launch").join("slurm")
}

fn q(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

fn common_directives(o: &SlurmOptions, s: &mut String, gres: bool) {
    if let Some(p) = &o.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let (true, Some(g)) = (gres, &o.gres) {
        s.push_str(&format!("#SBATCH --gres={g}\n"));
    }
    if let Some(t) = &o.time {
        s.push_str(&format!("#SBATCH --time={t}\n"));
    }
}

fn check(o: &SlurmOptions) -> Result<()> {
    if o.students.is_empty() {
        return Err(Error::Invalid("--students: no student to launch".into()));
    }
    for (name, v) in [
        ("--partition", &o.partition),
        ("--gres", &o.gres),
        ("--time", &o.time),
    ] {
        if let Some(v) = v {
            if v.is_empty()
                || v.chars()
                    .any(|c| c.is_whitespace() || c == '\'' || c == '"')
            {
                return Err(Error::Invalid(format!(
                    "{name} `{v}`: a Slurm value has no spaces or quotes"
                )));
            }
        }
    }
    for (name, p) in [("--run", &o.run), ("the msd binary", &o.program)] {
        let t = p.to_string_lossy();
        if t.chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '%')
        {
            return Err(Error::Invalid(format!(
                "{name} `{t}`: #SBATCH lines cannot hold a path with spaces, quotes or `%`; use another directory"
            )));
        }
    }
    if let Some(e) = &o.eval {
        e.check()?;
    }
    if !o.run.is_absolute() || !o.program.is_absolute() {
        return Err(Error::Invalid(
            "the run directory and the msd binary must be absolute paths in batch scripts".into(),
        ));
    }
    super::bundle_stage(&o.stages).map(|_| ())
}

/// The array's batch script: task `$SLURM_ARRAY_TASK_ID` distils that student.
pub fn array_script(o: &SlurmOptions) -> Result<String> {
    check(o)?;
    let logs = scripts_dir(&o.run).join("logs");
    let stages: Vec<&str> = o.stages.iter().map(|s| s.name()).collect();
    let threads = o
        .cpus_per_task
        .map(|n| format!(" --threads {n}"))
        .unwrap_or_default();
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(
        "# Written by `msd launch slurm`: task k of this array distils student k of the run.\n",
    );
    s.push_str(&format!("#SBATCH --job-name={}-students\n", o.job_name));
    s.push_str(&format!("#SBATCH --array={}\n", ranges(&o.students)));
    s.push_str("#SBATCH --requeue\n");
    s.push_str(&format!("#SBATCH --signal=B:USR1@{}\n", o.warn_seconds));
    s.push_str("#SBATCH --open-mode=append\n");
    s.push_str(&format!(
        "#SBATCH --output={}\n",
        logs.join("student-%a.log").display()
    ));
    s.push_str(&format!("#SBATCH --chdir={}\n", o.run.display()));
    s.push_str("#SBATCH --ntasks=1\n");
    if let Some(n) = o.cpus_per_task {
        s.push_str(&format!("#SBATCH --cpus-per-task={n}\n"));
    }
    common_directives(o, &mut s, true);
    s.push_str(&format!(
        r#"set -u
k="${{SLURM_ARRAY_TASK_ID:?this script runs as a task of a Slurm job array}}"
echo "msd launch: student $k, job ${{SLURM_JOB_ID}} (${{SLURM_ARRAY_JOB_ID}}_$k), attempt $((${{SLURM_RESTART_COUNT:-0}} + 1)), host $(hostname), $(date -u +%FT%TZ)"
requeue=0
{program}{threads} distill --run {run} --student "$k" --stages {stages} --device {device} &
child=$!
# Preemption, scancel and scontrol requeue send SIGTERM to every process of the job; msd then
# checkpoints and exits with {code}. The time-limit warning (SIGUSR1) reaches only this shell: it
# stops msd the same way and requeues the task, which resumes from the checkpoint.
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'requeue=1; kill -TERM "$child" 2>/dev/null' USR1
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
# A trap interrupts `wait` (status > 128); the child's own status is then still to be read.
wait "$child" 2>/dev/null; last=$?
[ "$last" -ne 127 ] && status=$last
echo "msd launch: student $k exited with status $status at $(date -u +%FT%TZ)"
if [ "$status" -eq {code} ] && [ "$requeue" -eq 1 ]; then
  echo "msd launch: student $k checkpointed before its time limit; requeueing"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
"#,
        program = q(&o.program),
        run = q(&o.run),
        stages = stages.join(","),
        device = shell_quote(&o.device),
        code = EXIT_INTERRUPTED,
    ));
    Ok(s)
}

/// The bundle job's script: assembles and validates `R/bundle.json` from the students.
pub fn bundle_script(o: &SlurmOptions) -> Result<String> {
    check(o)?;
    let stage = super::bundle_stage(&o.stages)?;
    let logs = scripts_dir(&o.run).join("logs");
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(
        "# Written by `msd launch slurm`: runs once every student task ended with status 0.\n",
    );
    s.push_str(&format!("#SBATCH --job-name={}-bundle\n", o.job_name));
    s.push_str(&format!(
        "#SBATCH --output={}\n",
        logs.join("bundle.log").display()
    ));
    s.push_str(&format!("#SBATCH --chdir={}\n", o.run.display()));
    s.push_str("#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=1\n");
    common_directives(o, &mut s, false);
    s.push_str(&format!(
        "set -eu\n{} --threads 1 bundle --run {} --stage {}\n",
        q(&o.program),
        q(&o.run),
        stage.name()
    ));
    if let Some(e) = &o.eval {
        let args: Vec<String> = e.args(&o.run).iter().map(|a| shell_quote(a)).collect();
        s.push_str(&format!(
            "{} --threads 1 {}\n",
            q(&o.program),
            args.join(" ")
        ));
    }
    Ok(s)
}

/// Writes both scripts (executable) into `R/launch/slurm/` and creates the log directory.
pub fn write_scripts(o: &SlurmOptions) -> Result<SlurmScripts> {
    let dir = scripts_dir(&o.run);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let out = SlurmScripts {
        array_script: dir.join("students.sbatch"),
        bundle_script: dir.join("bundle.sbatch"),
        logs,
        dir,
    };
    for (path, text) in [
        (&out.array_script, array_script(o)?),
        (&out.bundle_script, bundle_script(o)?),
    ] {
        crate::train::checkpoint::write_bytes_atomic(path, text.as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(out)
}

/// Runs `sbatch --parsable ARGS` and returns the job id it printed.
fn sbatch(sbatch: &Path, args: &[String]) -> Result<String> {
    let cmd = format!("{} --parsable {}", sbatch.display(), args.join(" "));
    let out = Command::new(sbatch)
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| Error::Scheduler {
            command: cmd.clone(),
            msg: format!("could not run it ({e}); is Slurm installed and on PATH?"),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Error::Scheduler {
            command: cmd,
            msg: format!("{} — {}", out.status, stderr.trim()),
        });
    }
    // `--parsable` prints `<id>` or `<id>;<cluster>`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Scheduler {
            command: cmd,
            msg: format!("expected a job id, got `{}`", stdout.trim()),
        });
    }
    Ok(id)
}

/// Submits the array, then the bundle job with `--dependency=afterok:<array id>`, through the
/// `sbatch` program given (usually `sbatch` on PATH).
pub fn submit(scripts: &SlurmScripts, sbatch_program: &Path) -> Result<Submitted> {
    let array_job = sbatch(
        sbatch_program,
        &[scripts.array_script.to_string_lossy().into_owned()],
    )?;
    let bundle_job = sbatch(
        sbatch_program,
        &[
            format!("--dependency=afterok:{array_job}"),
            "--kill-on-invalid-dep=yes".into(),
            scripts.bundle_script.to_string_lossy().into_owned(),
        ],
    )?;
    Ok(Submitted {
        array_job,
        bundle_job,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SlurmOptions {
        SlurmOptions {
            program: "/opt/msd/bin/msd".into(),
            run: "/shared/runs/my-run".into(),
            students: vec![0, 1, 2, 3],
            stages: vec![StageKind::Dm, StageKind::Adm],
            device: "cuda".into(),
            partition: Some("gpu".into()),
            gres: Some("gpu:1".into()),
            cpus_per_task: Some(8),
            time: Some("4:00:00".into()),
            warn_seconds: 120,
            job_name: "msd".into(),
            eval: None,
        }
    }

    fn directives(script: &str) -> Vec<&str> {
        script
            .lines()
            .filter_map(|l| l.strip_prefix("#SBATCH "))
            .collect()
    }

    #[test]
    fn the_array_script_runs_student_k_and_asks_for_requeue_and_a_warning_signal() {
        let s = array_script(&opts()).unwrap();
        let d = directives(&s);
        for want in [
            "--array=0-3",
            "--requeue",
            "--signal=B:USR1@120",
            "--open-mode=append",
            "--output=/shared/runs/my-run/launch/slurm/logs/student-%a.log",
            "--partition=gpu",
            "--gres=gpu:1",
            "--cpus-per-task=8",
            "--time=4:00:00",
        ] {
            assert!(d.contains(&want), "missing #SBATCH {want} in\n{s}");
        }
        // Directives must come before the first command, or sbatch ignores them.
        let first_cmd = s
            .lines()
            .position(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        let last_directive = s
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("#SBATCH"))
            .last()
            .unwrap()
            .0;
        assert!(last_directive < first_cmd);
        assert!(
            s.contains(
                "/opt/msd/bin/msd --threads 8 distill --run /shared/runs/my-run --student \"$k\" --stages dm,adm --device cuda &"
            ),
            "{s}"
        );
        assert!(s.contains("scontrol requeue \"$SLURM_JOB_ID\""));
    }

    #[test]
    fn the_bundle_script_bundles_the_last_stage_without_gpus() {
        let s = bundle_script(&opts()).unwrap();
        assert!(
            s.contains("bundle --run /shared/runs/my-run --stage adm"),
            "{s}"
        );
        assert!(!s.contains("--gres"), "bundling needs no GPU:\n{s}");
        assert!(directives(&s).contains(&"--partition=gpu"));
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        let mut o = opts();
        o.time = Some("4 h".into());
        assert!(array_script(&o).unwrap_err().to_string().contains("--time"));
        let mut o = opts();
        o.stages = vec![StageKind::Tsm];
        assert!(array_script(&o)
            .unwrap_err()
            .to_string()
            .contains("--stages"));
        let mut o = opts();
        o.run = "/runs/with space".into();
        assert!(array_script(&o).unwrap_err().to_string().contains("--run"));
        let mut o = opts();
        o.run = "relative/run".into();
        assert!(array_script(&o).is_err());
    }

    #[test]
    fn scripts_are_written_executable_and_submission_errors_name_the_command() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts();
        o.run = d.path().join("run");
        let s = write_scripts(&o).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.array_script)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(s.logs.is_dir());
        let e = submit(&s, Path::new("/nonexistent/sbatch"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/sbatch --parsable"), "{e}");
    }

    #[test]
    fn the_bundle_job_evaluates_the_bundle_when_asked() {
        let plain = bundle_script(&opts()).unwrap();
        assert!(!plain.contains(" eval "));
        let mut o = opts();
        o.eval = Some(BundleEval {
            n: 500,
            classifier: Some("/shared/clf dir".into()),
        });
        let s = bundle_script(&o).unwrap();
        let lines: Vec<&str> = s.lines().filter(|l| l.contains("--threads 1")).collect();
        // Bundle first, then the evaluation of what it assembled (set -eu: a failed bundle
        // stops the job before the evaluation).
        assert_eq!(lines.len(), 2, "{s}");
        assert!(lines[0].contains("bundle --run /shared/runs/my-run --stage adm"));
        assert!(lines[1].contains(
            "eval --bundle /shared/runs/my-run/bundle.json --n 500 --out /shared/runs/my-run/eval-students --classifier '/shared/clf dir'"
        ), "{}", lines[1]);
        o.eval = Some(BundleEval {
            n: 0,
            classifier: None,
        });
        let e = bundle_script(&o).unwrap_err().to_string();
        assert!(e.contains("--eval-n 0"), "{e}");
    }
}
