//! Evaluation: distances between sample sets.

pub mod hist2d;

pub use hist2d::{hist_l1, Hist2d};
