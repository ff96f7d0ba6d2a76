//! Partitions of the condition set among K students, and the router.
//!
//! A [`Partition`] maps every condition (class id) to exactly one student. Strategies:
//! `contiguous` (balanced class-index blocks, student = ⌊c·K/C⌋, the paper's choice), `random`
//! (a seeded shuffle cut into balanced blocks) and `kmeans` (balanced k-means on per-class
//! embeddings). The artifact `partition.json` is validated on load.
//!
//! For prompt-conditional models the conditions are a continuous space (prompt embeddings):
//! [`Partition::of_prompts`] cuts it into groups with [`prompts::PromptGroups`] (`kmeans` or
//! balanced `quadrants`), stores what assigns an unseen prompt in the artifact's `prompts`
//! field, and gives group g to student g (the "conditions" are then the group ids).
//!
//! ```
//! use msd::partition::{Partition, Strategy};
//! let p = Partition::contiguous(10, 4);
//! assert_eq!(p.route(0).unwrap(), 0);
//! assert_eq!(p.route(9).unwrap(), 3);
//! assert_eq!(p.classes_of(1), vec![3, 4]);
//! ```

pub mod prompts;

use crate::train::checkpoint::{self, FORMAT_VERSION};
use crate::{Error, Result};
use prompts::PromptGroups;
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How conditions are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Strategy {
    Contiguous,
    Random,
    Kmeans,
    /// Prompt embeddings only: balanced median splits along principal directions.
    Quadrants,
}

impl std::str::FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "contiguous" => Ok(Self::Contiguous),
            "random" => Ok(Self::Random),
            "kmeans" => Ok(Self::Kmeans),
            "quadrants" => Ok(Self::Quadrants),
            _ => Err(Error::config(
                "partition",
                format!(
                    "unknown strategy `{s}` (expected contiguous, random, kmeans or quadrants)"
                ),
            )),
        }
    }
}

/// The partition artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub format_version: u32,
    pub num_conditions: usize,
    pub students: usize,
    pub strategy: Strategy,
    pub seed: u64,
    /// `owner[c]` is the student that owns condition c.
    pub owner: Vec<usize>,
    /// Prompt-conditional bundles: how a prompt embedding is assigned to a group (condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PromptGroups>,
}

/// Balanced block sizes: the first `n mod k` blocks get one extra element.
fn block_of(i: usize, n: usize, k: usize) -> usize {
    i * k / n
}

impl Partition {
    /// Contiguous balanced blocks: student = ⌊c·K/C⌋.
    pub fn contiguous(num_conditions: usize, students: usize) -> Self {
        let owner = (0..num_conditions)
            .map(|c| block_of(c, num_conditions, students))
            .collect();
        Self {
            format_version: FORMAT_VERSION,
            num_conditions,
            students,
            strategy: Strategy::Contiguous,
            seed: 0,
            owner,
            prompts: None,
        }
    }

    /// A seeded random permutation cut into balanced blocks.
    pub fn random(num_conditions: usize, students: usize, seed: u64) -> Self {
        let mut order: Vec<usize> = (0..num_conditions).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut owner = vec![0; num_conditions];
        for (pos, &c) in order.iter().enumerate() {
            owner[c] = block_of(pos, num_conditions, students);
        }
        Self {
            format_version: FORMAT_VERSION,
            num_conditions,
            students,
            strategy: Strategy::Random,
            seed,
            owner,
            prompts: None,
        }
    }

    /// Balanced k-means on per-condition embeddings (`embeddings[c]`), block sizes as in
    /// [`Partition::contiguous`]. Seeded initialisation (k-means++ style farthest points).
    pub fn kmeans(embeddings: &[Vec<f64>], students: usize, seed: u64) -> Self {
        let owner = balanced_kmeans(embeddings, students, seed);
        Self {
            format_version: FORMAT_VERSION,
            num_conditions: embeddings.len(),
            students,
            strategy: Strategy::Kmeans,
            seed,
            owner,
            prompts: None,
        }
    }

    /// Builds by strategy name; `embeddings` is needed for k-means only.
    pub fn build(
        strategy: Strategy,
        num_conditions: usize,
        students: usize,
        seed: u64,
        embeddings: Option<&[Vec<f64>]>,
    ) -> Result<Self> {
        if students == 0 || students > num_conditions {
            return Err(Error::config("students", format!("must be between 1 and the number of conditions ({num_conditions}), got {students}")));
        }
        let p = match strategy {
            Strategy::Contiguous => Self::contiguous(num_conditions, students),
            Strategy::Random => Self::random(num_conditions, students, seed),
            Strategy::Kmeans => {
                let e = embeddings.ok_or_else(|| {
                    Error::Invalid("kmeans partition needs per-class embeddings".into())
                })?;
                Self::kmeans(e, students, seed)
            }
            Strategy::Quadrants => {
                return Err(Error::config(
                    "partition",
                    "quadrants split prompt embeddings (Partition::of_prompts), not classes",
                ))
            }
        };
        p.validate()?;
        Ok(p)
    }

