//! Datasets: the [`TrainingData`] trait every trainer draws batches from, the 2-D toy, image
//! data (IDX files, image folders, the in-memory [`ImageDataset`] with its held-out split), and
//! filtering by condition subset (a student sees only its own classes).

pub mod captions;
pub mod folder;
pub mod idx;
pub mod images;
pub mod prompted;
pub mod source;
pub mod toy2d;

pub use folder::FolderConfig;
pub use idx::IdxConfig;
pub use images::{ImageDataset, SplitConfig};
pub use source::{DataConfig, DataSource};
pub use toy2d::{Toy2d, Toy2dConfig};

use crate::Result;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

/// A class-conditional dataset that trainers draw batches from.
pub trait TrainingData {
    /// Number of classes.
    fn num_classes(&self) -> i64;
    /// Shape of one example (without the batch axis).
    fn sample_shape(&self) -> Vec<i64>;
    /// `n` examples with labels drawn uniformly from `classes` (the filter): returns
    /// `(x: [n, ...] float, labels: [n] int64)` on `device`.
    fn batch(
        &self,
        n: usize,
        classes: &[i64],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<(Tensor, Tensor)>;

    /// Width of the condition vectors for data conditioned on prompt embeddings (then
    /// [`TrainingData::batch`] returns `[n, dim]` float conditions instead of labels, and
    /// `classes` filters prompt groups); `None` for class labels.
    fn condition_dim(&self) -> Option<i64> {
        None
    }

    /// `n` conditions to generate for (distribution matching draws its generator's inputs
    /// here): labels uniform over `classes` (`[n]` int64) by default; embedding-conditioned
    /// data returns `[n, dim]` float embeddings of training prompts in the `classes` groups.
    fn conditions(
        &self,
        n: usize,
        classes: &[i64],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<Tensor> {
        Ok(Tensor::from_slice(&uniform_labels(n, classes, rng)).to_device(device))
    }
}

/// Draws `n` labels uniformly from `classes`.
pub fn uniform_labels(n: usize, classes: &[i64], rng: &mut ChaCha8Rng) -> Vec<i64> {
    use rand::Rng;
    (0..n)
        .map(|_| classes[rng.gen_range(0..classes.len())])
        .collect()
}
