//! The text pipeline end to end on a tiny configuration: 100 captioned MNIST training images, a
//! 1-level UNet taking 384-d caption embeddings, 2 teacher steps, a 2-student quadrant partition
//! of the caption embeddings, 2 DM iterations per student, a bundle, and prompts the students
//! never saw (held-out templates, free wording, non-ASCII) routed and generated in one step.
//!
//! Needs the all-MiniLM-L6-v2 folder (`scripts/setup-text-encoder.sh`, run here if missing).

use msd::bundle::Bundle;
use msd::data::captions::{render, Levels, HELDOUT_TEMPLATES};
use msd::nets::text_encoder::{default_model_dir, TextEncoder};
use msd::pipeline::{DistillOptions, Quiet, StageKind};
use msd::text::pipeline::TextRun;
use msd::text::prompt::embed_prompt;
use std::path::{Path, PathBuf};
use tch::Device;

fn encoder() -> TextEncoder {
    let dir: PathBuf = default_model_dir().expect("neither MSD_TORCH_HOME nor HOME is set");
    if !dir.join(".msd-complete").exists() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-text-encoder.sh");
        let ok = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the text encoder is missing and {} failed",
            script.display()
        );
    }
    TextEncoder::load(&dir, Device::Cpu).expect("the text encoder loads")
}

fn config(data: &Path, strategy: &str) -> String {
    let images = data.join("images-idx3-ubyte.gz");
    let labels = data.join("labels-idx1-ubyte.gz");
    format!(
        r#"
seed = 3
[data]
kind = "idx"
images = "{}"
labels = "{}"
heldout = 9900
split_seed = 1000
[model.net]
kind = "unet"
resolution = 28
num_classes = 10
base_channels = 4
channel_mult = [1]
blocks_per_level = 1
emb_mult = 2
noise_freqs = 4
cond = {{ kind = "embedding", dim = 384 }}
[teacher]
steps = 2
batch_size = 4
label_dropout = 0.2
checkpoint_every = 1
[distill]
students = 2
partition = "{strategy}"
iterations = 2
batch_size = 2
ttur = 1
regression_weight = 0.0
checkpoint_every = 1
"#,
        images.display(),
        labels.display()
    )
}

#[test]
fn a_text_run_routes_and_generates_prompts_it_never_saw() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist10k");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config(&data, "quadrants")).unwrap();
    let run = TextRun::new(dir.path(), encoder());
    let (teacher, summary, init) = run.train_teacher(None, &mut |_| {}).unwrap();
    assert_eq!((summary.steps, init.is_none()), (2, true));
    assert_eq!(teacher.spec.net.cond().embedding_dim(), Some(384));
    assert!(
        run.embeddings_path().exists(),
        "caption embeddings are cached"
    );
    let opts = DistillOptions {
        students: vec![],
        stages: vec![StageKind::Dm],
        device: Device::Cpu,
    };
    let manifest = run.distill(&opts, &mut Quiet).unwrap().expect("a bundle");
    assert_eq!(manifest.partition.students, 2);

    // The partition splits the 100 training captions' embeddings 50/50.
    let cfg = run.config().unwrap();
    let (_, set) = run.captioned(&cfg).unwrap();
    assert!(set.cache_hit, "the second use reads the cache");
    let groups = manifest.partition.prompts.as_ref().unwrap();
    let mut sizes = [0usize; 2];
    for p in set.points().unwrap() {
        sizes[groups.assign(&p)] += 1;
    }
    assert_eq!(sizes, [50, 50]);

    let bundle = Bundle::load(&run.run.bundle_path(), Device::Cpu).unwrap();
    assert!(bundle.is_prompt_conditional());
    let mut prompts: Vec<String> = HELDOUT_TEMPLATES
        .iter()
        .map(|&t| render(t, 8, Levels::all()[4]).unwrap())
        .collect();
    prompts.push("a thin eight".into());
    prompts.push("une grosse huit penchée ✓ — 八".into());
    let enc = &run.encoder;
    let z = bundle.noise(3, 0, Device::Cpu);
    for p in &prompts {
        let e = embed_prompt(enc, p, "prompt").unwrap();
        let (x, k) = bundle.generate_prompt(&e, &z).unwrap();
        assert!(k < 2);
        assert_eq!(x.size(), vec![3, 1, 28, 28]);
        assert!(x.isfinite().all().int64_value(&[]) == 1, "{p}");
        // Routing is a function of the prompt.
        let again = embed_prompt(enc, p, "prompt").unwrap();
        assert_eq!(bundle.route_prompt(&again).unwrap(), k);
    }
    // Class labels are refused by a prompt bundle, as are embeddings of the wrong width.
    assert!(bundle.generate(&[0], &z.narrow(0, 0, 1)).is_err());
    assert!(bundle.generate_prompt(&[0.0; 3], &z).is_err());
}

#[test]
fn a_kmeans_text_partition_refuses_stages_that_take_labels() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist10k");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config(&data, "kmeans")).unwrap();
    let run = TextRun::new(dir.path(), encoder());
    let opts = DistillOptions {
        students: vec![],
        stages: vec![StageKind::Tsm, StageKind::Dm],
        device: Device::Cpu,
    };
    let e = run.distill(&opts, &mut Quiet).err().unwrap().to_string();
    assert!(e.contains("--stages"), "{e}");
    let cfg = run.config().unwrap();
    let (_, set) = run.captioned(&cfg).unwrap();
    let p = run.partition(&cfg, &set).unwrap();
    assert_eq!(p.strategy, msd::partition::Strategy::Kmeans);
    assert_eq!(p, run.partition(&cfg, &set).unwrap(), "saved and reused");
}
