//! One module per subcommand.

pub mod bundle;
pub mod distill;
pub mod partition;
pub mod sample;
pub mod toy;
pub mod train_teacher;
