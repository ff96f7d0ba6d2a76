//! The prompt encoder: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 384-d) run in tch.
//!
//! Text → WordPiece ids (the `tokenizers` crate reading the model's own `tokenizer.json`,
//! lower-cased, `[CLS] … [SEP]`, truncated to 256 tokens like sentence-transformers) → BERT
//! (word + absolute position + token-type embeddings, LayerNorm; 6 post-LN encoder layers of
//! 12-head self-attention and a GELU MLP) → mean of the token states over the attention mask →
//! L2 normalisation. The weights are read by name from the sentence-transformers
//! `model.safetensors` with every shape checked; the files come from
//! `scripts/setup-text-encoder.sh`, which caches them beside libtorch ([`default_model_dir`]).
//! Inference only: no dropout, no gradients.

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

/// The encoder's hyper-parameters (BERT's `config.json`, plus sentence-transformers' sequence cap).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextEncoderConfig {
    /// WordPiece vocabulary size.
    pub vocab_size: i64,
    /// Width of the token states (and of the sentence embedding).
    pub hidden: i64,
    /// Number of encoder layers.
    pub layers: usize,
    /// Attention heads per layer (`hidden` must be a multiple).
    pub heads: i64,
    /// Width of each layer's MLP.
    pub intermediate: i64,
    /// Rows of the absolute position table.
    pub max_positions: i64,
    /// Rows of the token-type table.
    pub type_vocab: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Longest token sequence fed to the model, special tokens included (longer text is cut).
    pub max_seq_len: usize,
}

impl TextEncoderConfig {
    /// all-MiniLM-L6-v2 (sentence-transformers' `max_seq_length` 256).
    pub const MINILM_L6_V2: TextEncoderConfig = TextEncoderConfig {
        vocab_size: 30522,
        hidden: 384,
        layers: 6,
        heads: 12,
        intermediate: 1536,
        max_positions: 512,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        max_seq_len: 256,
    };
}

/// Name of the model folder inside the per-machine cache.
pub const MODEL_DIR_NAME: &str = "all-minilm-l6-v2";

/// Where `scripts/setup-text-encoder.sh` puts the model: `$MSD_TORCH_HOME/all-minilm-l6-v2`,
/// else `~/.cache/msd/all-minilm-l6-v2` (`None` if neither variable says where home is).
pub fn default_model_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("MSD_TORCH_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache/msd"),
    };
    Some(cache.join(MODEL_DIR_NAME))
}

/// A tokenised, right-padded batch. All three are `[B, L]` int64 on the encoder's device, with
/// `L` the longest sequence in the batch; padding has id 0 and mask 0.
#[derive(Debug)]
pub struct TokenBatch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

struct Linear {
    /// `[out, in]`, as PyTorch stores it.
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    out_norm: LayerNorm,
}

/// all-MiniLM-L6-v2 with its tokenizer, ready to embed sentences.
pub struct TextEncoder {
    cfg: TextEncoderConfig,
    tokenizer: Tokenizer,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("cfg", &self.cfg)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Takes tensors out of a safetensors file by name, checking each shape.
struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    device: Device,
}

impl Weights {
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            msg: format!("missing tensor `{name}` (expected shape {shape:?}); is this all-MiniLM-L6-v2's model.safetensors?"),
        })?;
        if t.size() != shape {
            return Err(Error::Checkpoint {
                path: self.path.clone(),
                msg: format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.size()
                ),
            });
        }
        if !matches!(
            t.kind(),
            Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
        ) {
            return Err(Error::Checkpoint {
                path: self.path.clone(),
                msg: format!("tensor `{name}` has dtype {:?}, expected a float", t.kind()),
            });
        }
        Ok(t.to_kind(Kind::Float).to_device(self.device))
    }

    fn linear(&mut self, prefix: &str, out: i64, inp: i64) -> Result<Linear> {
        Ok(Linear {
            weight: self.take(&format!("{prefix}.weight"), &[out, inp])?,
            bias: self.take(&format!("{prefix}.bias"), &[out])?,
        })
    }

    fn norm(&mut self, prefix: &str, dim: i64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.take(&format!("{prefix}.weight"), &[dim])?,
            bias: self.take(&format!("{prefix}.bias"), &[dim])?,
        })
    }
}

