//! One module per subcommand.

pub mod bench;
pub mod bundle;
pub mod captions;
pub mod distill;
pub mod eval;
pub mod experiment;
pub mod import_teacher;
pub mod launch;
pub mod partition;
pub mod sample;
pub mod serve;
pub mod serve_bench;
pub mod serve_load;
pub mod text;
pub mod toy;
pub mod train_classifier;
pub mod train_teacher;
