//! Kubernetes: an Indexed Job (`completionMode: Indexed`, K completions) whose pod with index k
//! runs `msd distill --run R --student k` (`JOB_COMPLETION_INDEX`), and a bundle Job, both
//! mounting the run directory from a PersistentVolumeClaim. Exit status 75 (checkpointed on
//! SIGTERM) and pod disruptions (preemption, node drain) do not count against the back-off
//! limit: the replacement pod resumes from the checkpoint. Plain Jobs cannot depend on each
//! other, so `submit.sh` applies the bundle Job once the students' Job is complete.
//!
//! Manifests are typed structs written as block YAML by [`to_yaml`] (strings double-quoted, so
//! no value is ever re-typed by a YAML reader).

use super::shell_quote;
use crate::distill::StageKind;
use crate::launch::slurm::EXIT_INTERRUPTED;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to launch.
#[derive(Clone, Debug)]
pub struct K8sOptions {
    /// Base of the Jobs' names (a DNS label; see [`job_name_from`]).
    pub name: String,
    /// Container image holding `msd` (see the repository's Dockerfile).
    pub image: String,
    /// PersistentVolumeClaim that holds the run directory.
    pub claim: String,
    /// The run directory's path inside the claim (empty: the claim's root).
    pub sub_path: String,
    /// Where the run directory is mounted in the containers.
    pub mount_path: String,
    /// Number of students K (completions).
    pub students: usize,
    /// Pods running at once (default K).
    pub parallelism: Option<usize>,
    pub stages: Vec<StageKind>,
    /// `--device` of `msd distill`.
    pub device: String,
    /// GPUs per student pod (`nvidia.com/gpu` limit; 0 = none).
    pub gpus: u32,
    /// CPUs per student pod (request and limit; also `msd --threads`).
    pub cpus: Option<u32>,
    /// Memory per student pod (request and limit, e.g. `8Gi`).
    pub memory: Option<String>,
    /// Seconds between SIGTERM and SIGKILL (time to write the checkpoint).
    pub grace_seconds: u32,
    /// Retries per student for failures other than preemption.
    pub backoff_limit: u32,
    /// Evaluate the bundle in the bundle Job, after assembling it.
    pub eval: Option<super::BundleEval>,
}

/// `metadata`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A `batch/v1` Job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: JobSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_mode: Option<String>,
    pub completions: usize,
    pub parallelism: usize,
    pub backoff_limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_failure_policy: Option<PodFailurePolicy>,
    pub template: PodTemplate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodFailurePolicy {
    pub rules: Vec<PodFailurePolicyRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodFailurePolicyRule {
    /// `Ignore` (not counted, pod replaced), `Count`, `FailJob`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit_codes: Option<OnExitCodes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_pod_conditions: Vec<OnPodCondition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnExitCodes {
    pub container_name: String,
    pub operator: String,
    pub values: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnPodCondition {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodTemplate {
    pub metadata: Metadata,
    pub spec: PodSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub restart_policy: String,
    pub termination_grace_period_seconds: u32,
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub persistent_volume_claim: ClaimSource,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSource {
    pub claim_name: String,
}

const VOLUME: &str = "run";

/// A DNS label (lowercase letters, digits, `-`; at most 40 characters, leaving room for the
/// suffixes) from a run directory's name.
pub fn job_name_from(run: &Path) -> String {
    let base = run
        .file_name()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut s: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(40);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("msd-{s}").trim_end_matches('-').to_string()
    } else {
        s
    }
}

fn check(o: &K8sOptions) -> Result<()> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 40
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !label(&o.name) {
        return Err(Error::Invalid(format!(
            "--name `{}`: a Job name is a DNS label (a-z, 0-9, `-`, starting with a letter, ≤ 40 characters)",
            o.name
        )));
    }
    if o.image.is_empty() || o.image.chars().any(char::is_whitespace) {
        return Err(Error::Invalid(format!(
            "--image `{}`: not an image reference",
            o.image
        )));
    }
    if !label(&o.claim.replace('.', "-")) && !o.claim.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Invalid(format!(
            "--volume `{}`: a PersistentVolumeClaim name (a-z, 0-9, `-`, `.`)",
            o.claim
        )));
    }
    if o.students == 0 {
        return Err(Error::Invalid("the run has no students".into()));
    }
    if let Some(e) = &o.eval {
        e.check()?;
    }
    if !o.mount_path.starts_with('/') {
        return Err(Error::Invalid(format!(
            "--mount-path `{}`: must be absolute",
            o.mount_path
        )));
    }
    super::bundle_stage(&o.stages).map(|_| ())
}