impl TextEncoder {
    /// Loads `dir/model.safetensors` and `dir/tokenizer.json` (the folder made by
    /// `scripts/setup-text-encoder.sh`) onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "text encoder folder not found; run scripts/setup-text-encoder.sh to fetch it",
                ),
            ));
        }
        Self::from_files(
            &dir.join("model.safetensors"),
            &dir.join("tokenizer.json"),
            TextEncoderConfig::MINILM_L6_V2,
            device,
        )
    }

    /// Loads the weights and the tokenizer from explicit files.
    pub fn from_files(
        weights: &Path,
        tokenizer: &Path,
        cfg: TextEncoderConfig,
        device: Device,
    ) -> Result<Self> {
        if cfg.hidden % cfg.heads != 0 || cfg.max_seq_len < 2 {
            return Err(Error::Invalid(format!(
                "text encoder config: hidden {} must be a multiple of heads {}, max_seq_len {} ≥ 2",
                cfg.hidden, cfg.heads, cfg.max_seq_len
            )));
        }
        if cfg.max_seq_len as i64 > cfg.max_positions {
            return Err(Error::Invalid(format!(
                "text encoder config: max_seq_len {} exceeds the {} position embeddings",
                cfg.max_seq_len, cfg.max_positions
            )));
        }
        let tokenizer = load_tokenizer(tokenizer, cfg.max_seq_len)?;
        let tensors = crate::train::checkpoint::read_tensors(weights)?
            .into_iter()
            .collect::<HashMap<_, _>>();
        let mut w = Weights {
            path: weights.to_path_buf(),
            tensors,
            device,
        };
        let h = cfg.hidden;
        let word = w.take("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let position = w.take(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, h],
        )?;
        let token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab, h],
        )?;
        let emb_norm = w.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                query: w.linear(&format!("{p}.attention.self.query"), h, h)?,
                key: w.linear(&format!("{p}.attention.self.key"), h, h)?,
                value: w.linear(&format!("{p}.attention.self.value"), h, h)?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                mlp_in: w.linear(&format!("{p}.intermediate.dense"), cfg.intermediate, h)?,
                mlp_out: w.linear(&format!("{p}.output.dense"), h, cfg.intermediate)?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        // A deeper checkpoint than the config says would silently lose layers: refuse it.
        if let Some(extra) = w.tensors.keys().find(|k| k.starts_with("encoder.layer.")) {
            return Err(Error::Checkpoint {
                path: weights.to_path_buf(),
                msg: format!(
                    "unexpected tensor `{extra}`: the file has more encoder layers than the {} expected",
                    cfg.layers
                ),
            });
        }
        Ok(TextEncoder {
            cfg,
            tokenizer,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            device,
        })
    }

    /// The encoder's hyper-parameters.
    pub fn config(&self) -> &TextEncoderConfig {
        &self.cfg
    }

    /// Width of the sentence embedding (384).
    pub fn dim(&self) -> i64 {
        self.cfg.hidden
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// WordPiece ids of one text, `[CLS] … [SEP]`, cut to `max_seq_len` tokens.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Invalid(format!("cannot tokenise prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenises `texts` into one right-padded batch (see [`TokenBatch`] for the shapes).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        let mut ids = Vec::with_capacity(texts.len());
        let mut types = Vec::with_capacity(texts.len());
        for t in texts {
            let enc = self
                .tokenizer
                .encode(t.as_ref(), true)
                .map_err(|e| Error::Invalid(format!("cannot tokenise prompt: {e}")))?;
            ids.push(enc.get_ids().to_vec());
            types.push(enc.get_type_ids().to_vec());
        }
        let len = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let b = texts.len();
        let mut flat_ids = vec![0i64; b * len];
        let mut flat_types = vec![0i64; b * len];
        let mut flat_mask = vec![0i64; b * len];
        for (row, (ids, types)) in ids.iter().zip(&types).enumerate() {
            for (j, (&id, &ty)) in ids.iter().zip(types).enumerate() {
                flat_ids[row * len + j] = i64::from(id);
                flat_types[row * len + j] = i64::from(ty);
                flat_mask[row * len + j] = 1;
            }
        }
        let shape = [b as i64, len as i64];
        let mk = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(self.device);
        Ok(TokenBatch {
            input_ids: mk(&flat_ids),
            token_type_ids: mk(&flat_types),
            attention_mask: mk(&flat_mask),
        })
    }

    /// The token states of the last layer.
    /// `input_ids`, `token_type_ids`, `attention_mask`: `[B, L]` int64 (mask 1 = real token,
    /// `L ≤ max_positions`) → `[B, L, hidden]` float. Padded positions hold values that
    /// [`Self::pool`] ignores. Panics on other shapes (a caller's bug: [`Self::tokenize`] makes
    /// valid batches).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Tensor {
        let _guard = tch::no_grad_guard();
        let (b, l) = input_ids.size2().expect("input_ids must be [B, L]");
        let nh = self.cfg.heads;
        let hd = self.cfg.hidden / nh;
        let eps = self.cfg.layer_norm_eps;
        let positions = Tensor::arange(l, (Kind::Int64, self.device));
        let x = self
            .word
            .index_select(0, &input_ids.view([-1]))
            .view([b, l, -1])
            + self.position.index_select(0, &positions).unsqueeze(0)
            + self
                .token_type
                .index_select(0, &token_type_ids.view([-1]))
                .view([b, l, -1]);
        let mut x = layer_norm(&x, &self.emb_norm, eps);
        // Additive key mask [B, 1, 1, L]: 0 for real tokens, the most negative f32 for padding
        // (as transformers does), so padded keys get zero attention weight.
        let key_bias = (attention_mask.ones_like() - attention_mask)
            .to_kind(Kind::Float)
            .view([b, 1, 1, l])
            * f64::from(f32::MIN);
        let scale = 1.0 / (hd as f64).sqrt();
        let split = |t: Tensor| t.view([b, l, nh, hd]).transpose(1, 2); // [B, nh, L, hd]
        for layer in &self.layers {
            let q = split(layer.query.forward(&x));
            let k = split(layer.key.forward(&x));
            let v = split(layer.value.forward(&x));
            let scores = q.matmul(&k.transpose(-2, -1)) * scale + &key_bias; // [B, nh, L, L]
            let ctx = scores
                .softmax(-1, Kind::Float)
                .matmul(&v)
                .transpose(1, 2)
                .contiguous()
                .view([b, l, -1]);
            x = layer_norm(&(layer.attn_out.forward(&ctx) + &x), &layer.attn_norm, eps);
            let hmid = layer.mlp_in.forward(&x).gelu("none");
            x = layer_norm(&(layer.mlp_out.forward(&hmid) + &x), &layer.out_norm, eps);
        }
        x
    }

    /// Sentence embeddings from token states: mean over the real tokens, then L2-normalised.
    /// `states`: `[B, L, H]`, `attention_mask`: `[B, L]` → `[B, H]` with unit rows.
    pub fn pool(states: &Tensor, attention_mask: &Tensor) -> Tensor {
        let m = attention_mask.to_kind(Kind::Float).unsqueeze(-1); // [B, L, 1]
        let sum = (states * &m).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let count = m
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            .clamp_min(1e-9);
        let mean = sum / count;
        let norm = mean
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        mean / norm
    }

    /// Embeds `texts`, `batch_size` at a time (each chunk padded to its own longest text).
    /// Returns `[texts.len(), hidden]` float on the encoder's device, rows of unit length.
    /// An empty string is a valid prompt (`[CLS] [SEP]`); over-long text is cut to 256 tokens.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S], batch_size: usize) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros(
                [0, self.cfg.hidden],
                (Kind::Float, self.device),
            ));
        }
        let mut out = Vec::new();
        for chunk in texts.chunks(batch_size.max(1)) {
            let tb = self.tokenize(chunk)?;
            let states = self.forward(&tb.input_ids, &tb.token_type_ids, &tb.attention_mask);
            out.push(Self::pool(&states, &tb.attention_mask));
        }
        Ok(Tensor::cat(&out, 0))
    }
}