    /// A partition of prompt embeddings `points` (`[N][dim]`, e.g. the training captions' of
    /// every training image) among `students`: `kmeans` (k = students) or `quadrants`
    /// (students = 2^d). Group g is student g.
    pub fn of_prompts(
        strategy: Strategy,
        points: &[Vec<f32>],
        students: usize,
        seed: u64,
    ) -> Result<Self> {
        let groups = match strategy {
            Strategy::Kmeans => PromptGroups::kmeans(points, students, seed, 100)?,
            Strategy::Quadrants if students.is_power_of_two() => {
                PromptGroups::quadrants(points, students.trailing_zeros() as usize)?
            }
            Strategy::Quadrants => {
                return Err(Error::config(
                    "students",
                    format!("quadrants make 2^d groups; {students} is not a power of two"),
                ))
            }
            s => {
                return Err(Error::config(
                    "partition",
                    format!("{s:?} cannot split prompt embeddings (use kmeans or quadrants)"),
                ))
            }
        };
        let p = Self {
            format_version: FORMAT_VERSION,
            num_conditions: students,
            students,
            strategy,
            seed,
            owner: (0..students).collect(),
            prompts: Some(groups),
        };
        p.validate()?;
        Ok(p)
    }

    /// The student for a prompt embedding `e` (`[dim]`), for prompt partitions.
    pub fn route_prompt(&self, e: &[f32]) -> Result<usize> {
        let groups = self
            .prompts
            .as_ref()
            .ok_or_else(|| Error::Partition("this partition splits classes, not prompts".into()))?;
        self.route(groups.route(e)? as i64)
    }

    /// The student that owns `condition`.
    pub fn route(&self, condition: i64) -> Result<usize> {
        if condition < 0 || condition as usize >= self.num_conditions {
            return Err(Error::UnknownClass {
                class: condition,
                num_classes: self.num_conditions as i64,
            });
        }
        Ok(self.owner[condition as usize])
    }

    /// The conditions owned by student `k`, ascending.
    pub fn classes_of(&self, k: usize) -> Vec<i64> {
        (0..self.num_conditions)
            .filter(|&c| self.owner[c] == k)
            .map(|c| c as i64)
            .collect()
    }