fn pod(o: &K8sOptions, container: Container) -> PodTemplate {
    PodTemplate {
        metadata: Metadata {
            name: String::new(),
            labels: [("app.kubernetes.io/name".to_string(), "msd".to_string())].into(),
        },
        spec: PodSpec {
            restart_policy: "Never".into(),
            termination_grace_period_seconds: o.grace_seconds,
            containers: vec![container],
            volumes: vec![Volume {
                name: VOLUME.into(),
                persistent_volume_claim: ClaimSource {
                    claim_name: o.claim.clone(),
                },
            }],
        },
    }
}

fn mounts(o: &K8sOptions) -> Vec<VolumeMount> {
    vec![VolumeMount {
        name: VOLUME.into(),
        mount_path: o.mount_path.clone(),
        sub_path: o.sub_path.clone(),
    }]
}

fn labels(o: &K8sOptions, role: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name".to_string(), "msd".to_string()),
        ("msd/run".to_string(), o.name.clone()),
        ("msd/role".to_string(), role.to_string()),
    ]
    .into()
}

/// The students' Indexed Job.
pub fn students_job(o: &K8sOptions) -> Result<Job> {
    check(o)?;
    let stages: Vec<&str> = o.stages.iter().map(|s| s.name()).collect();
    let mut command = vec!["msd".to_string()];
    if let Some(n) = o.cpus {
        command.extend(["--threads".into(), n.to_string()]);
    }
    command.extend([
        "distill".into(),
        "--run".into(),
        o.mount_path.clone(),
        // Kubernetes expands $(VAR) from the container's environment; the Job controller sets
        // JOB_COMPLETION_INDEX in every pod of an Indexed Job.
        "--student".into(),
        "$(JOB_COMPLETION_INDEX)".into(),
        "--stages".into(),
        stages.join(","),
        "--device".into(),
        o.device.clone(),
    ]);
    let mut res = BTreeMap::new();
    if let Some(n) = o.cpus {
        res.insert("cpu".to_string(), n.to_string());
    }
    if let Some(m) = &o.memory {
        res.insert("memory".to_string(), m.clone());
    }
    let mut limits = res.clone();
    if o.gpus > 0 {
        limits.insert("nvidia.com/gpu".into(), o.gpus.to_string());
    }
    let resources = (!limits.is_empty()).then_some(Resources {
        requests: res,
        limits,
    });
    let container = Container {
        name: "student".into(),
        image: o.image.clone(),
        command,
        resources,
        volume_mounts: mounts(o),
    };
    Ok(Job {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        metadata: Metadata {
            name: format!("{}-students", o.name),
            labels: labels(o, "students"),
        },
        spec: JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: o.students,
            parallelism: o.parallelism.unwrap_or(o.students).clamp(1, o.students),
            backoff_limit: o.backoff_limit,
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    // Checkpointed on SIGTERM: not a failure; the replacement pod resumes.
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_exit_codes: Some(OnExitCodes {
                            container_name: "student".into(),
                            operator: "In".into(),
                            values: vec![EXIT_INTERRUPTED],
                        }),
                        on_pod_conditions: vec![],
                    },
                    // Preemption, eviction, node drain.
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_exit_codes: None,
                        on_pod_conditions: vec![OnPodCondition {
                            kind: "DisruptionTarget".into(),
                        }],
                    },
                ],
            }),
            template: pod(o, container),
        },
    })
}