impl TextEncoder {
    /// [`Self::encode`] through a file cache: `path` (safetensors) holds `embeddings`
    /// `[N, hidden]` and `key`, the sha256 of the encoder's name and `texts` (length-prefixed).
    /// A file whose key or shape does not match is recomputed and replaced (written
    /// atomically). Returns the embeddings (on the encoder's device) and whether the cache hit.
    pub fn encode_cached<S: AsRef<str>>(
        &self,
        texts: &[S],
        path: &Path,
        batch_size: usize,
    ) -> Result<(Tensor, bool)> {
        let key = Tensor::from_slice(&texts_key(texts)).to_kind(Kind::Uint8);
        if path.exists() {
            let named = crate::train::checkpoint::read_tensors(path)?;
            let get = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t);
            if let (Some(k), Some(e)) = (get("key"), get("embeddings")) {
                if k.size() == key.size()
                    && k.to_kind(Kind::Uint8).equal(&key)
                    && e.size() == [texts.len() as i64, self.cfg.hidden]
                {
                    return Ok((e.to_kind(Kind::Float).to_device(self.device), true));
                }
            }
        }
        let emb = self.encode(texts, batch_size)?;
        crate::train::checkpoint::write_tensors_atomic(
            path,
            &[
                ("embeddings".to_string(), emb.shallow_clone()),
                ("key".to_string(), key),
            ],
        )?;
        Ok((emb, false))
    }
}

/// sha256 of the model name and the length-prefixed texts: the embedding cache's key.
fn texts_key<S: AsRef<str>>(texts: &[S]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(MODEL_DIR_NAME.as_bytes());
    for t in texts {
        let b = t.as_ref().as_bytes();
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    h.finalize().to_vec()
}

fn layer_norm(x: &Tensor, n: &LayerNorm, eps: f64) -> Tensor {
    let last = *x.size().last().expect("layer_norm on a 0-d tensor");
    x.layer_norm(
        [last].as_slice(),
        Some(&n.weight),
        Some(&n.bias),
        eps,
        false,
    )
}

/// Reads `tokenizer.json` and sets sentence-transformers' truncation (padding is done here).
fn load_tokenizer(path: &Path, max_seq_len: usize) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| Error::format(path, format!("not a readable tokenizer.json ({e})")))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_seq_len,
        ..Default::default()
    }))
    .map_err(|e| Error::format(path, format!("cannot set truncation ({e})")))?;
    Ok(tok)
}
