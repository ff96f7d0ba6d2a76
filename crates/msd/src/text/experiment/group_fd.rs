//! Fréchet distance per prompt group, with a real-vs-real floor at the same n: the generated
//! samples of group g (samples of the prompts the reference partition puts in g) against the
//! training images whose captions fall in g, and the held-out real images of g against the same
//! training images. FD is biased upward at small n, so each group's generated FD and its floor
//! are computed on the same number of samples, n = min(generated in g, held-out in g), each an
//! evenly strided subset (the generated samples are in prompt order, so every prompt of the
//! group keeps its share). The FD of all generated samples of g is kept beside it.

use crate::eval::fd::frechet_distance_features;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The FDs of one group (or of everything, `group = None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupFd {
    /// The group (`None`: all samples against all training images).
    pub group: Option<usize>,
    /// Generated samples in the group.
    pub generated: usize,
    /// Training images in the group (the reference).
    pub train: usize,
    /// Held-out real images in the group.
    pub heldout: usize,
    /// Samples on each side of the matched comparison: min(generated, heldout).
    pub n: usize,
    /// FD of `n` generated samples (strided subset) vs the group's training images.
    pub fd: Option<f64>,
    /// FD of `n` held-out images (strided subset) vs the group's training images: the floor.
    pub floor: Option<f64>,
    /// FD of all `generated` samples vs the group's training images.
    pub fd_all: Option<f64>,
}

/// `n` evenly strided row indices of `0..len` (all of them when `n ≥ len`).
pub fn strided(len: usize, n: usize) -> Vec<i64> {
    let n = n.min(len);
    (0..n).map(|i| (i * len / n) as i64).collect()
}

/// Rows of `x` (`[N, D]`) whose group is `g`.
fn rows_of(x: &Tensor, groups: &[usize], g: Option<usize>) -> Tensor {
    let idx: Vec<i64> = groups
        .iter()
        .enumerate()
        .filter(|(_, &h)| g.is_none_or(|g| g == h))
        .map(|(i, _)| i as i64)
        .collect();
    x.index_select(0, &Tensor::from_slice(&idx).to_device(x.device()))
}

/// FD that needs at least 2 rows on each side (`None` below).
fn fd_or_none(a: &Tensor, b: &Tensor) -> Result<Option<f64>> {
    if a.size()[0] < 2 || b.size()[0] < 2 {
        return Ok(None);
    }
    frechet_distance_features(a, b).map(Some)
}

/// The overall entry (`group = None`) and one per group `0..groups` from features `[N, D]`
/// with one group index per row: `gen` the generated samples, `train` the training images
/// (the reference), `held` the held-out real images.
pub fn group_fds(
    gen: (&Tensor, &[usize]),
    train: (&Tensor, &[usize]),
    held: (&Tensor, &[usize]),
    groups: usize,
) -> Result<Vec<GroupFd>> {
    for (what, (x, g)) in [("generated", gen), ("training", train), ("held-out", held)] {
        if x.size().first().copied() != Some(g.len() as i64) {
            return Err(Error::Invalid(format!(
                "group FD: {} {what} features but {} group indices",
                x.size().first().copied().unwrap_or(0),
                g.len()
            )));
        }
        if let Some(&bad) = g.iter().find(|&&h| h >= groups) {
            return Err(Error::Invalid(format!(
                "group FD: {what} row in group {bad}, but there are {groups} groups"
            )));
        }
    }
    let mut out = Vec::with_capacity(groups + 1);
    for g in std::iter::once(None).chain((0..groups).map(Some)) {
        let x = rows_of(gen.0, gen.1, g);
        let r = rows_of(train.0, train.1, g);
        let h = rows_of(held.0, held.1, g);
        let (ng, nh) = (x.size()[0] as usize, h.size()[0] as usize);
        let n = ng.min(nh);
        let pick = |t: &Tensor, len: usize| {
            t.index_select(
                0,
                &Tensor::from_slice(&strided(len, n)).to_device(t.device()),
            )
        };
        out.push(GroupFd {
            group: g,
            generated: ng,
            train: r.size()[0] as usize,
            heldout: nh,
            n,
            fd: fd_or_none(&pick(&x, ng), &r)?,
            floor: fd_or_none(&pick(&h, nh), &r)?,
            fd_all: fd_or_none(&x, &r)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// `n` rows of `[D = 3]` noise around `centre` (seeded).
    fn cloud(n: i64, centre: f64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([n, 3], (Kind::Double, Device::Cpu)) * 0.1 + centre
    }

    #[test]
    fn samples_of_a_group_are_compared_only_with_real_images_of_that_group() {
        let _g = crate::rng_guard();
        // Real images: group 0 around 0, group 1 around 10, interleaved.
        let train = Tensor::cat(&[cloud(400, 0.0, 1), cloud(400, 10.0, 2)], 0);
        let train_g: Vec<usize> = (0..800).map(|i| usize::from(i >= 400)).collect();
        let held = Tensor::cat(&[cloud(30, 10.0, 3), cloud(50, 0.0, 4)], 0);
        let held_g: Vec<usize> = (0..80).map(|i| usize::from(i < 30)).collect();
        // Generated: 60 samples for group 0 (around 0) and 20 for group 1 (around 10).
        let gen = Tensor::cat(&[cloud(60, 0.0, 5), cloud(20, 10.0, 6)], 0);
        let gen_g: Vec<usize> = (0..80).map(|i| usize::from(i >= 60)).collect();
        let r = group_fds((&gen, &gen_g), (&train, &train_g), (&held, &held_g), 2).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].group, None);
        assert_eq!(
            (r[0].generated, r[0].train, r[0].heldout, r[0].n),
            (80, 800, 80, 80)
        );
        assert_eq!(
            (r[1].generated, r[1].train, r[1].heldout, r[1].n),
            (60, 400, 50, 50)
        );
        assert_eq!(
            (r[2].generated, r[2].train, r[2].heldout, r[2].n),
            (20, 400, 30, 20)
        );
        // Within a group everything lies around the same centre: FD ≪ 1 (a cross-group
        // comparison would cost ‖Δμ‖² = 3·10² = 300).
        for g in &r[1..] {
            for v in [g.fd, g.floor, g.fd_all] {
                assert!(v.unwrap() < 0.5, "{g:?}");
            }
        }
        // Swap the generated groups: each group's samples now sit at the other centre.
        let swapped: Vec<usize> = gen_g.iter().map(|g| 1 - g).collect();
        let s = group_fds((&gen, &swapped), (&train, &train_g), (&held, &held_g), 2).unwrap();
        for g in &s[1..] {
            let fd = g.fd_all.unwrap();
            assert!((fd - 300.0).abs() < 10.0, "{g:?}");
            assert!(g.floor.unwrap() < 0.5);
        }
        // The overall entry mixes both groups on both sides and does not move.
        assert_eq!(s[0].fd_all, r[0].fd_all);
    }

    #[test]
    fn strided_subsets_spread_over_the_rows_and_bad_groups_are_refused() {
        assert_eq!(strided(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(strided(3, 5), vec![0, 1, 2]);
        assert!(strided(4, 0).is_empty());
        let x = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
        let e = group_fds((&x, &[0, 2]), (&x, &[0, 1]), (&x, &[0, 1]), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("group 2"), "{e}");
        assert!(group_fds((&x, &[0]), (&x, &[0, 1]), (&x, &[0, 1]), 2).is_err());
        // Groups with fewer than two rows have no FD.
        let one = group_fds((&x, &[0, 1]), (&x, &[0, 1]), (&x, &[0, 1]), 2).unwrap();
        assert_eq!(one[1].fd, None);
        assert_eq!(one[1].n, 1);
    }
}
