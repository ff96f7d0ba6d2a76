//! Images paired with prompt embeddings, for prompt-conditional training: each training image
//! with the embedding of its caption (see [`super::captions`]) and a prompt group (its cell of a
//! prompt partition, [`crate::partition::prompts`]; 0 for everything when there is none).
//!
//! As [`TrainingData`], the conditions are `[n, dim]` float embeddings and the class filter
//! selects **groups**: a batch draws images uniformly among those whose group is in the filter
//! (the data distribution restricted to the student's prompts), with their own embeddings.

use super::TrainingData;
use crate::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Training images, their caption embeddings and prompt groups.
#[derive(Debug)]
pub struct PromptedImages {
    /// `[N, C, H, W]` float in [−1, 1].
    images: Tensor,
    /// `[N, dim]` float.
    embeddings: Tensor,
    groups: Vec<usize>,
    /// Image indices of each group.
    by_group: Vec<Vec<i64>>,
}

impl PromptedImages {
    /// `images` `[N, C, H, W]`, `embeddings` `[N, dim]` (row i: image i's caption), `groups[i]`
    /// in `0..num_groups`. Errors say which count disagrees.
    pub fn new(
        images: Tensor,
        embeddings: Tensor,
        groups: Vec<usize>,
        num_groups: usize,
    ) -> Result<Self> {
        let n = images.size().first().copied().unwrap_or(0);
        if images.dim() != 4 || embeddings.dim() != 2 || embeddings.size()[0] != n {
            return Err(Error::Invalid(format!(
                "prompted images: {:?} images with {:?} embeddings (need [N, C, H, W] and [N, dim])",
                images.size(),
                embeddings.size()
            )));
        }
        if groups.len() as i64 != n || num_groups == 0 {
            return Err(Error::Invalid(format!(
                "prompted images: {} group ids for {n} images ({num_groups} groups)",
                groups.len()
            )));
        }
        let mut by_group = vec![Vec::new(); num_groups];
        for (i, &g) in groups.iter().enumerate() {
            by_group
                .get_mut(g)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "prompted images: image {i} is in group {g} of {num_groups}"
                    ))
                })?
                .push(i as i64);
        }
        Ok(Self {
            images,
            embeddings: embeddings.to_kind(Kind::Float),
            groups,
            by_group,
        })
    }

    /// The caption embeddings `[N, dim]`.
    pub fn embeddings(&self) -> &Tensor {
        &self.embeddings
    }

    /// The group of each image.
    pub fn groups(&self) -> &[usize] {
        &self.groups
    }

    /// Number of images in each group.
    pub fn group_sizes(&self) -> Vec<usize> {
        self.by_group.iter().map(Vec::len).collect()
    }

    /// `n` image indices drawn uniformly among the images of the `groups` filter.
    fn draw(&self, n: usize, groups: &[i64], rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let mut pool: Vec<i64> = Vec::new();
        for &g in groups {
            let members = usize::try_from(g)
                .ok()
                .and_then(|g| self.by_group.get(g))
                .filter(|m| !m.is_empty())
                .ok_or_else(|| Error::Invalid(format!("batch: prompt group {g} has no images")))?;
            pool.extend(members);
        }
        if pool.is_empty() {
            return Err(Error::Invalid("batch: empty group filter".into()));
        }
        pool.sort_unstable();
        pool.dedup();
        let idx: Vec<i64> = (0..n).map(|_| pool[rng.gen_range(0..pool.len())]).collect();
        Ok(Tensor::from_slice(&idx))
    }
}

impl TrainingData for PromptedImages {
    /// The number of prompt groups.
    fn num_classes(&self) -> i64 {
        self.by_group.len() as i64
    }

    fn sample_shape(&self) -> Vec<i64> {
        self.images.size()[1..].to_vec()
    }

    /// `([n, C, H, W], [n, dim])`: images of the filtered groups and their caption embeddings.
    fn batch(
        &self,
        n: usize,
        classes: &[i64],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let idx = self.draw(n, classes, rng)?;
        Ok((
            self.images.index_select(0, &idx).to_device(device),
            self.embeddings.index_select(0, &idx).to_device(device),
        ))
    }

    fn condition_dim(&self) -> Option<i64> {
        Some(self.embeddings.size()[1])
    }

    /// `[n, dim]`: caption embeddings of images of the filtered groups.
    fn conditions(
        &self,
        n: usize,
        classes: &[i64],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<Tensor> {
        let idx = self.draw(n, classes, rng)?;
        Ok(self.embeddings.index_select(0, &idx).to_device(device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    /// Image i is filled with i, its embedding is [i, −i], group i % 3.
    fn toy() -> PromptedImages {
        let n = 9;
        let images = Tensor::arange(n, (Kind::Float, Device::Cpu))
            .view([n, 1, 1, 1])
            .expand([n, 1, 2, 2], false)
            .contiguous();
        let e = Tensor::arange(n, (Kind::Float, Device::Cpu)).unsqueeze(1);
        let embeddings = Tensor::cat(&[&e, &(-&e)], 1);
        PromptedImages::new(images, embeddings, (0..9).map(|i| i % 3).collect(), 3).unwrap()
    }

    #[test]
    fn batches_pair_each_image_with_its_own_embedding_within_the_filter() {
        let d = toy();
        assert_eq!((d.num_classes(), d.condition_dim()), (3, Some(2)));
        assert_eq!(d.sample_shape(), vec![1, 2, 2]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (x, c) = d.batch(64, &[1, 2], &mut rng, Device::Cpu).unwrap();
        assert_eq!((x.size(), c.size()), (vec![64, 1, 2, 2], vec![64, 2]));
        let xi: Vec<f32> = Vec::try_from(x.select(3, 0).select(2, 0).select(1, 0)).unwrap();
        let ci: Vec<f32> = Vec::try_from(c.select(1, 0)).unwrap();
        assert_eq!(xi, ci);
        assert!(
            xi.iter().all(|&v| !(v as usize).is_multiple_of(3)),
            "{xi:?}"
        );
        let cond = d.conditions(16, &[0], &mut rng, Device::Cpu).unwrap();
        let c0: Vec<f32> = Vec::try_from(cond.select(1, 0)).unwrap();
        assert!(c0.iter().all(|&v| (v as usize).is_multiple_of(3)), "{c0:?}");
        // Same seed, same draw.
        let a = d.conditions(
            8,
            &[0, 1, 2],
            &mut ChaCha8Rng::seed_from_u64(5),
            Device::Cpu,
        );
        let b = d.conditions(
            8,
            &[0, 1, 2],
            &mut ChaCha8Rng::seed_from_u64(5),
            Device::Cpu,
        );
        assert!(a.unwrap().equal(&b.unwrap()));
    }

    #[test]
    fn bad_filters_and_shapes_are_refused() {
        let d = toy();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(d.batch(4, &[3], &mut rng, Device::Cpu).is_err());
        assert!(d.batch(4, &[-1], &mut rng, Device::Cpu).is_err());
        assert!(d.batch(4, &[], &mut rng, Device::Cpu).is_err());
        let im = Tensor::zeros([2, 1, 2, 2], (Kind::Float, Device::Cpu));
        let e = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        assert!(PromptedImages::new(im.shallow_clone(), e, vec![0, 0], 1).is_err());
        let e = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        assert!(PromptedImages::new(im, e, vec![0, 1], 1).is_err());
    }
}