/// The bundle Job (apply it once the students' Job is complete).
pub fn bundle_job(o: &K8sOptions) -> Result<Job> {
    check(o)?;
    let stage = super::bundle_stage(&o.stages)?;
    let bundle = [
        "msd".to_string(),
        "--threads".into(),
        "1".into(),
        "bundle".into(),
        "--run".into(),
        o.mount_path.clone(),
        "--stage".into(),
        stage.name().into(),
    ];
    let command = match &o.eval {
        None => bundle.to_vec(),
        // Two commands in one container: through a shell, every word quoted.
        Some(e) => {
            let eval: Vec<String> = ["msd".to_string(), "--threads".into(), "1".into()]
                .into_iter()
                .chain(e.args(std::path::Path::new(&o.mount_path)))
                .collect();
            let line = |w: &[String]| {
                w.iter()
                    .map(|a| super::shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("set -eu; {}; {}", line(&bundle), line(&eval)),
            ]
        }
    };
    let container = Container {
        name: "bundle".into(),
        image: o.image.clone(),
        command,
        resources: None,
        volume_mounts: mounts(o),
    };
    Ok(Job {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        metadata: Metadata {
            name: format!("{}-bundle", o.name),
            labels: labels(o, "bundle"),
        },
        spec: JobSpec {
            completion_mode: None,
            completions: 1,
            parallelism: 1,
            backoff_limit: o.backoff_limit,
            pod_failure_policy: None,
            template: pod(o, container),
        },
    })
}

/// The files `write_manifests` made.
#[derive(Clone, Debug)]
pub struct K8sManifests {
    pub dir: PathBuf,
    pub students: PathBuf,
    pub bundle: PathBuf,
    pub submit: PathBuf,
}

/// Writes `students.yaml`, `bundle.yaml` and `submit.sh` (apply, wait, apply) into
/// `R/launch/k8s/`.
pub fn write_manifests(run: &Path, o: &K8sOptions) -> Result<K8sManifests> {
    let dir = run.join("launch").join("k8s");
    let out = K8sManifests {
        students: dir.join("students.yaml"),
        bundle: dir.join("bundle.yaml"),
        submit: dir.join("submit.sh"),
        dir,
    };
    let students = students_job(o)?;
    let bundle = bundle_job(o)?;
    let w = crate::train::checkpoint::write_bytes_atomic;
    w(&out.students, to_yaml(&students)?.as_bytes())?;
    w(&out.bundle, to_yaml(&bundle)?.as_bytes())?;
    let submit = format!(
        "#!/bin/sh\n# Written by `msd launch k8s`: the students' Indexed Job, then the bundle Job.\nset -eu\ncd \"$(dirname \"$0\")\"\nkubectl apply -f students.yaml\nkubectl wait --for=condition=complete --timeout=${{MSD_WAIT:-168h}} job/{}\nkubectl apply -f bundle.yaml\nkubectl wait --for=condition=complete --timeout=1h job/{}\n",
        shell_quote(&students.metadata.name),
        shell_quote(&bundle.metadata.name),
    );
    w(&out.submit, submit.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out.submit, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(&out.submit, e))?;
    Ok(out)
}

/// Block-style YAML of any serialisable value: maps as `key: value`, sequences as `- item`,
/// every string double-quoted (JSON escapes are valid YAML), empty containers as `{}` / `[]`.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String> {
    let v = serde_json::to_value(value).map_err(|e| Error::Invalid(format!("YAML: {e}")))?;
    let mut out = String::new();
    match &v {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // Null, booleans and numbers print the same in JSON and YAML; strings are quoted.
        other => other.to_string(),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn key(k: &str) -> String {
    const RESERVED: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "",
    ];
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !RESERVED.contains(&k.to_ascii_lowercase().as_str());
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn emit_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        out.push_str(&format!("{pad}{}:", key(k)));
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_map(inner, indent + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                emit_seq(items, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn emit_seq(items: &[Value], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for v in items {
        if !is_block(v) {
            out.push_str(&format!("{pad}- {}\n", scalar(v)));
            continue;
        }
        // The item's block at indent + 2, its first line's indentation replaced by "- ".
        let mut inner = String::new();
        match v {
            Value::Object(m) => emit_map(m, indent + 2, &mut inner),
            Value::Array(a) => emit_seq(a, indent + 2, &mut inner),
            _ => unreachable!("scalars are handled above"),
        }
        out.push_str(&pad);
        out.push_str("- ");
        out.push_str(&inner[indent + 2..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> K8sOptions {
        K8sOptions {
            name: "mnist-k4".into(),
            image: "registry.example/msd:0.1".into(),
            claim: "msd-runs".into(),
            sub_path: "runs/mnist-k4".into(),
            mount_path: "/msd/run".into(),
            students: 4,
            parallelism: None,
            stages: vec![StageKind::Dm],
            device: "cuda".into(),
            gpus: 1,
            cpus: Some(8),
            memory: Some("16Gi".into()),
            grace_seconds: 120,
            backoff_limit: 3,
            eval: None,
        }
    }

    /// YAML → JSON through a real YAML 1.2 parser.
    fn parse(yaml: &str) -> Value {
        use yaml_rust2::{Yaml, YamlLoader};
        fn conv(y: &Yaml) -> Value {
            match y {
                Yaml::Hash(h) => Value::Object(
                    h.iter()
                        .map(|(k, v)| (k.as_str().expect("string keys").to_string(), conv(v)))
                        .collect(),
                ),
                Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
                Yaml::String(s) => Value::String(s.clone()),
                Yaml::Integer(i) => Value::from(*i),
                Yaml::Real(r) => Value::from(r.parse::<f64>().unwrap()),
                Yaml::Boolean(b) => Value::Bool(*b),
                Yaml::Null => Value::Null,
                other => panic!("unexpected YAML node {other:?}"),
            }
        }
        let docs = YamlLoader::load_from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(docs.len(), 1);
        conv(&docs[0])
    }

    #[test]
    fn yaml_parses_back_to_the_same_value() {
        let tricky = serde_json::json!({
            "plain": "text", "quote\"d": "it's \"x\"\n\ttab ü", "yes": "no", "on": true,
            "n": null, "num": -3, "f": 0.25, "empty_map": {}, "empty_seq": [],
            "seq": ["a", 1, {"k": "v", "k2": [1, [2, 3], {}]}, [], [["deep"]]],
            "nested": {"a": {"b": {"c": "$(JOB_COMPLETION_INDEX)"}}}, "colon: key": "# not a comment",
        });
        assert_eq!(parse(&to_yaml(&tricky).unwrap()), tricky);
        for job in [students_job(&opts()).unwrap(), bundle_job(&opts()).unwrap()] {
            let yaml = to_yaml(&job).unwrap();
            assert_eq!(parse(&yaml), serde_json::to_value(&job).unwrap(), "{yaml}");
            let back: Job = serde_json::from_value(parse(&yaml)).unwrap();
            assert_eq!(back, job);
        }
    }

    #[test]
    fn the_students_job_is_indexed_with_one_completion_per_student() {
        let j = students_job(&opts()).unwrap();
        let v = parse(&to_yaml(&j).unwrap());
        assert_eq!(v["apiVersion"], "batch/v1");
        assert_eq!(v["kind"], "Job");
        assert_eq!(v["metadata"]["name"], "mnist-k4-students");
        let spec = &v["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(spec["completions"], 4);
        assert_eq!(spec["parallelism"], 4);
        let pod = &spec["template"]["spec"];
        assert_eq!(
            pod["restartPolicy"], "Never",
            "podFailurePolicy requires Never"
        );
        assert_eq!(pod["terminationGracePeriodSeconds"], 120);
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "registry.example/msd:0.1");
        let cmd: Vec<&str> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(
            cmd,
            [
                "msd",
                "--threads",
                "8",
                "distill",
                "--run",
                "/msd/run",
                "--student",
                "$(JOB_COMPLETION_INDEX)",
                "--stages",
                "dm",
                "--device",
                "cuda"
            ]
        );
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(c["resources"]["requests"]["memory"], "16Gi");
        assert!(c["resources"]["requests"].get("nvidia.com/gpu").is_none());
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/msd/run");
        assert_eq!(c["volumeMounts"][0]["subPath"], "runs/mnist-k4");
        assert_eq!(c["volumeMounts"][0]["name"], pod["volumes"][0]["name"]);
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "msd-runs"
        );
        let rules = spec["podFailurePolicy"]["rules"].as_array().unwrap();
        assert!(rules.iter().any(|r| r["action"] == "Ignore"
            && r["onExitCodes"]["values"] == serde_json::json!([75])
            && r["onExitCodes"]["containerName"] == c["name"]));
        assert!(rules
            .iter()
            .any(|r| r["onPodConditions"][0]["type"] == "DisruptionTarget"));
    }

    #[test]
    fn the_bundle_job_runs_once_on_the_same_volume() {
        let v = parse(&to_yaml(&bundle_job(&opts()).unwrap()).unwrap());
        assert!(v["spec"].get("completionMode").is_none());
        assert_eq!(v["spec"]["completions"], 1);
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"][3], "bundle");
        assert_eq!(c["command"][7], "dm");
        assert!(c.get("resources").is_none(), "no GPU for bundling");
        assert_eq!(
            v["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "msd-runs"
        );
    }

    #[test]
    fn names_are_dns_labels_and_bad_options_are_refused() {
        assert_eq!(job_name_from(Path::new("/runs/MNIST_k4")), "mnist-k4");
        assert_eq!(job_name_from(Path::new("/runs/4x")), "msd-4x");
        assert_eq!(job_name_from(Path::new("/")), "msd");
        let mut o = opts();
        o.name = "Bad_Name".into();
        assert!(students_job(&o).unwrap_err().to_string().contains("--name"));
        let mut o = opts();
        o.image = "a b".into();
        assert!(students_job(&o)
            .unwrap_err()
            .to_string()
            .contains("--image"));
        let mut o = opts();
        o.claim = "Bad Claim".into();
        assert!(students_job(&o)
            .unwrap_err()
            .to_string()
            .contains("--volume"));
    }

    #[test]
    fn manifests_and_the_submit_script_are_written() {
        let d = tempfile::tempdir().unwrap();
        let m = write_manifests(d.path(), &opts()).unwrap();
        let s = std::fs::read_to_string(&m.submit).unwrap();
        assert!(s.contains("kubectl wait --for=condition=complete"), "{s}");
        assert!(s.find("students.yaml").unwrap() < s.find("bundle.yaml").unwrap());
        let v = parse(&std::fs::read_to_string(&m.students).unwrap());
        assert_eq!(v["spec"]["completionMode"], "Indexed");
    }

    #[test]
    fn the_bundle_job_can_evaluate_after_bundling() {
        let mut o = opts();
        o.eval = Some(super::super::BundleEval {
            n: 1000,
            classifier: None,
        });
        let v = parse(&to_yaml(&bundle_job(&o).unwrap()).unwrap());
        let cmd = &v["spec"]["template"]["spec"]["containers"][0]["command"];
        assert_eq!(cmd[0], "/bin/sh");
        assert_eq!(cmd[1], "-c");
        let line = cmd[2].as_str().unwrap();
        assert!(
            line.starts_with("set -eu; msd --threads 1 bundle --run /msd/run --stage dm; "),
            "{line}"
        );
        assert!(line.ends_with("msd --threads 1 eval --bundle /msd/run/bundle.json --n 1000 --out /msd/run/eval-students"), "{line}");
        // Without an evaluation the container runs msd directly.
        let v = parse(&to_yaml(&bundle_job(&opts()).unwrap()).unwrap());
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["command"][0],
            "msd"
        );
    }
}
