//! The paper's text-to-image setting in miniature: captioned digits, a prompt-conditional
//! teacher (optionally started from a class-conditional one), students distilled on the prompt
//! groups of a [`crate::partition::prompts`] partition, and a bundle that routes a free-text
//! prompt by its embedding.
//!
//! - [`captioned`]: caption every training image and embed the captions once (cached);
//! - [`init`]: a prompt-conditional network from a class-conditional one;
//! - [`level_grid`]: real images per attribute level, to check the measures by eye;
//! - [`pipeline`]: the run directory's text stages (teacher, partition, students, bundle).
//! - [`prompt`]: checking and embedding one user prompt;
//! - [`prompt_set`]: prompt files (what each prompt asks for) and the standard evaluation set;
//! - [`prompt_eval`]: scoring samples against their prompts (digit, attributes, FD);
//! - [`experiment`]: the seeded comparison (teacher vs 1 vs K students, quadrants vs k-means).

pub mod caption_files;
pub mod captioned;
pub mod experiment;
pub mod init;
pub mod level_grid;
pub mod pipeline;
pub mod prompt;
pub mod prompt_eval;
pub mod prompt_set;