    /// Checks the invariants: one owner per condition, owners in `0..K`, every student owns
    /// at least one condition. Errors name the offending condition or student.
    pub fn validate(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::Partition(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                self.format_version
            )));
        }
        if self.owner.len() != self.num_conditions {
            return Err(Error::Partition(format!(
                "lists owners for {} conditions but num_conditions is {}",
                self.owner.len(),
                self.num_conditions
            )));
        }
        if let Some((c, &o)) = self
            .owner
            .iter()
            .enumerate()
            .find(|(_, &o)| o >= self.students)
        {
            return Err(Error::Partition(format!(
                "condition {c} is owned by student {o}, but there are only {} students",
                self.students
            )));
        }
        if let Some(k) = (0..self.students).find(|&k| !self.owner.contains(&k)) {
            return Err(Error::Partition(format!("student {k} owns no condition")));
        }
        if let Some(g) = &self.prompts {
            g.validate()?;
            if g.len() != self.num_conditions {
                return Err(Error::Partition(format!(
                    "prompts: {} groups but num_conditions is {}",
                    g.len(),
                    self.num_conditions
                )));
            }
        }
        Ok(())
    }

    /// Reads and validates `partition.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let p: Self = checkpoint::read_json(path)?;
        p.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(p)
    }

    /// Writes `partition.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        checkpoint::write_json_atomic(path, self)
    }
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Balanced k-means: Lloyd iterations where the assignment step fills clusters of fixed sizes
/// greedily by increasing distance.
fn balanced_kmeans(x: &[Vec<f64>], k: usize, seed: u64) -> Vec<usize> {
    let n = x.len();
    let sizes: Vec<usize> = (0..k)
        .map(|j| (0..n).filter(|&i| block_of(i, n, k) == j).count())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Farthest-point initialisation from a random start.
    let mut centres: Vec<Vec<f64>> = vec![x[rand::Rng::gen_range(&mut rng, 0..n)].clone()];
    while centres.len() < k {
        let far = (0..n)
            .max_by(|&a, &b| {
                let da = centres
                    .iter()
                    .map(|c| dist2(&x[a], c))
                    .fold(f64::INFINITY, f64::min);
                let db = centres
                    .iter()
                    .map(|c| dist2(&x[b], c))
                    .fold(f64::INFINITY, f64::min);
                da.total_cmp(&db)
            })
            .unwrap_or(0);
        centres.push(x[far].clone());
    }
    let mut owner = vec![usize::MAX; n];
    for _ in 0..50 {
        let mut pairs: Vec<(f64, usize, usize)> = (0..n)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| (dist2(&x[i], &centres[j]), i, j))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut new_owner = vec![usize::MAX; n];
        let mut left = sizes.clone();
        for (_, i, j) in pairs {
            if new_owner[i] == usize::MAX && left[j] > 0 {
                new_owner[i] = j;
                left[j] -= 1;
            }
        }
        let stable = new_owner == owner;
        owner = new_owner;
        for (j, c) in centres.iter_mut().enumerate() {
            let members: Vec<&Vec<f64>> =
                (0..n).filter(|&i| owner[i] == j).map(|i| &x[i]).collect();
            if !members.is_empty() {
                *c = (0..c.len())
                    .map(|d| members.iter().map(|m| m[d]).sum::<f64>() / members.len() as f64)
                    .collect();
            }
        }
        if stable {
            break;
        }
    }
    // Relabel clusters by their smallest member so the result does not depend on init order.
    let mut first: Vec<(usize, usize)> = (0..k)
        .map(|j| ((0..n).find(|&i| owner[i] == j).unwrap_or(n), j))
        .collect();
    first.sort();
    let mut relabel = vec![0; k];
    for (new, (_, old)) in first.iter().enumerate() {
        relabel[*old] = new;
    }
    owner.iter().map(|&o| relabel[o]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(p: &Partition) -> Vec<usize> {
        (0..p.students).map(|k| p.classes_of(k).len()).collect()
    }

    #[test]
    fn contiguous_blocks_are_balanced() {
        let p = Partition::contiguous(10, 4);
        assert_eq!(p.owner, vec![0, 0, 0, 1, 1, 2, 2, 2, 3, 3]);
        assert_eq!(
            Partition::contiguous(8, 8).owner,
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(Partition::contiguous(8, 1).owner, vec![0; 8]);
        for (c, k) in [(1000, 4), (10, 3), (8, 2)] {
            let s = sizes(&Partition::contiguous(c, k));
            assert!(
                s.iter().max().unwrap() - s.iter().min().unwrap() <= 1,
                "{s:?}"
            );
        }
    }

    #[test]
    fn route_is_the_owner_and_rejects_unknown_conditions() {
        let p = Partition::contiguous(8, 2);
        assert_eq!(
            (0..8).map(|c| p.route(c).unwrap()).collect::<Vec<_>>(),
            vec![0, 0, 0, 0, 1, 1, 1, 1]
        );
        assert!(p.route(8).is_err() && p.route(-1).is_err());
    }

    #[test]
    fn random_is_seeded_balanced_and_differs_from_contiguous() {
        let a = Partition::random(10, 5, 3);
        assert_eq!(a, Partition::random(10, 5, 3));
        assert_ne!(a.owner, Partition::random(10, 5, 4).owner);
        assert_eq!(sizes(&a), vec![2; 5]);
        a.validate().unwrap();
    }

    #[test]
    fn kmeans_groups_nearby_embeddings_with_equal_sizes() {
        // Two tight groups of 4 far apart, interleaved in index order.
        let e: Vec<Vec<f64>> = (0..8)
            .map(|i| vec![if i % 2 == 0 { 0.0 } else { 10.0 } + i as f64 * 0.01, 0.0])
            .collect();
        let p = Partition::kmeans(&e, 2, 0);
        assert_eq!(p.owner, vec![0, 1, 0, 1, 0, 1, 0, 1]);
        // Balanced even when the natural clusters are not: 6 near 0, 2 near 10 → sizes 4/4.
        let e: Vec<Vec<f64>> = (0..8)
            .map(|i| vec![if i < 6 { i as f64 * 0.01 } else { 10.0 }])
            .collect();
        assert_eq!(sizes(&Partition::kmeans(&e, 2, 1)), vec![4, 4]);
    }

    #[test]
    fn validation_names_the_offender() {
        let mut p = Partition::contiguous(4, 2);
        p.owner[3] = 5;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("condition 3"));
        let mut p = Partition::contiguous(4, 2);
        p.owner = vec![0, 0, 0, 0];
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("student 1 owns no condition"));
        let mut p = Partition::contiguous(4, 2);
        p.owner.pop();
        assert!(p.validate().is_err());
        assert!(Partition::build(Strategy::Contiguous, 4, 5, 0, None).is_err());
    }
}
