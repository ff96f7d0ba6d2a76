//! The Rust all-MiniLM-L6-v2 against golden vectors from the Python reference
//! (`scripts/golden_text_embeddings.py`: sentence-transformers on the same folder).
//!
//! The encoder's files come from `scripts/setup-text-encoder.sh` (run here if they are missing;
//! it downloads once per machine). If they cannot be had the tests fail and say why.
//!
//! Tolerance: cosine ≥ 0.9999 with each golden vector. Both sides compute the same float32
//! graph; what differs is summation order (BLAS blocking, threads) and the golden file's
//! rounding to 5 decimals (≤ 5e-6 per component, cosine shift < 1e-8), which together move the
//! cosine by well under 1e-6. Real defects move it by far more: `pooling_over_padding_is_caught`
//! shows that averaging over padding tokens already drops short sentences below the bar.

use msd::nets::text_encoder::{default_model_dir, TextEncoder, TextEncoderConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const MIN_COSINE: f64 = 0.9999;

#[derive(Deserialize)]
struct Golden {
    max_seq_length: usize,
    long_sentence_untruncated_tokens: usize,
    dim: usize,
    items: Vec<GoldenItem>,
}

#[derive(Deserialize)]
struct GoldenItem {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn golden() -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_golden.json");
    let s = std::fs::read_to_string(&path).expect("golden file");
    serde_json::from_str(&s).expect("golden file parses")
}

/// The model folder, fetched by the setup script if it is not there yet (once per process).
fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = default_model_dir().expect("neither MSD_TORCH_HOME nor HOME is set");
        if dir.join(".msd-complete").exists() {
            return dir;
        }
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-text-encoder.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success() && dir.join(".msd-complete").exists(),
            "the text encoder is not in {} and {} could not fetch it (it needs PyPI); \
             stderr:\n{}",
            dir.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Each test loads its own (a `Tensor` is not `Sync`, so the encoder cannot be a shared static).
fn encoder() -> TextEncoder {
    TextEncoder::load(model_dir(), Device::Cpu).expect("the text encoder loads")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let (n, d) = t.size2().unwrap();
    let v: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap();
    (0..n as usize)
        .map(|i| v[i * d as usize..(i + 1) * d as usize].to_vec())
        .collect()
}

#[test]
fn token_ids_match_the_reference() {
    let g = golden();
    let enc = encoder();
    assert_eq!(g.max_seq_length, enc.config().max_seq_len);
    assert!(g.long_sentence_untruncated_tokens > g.max_seq_length);
    for item in &g.items {
        let ids = enc.token_ids(&item.text).unwrap();
        assert_eq!(ids, item.input_ids, "token ids of {:?}", item.text);
    }
}

#[test]
fn embeddings_match_the_reference() {
    let g = golden();
    let enc = encoder();
    assert_eq!(g.dim as i64, enc.dim());
    let texts: Vec<&str> = g.items.iter().map(|i| i.text.as_str()).collect();
    // One padded batch (lengths 2..256) and one sentence at a time: both must match.
    let batch = rows(&enc.encode(&texts, 64).unwrap());
    let mut worst = f64::INFINITY;
    for (item, got) in g.items.iter().zip(&batch) {
        let single = rows(&enc.encode(&[item.text.as_str()], 1).unwrap()).remove(0);
        for (label, v) in [("batched", got), ("alone", &single)] {
            let c = cosine(v, &item.embedding);
            worst = worst.min(c);
            assert!(
                c >= MIN_COSINE,
                "{label} {:?}: cosine {c} < {MIN_COSINE}",
                item.text
            );
            let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }
    eprintln!("worst cosine to the golden vectors: {worst:.9}");
}

#[test]
fn pooling_over_padding_is_caught() {
    // Averaging over the padded positions too (a plausible bug) must fail the tolerance: the
    // test's bar is tight enough to see it.
    let g = golden();
    let enc = encoder();
    let texts: Vec<&str> = g.items.iter().map(|i| i.text.as_str()).collect();
    let tb = enc.tokenize(&texts).unwrap();
    let states = enc.forward(&tb.input_ids, &tb.token_type_ids, &tb.attention_mask);
    let wrong = rows(&TextEncoder::pool(&states, &tb.attention_mask.ones_like()));
    let short = g
        .items
        .iter()
        .zip(&wrong)
        .filter(|(i, _)| i.input_ids.len() < 16);
    let mut n = 0;
    for (item, v) in short {
        let c = cosine(v, &item.embedding);
        assert!(
            c < MIN_COSINE,
            "{:?}: cosine {c} despite the bug",
            item.text
        );
        n += 1;
    }
    assert!(n >= 5);
}

#[test]
fn prompts_of_any_length_and_script_encode() {
    let enc = encoder();
    let long = "eight ".repeat(2000); // 12 kB
    let texts = [long.as_str(), "", "七 🙂 ünïcödé", "  "];
    let e = enc.encode(&texts, 2).unwrap();
    assert_eq!(e.size(), vec![4, 384]);
    assert_eq!(enc.token_ids(&long).unwrap().len(), 256);
    let v = rows(&e);
    for r in &v {
        assert!(r.iter().all(|x| x.is_finite()));
    }
    // Whitespace only tokenises like the empty prompt: [CLS] [SEP].
    assert!(cosine(&v[1], &v[3]) > 0.99999);
    assert_eq!(enc.encode::<&str>(&[], 8).unwrap().size(), vec![0, 384]);
}

#[test]
fn bad_weight_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tok = model_dir().join("tokenizer.json");
    let cfg = TextEncoderConfig::MINILM_L6_V2;
    // Missing file.
    let missing = dir.path().join("none.safetensors");
    let err = TextEncoder::from_files(&missing, &tok, cfg, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("none.safetensors"), "{err}");
    // Wrong shape: the error names the tensor and both shapes.
    let f = dir.path().join("bad.safetensors");
    let t = Tensor::zeros([10, 384], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("embeddings.word_embeddings.weight", &t)], &f).unwrap();
    let err = TextEncoder::from_files(&f, &tok, cfg, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("embeddings.word_embeddings.weight")
            && err.contains("[10, 384]")
            && err.contains("[30522, 384]"),
        "{err}"
    );
    // A missing tensor is named.
    let t = Tensor::zeros([30522, 384], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("embeddings.word_embeddings.weight", &t)], &f).unwrap();
    let err = TextEncoder::from_files(&f, &tok, cfg, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor `embeddings.position_embeddings.weight`"),
        "{err}"
    );
    // Not a tokenizer.
    let err = TextEncoder::from_files(&f, &f, cfg, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer"), "{err}");
    // Not a folder.
    let err = TextEncoder::load(&dir.path().join("nowhere"), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("setup-text-encoder.sh"), "{err}");
}

#[test]
fn embedding_cache_is_reused_only_for_the_same_texts() {
    let enc = encoder();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emb.safetensors");
    let a = ["a thin eight", "a bold two leaning left"];
    let (e1, hit1) = enc.encode_cached(&a, &path, 8).unwrap();
    let (e2, hit2) = enc.encode_cached(&a, &path, 8).unwrap();
    assert!(!hit1 && hit2);
    assert!(e1.equal(&e2));
    // Other texts (even one word) miss and replace the file.
    let b = ["a thin eight", "a bold two leaning right"];
    let (e3, hit3) = enc.encode_cached(&b, &path, 8).unwrap();
    assert!(!hit3);
    assert!(!e3.equal(&e1));
    assert!(enc.encode_cached(&b, &path, 8).unwrap().1);
    // A corrupt cache file is an error that names it, not a silent recompute.
    std::fs::write(&path, b"not safetensors").unwrap();
    let err = enc.encode_cached(&b, &path, 8).unwrap_err().to_string();
    assert!(err.contains("emb.safetensors"), "{err}");
}
