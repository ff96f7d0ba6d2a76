//! Captioned training images with their caption embeddings: every training image gets a caption
//! from [`crate::data::captions`] (training templates only), the distinct captions are embedded
//! once through a file cache ([`TextEncoder::encode_cached`]), and each image gets its
//! caption's row.

use crate::data::captions::{caption_training_set, distinct_texts, Caption, Thresholds};
use crate::data::prompted::PromptedImages;
use crate::data::ImageDataset;
use crate::nets::text_encoder::TextEncoder;
use crate::partition::Partition;
use crate::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The captions of a dataset's training images and their embeddings.
#[derive(Debug)]
pub struct CaptionedSet {
    pub thresholds: Thresholds,
    /// One per training image, in training order.
    pub captions: Vec<Caption>,
    /// `[N_train, dim]` float on the CPU: row i embeds `captions[i].text`.
    pub embeddings: Tensor,
    /// Whether the embeddings came from the cache file.
    pub cache_hit: bool,
}

impl CaptionedSet {
    /// Captions `data`'s training images (template draw seeded by `seed`) and embeds them,
    /// reading or writing the cache `cache` (safetensors).
    pub fn build(
        data: &ImageDataset,
        encoder: &TextEncoder,
        cache: &Path,
        seed: u64,
    ) -> Result<Self> {
        let (thresholds, captions) = caption_training_set(data, seed)?;
        let (texts, rows) = distinct_texts(&captions);
        let (emb, cache_hit) = encoder.encode_cached(&texts, cache, 64)?;
        let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let embeddings = emb
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .index_select(0, &Tensor::from_slice(&rows));
        Ok(Self {
            thresholds,
            captions,
            embeddings,
            cache_hit,
        })
    }

    /// The embeddings as points for a prompt partition (`[N][dim]`).
    pub fn points(&self) -> Result<Vec<Vec<f32>>> {
        let dim = self.embeddings.size()[1] as usize;
        let flat: Vec<f32> = Vec::try_from(self.embeddings.flatten(0, -1))?;
        Ok(flat.chunks(dim).map(<[f32]>::to_vec).collect())
    }

    /// Mean caption embedding of each digit `0..num_classes`: `[num_classes, dim]`.
    pub fn class_means(&self, num_classes: i64) -> Result<Tensor> {
        let labels: Vec<i64> = self.captions.iter().map(|c| c.label).collect();
        let mut rows = Vec::new();
        for c in 0..num_classes {
            let idx: Vec<i64> = (0..labels.len() as i64)
                .filter(|&i| labels[i as usize] == c)
                .collect();
            if idx.is_empty() {
                return Err(Error::Invalid(format!("no caption names digit {c}")));
            }
            rows.push(
                self.embeddings
                    .index_select(0, &Tensor::from_slice(&idx))
                    .mean_dim(0, false, Kind::Float),
            );
        }
        Ok(Tensor::stack(&rows, 0))
    }

    /// The training images paired with these embeddings, grouped by `partition` (its prompt
    /// groups; one group when `None`).
    pub fn prompted(
        &self,
        data: &ImageDataset,
        partition: Option<&Partition>,
    ) -> Result<PromptedImages> {
        let (groups, n) = match partition {
            None => (vec![0; self.captions.len()], 1),
            Some(p) => {
                let g = p.prompts.as_ref().ok_or_else(|| {
                    Error::Partition("a text run needs a prompt partition".into())
                })?;
                let groups = self.points()?.iter().map(|e| g.assign(e)).collect();
                (groups, g.len())
            }
        };
        PromptedImages::new(
            data.train_images().shallow_clone(),
            self.embeddings.shallow_clone(),
            groups,
            n,
        )
    }
}
