//! Pictures come from [`msd::viz`] (one rendering everywhere); this module names them for the
//! commands that draw figures.

pub use msd::viz::{hstack, palette, Panel};
