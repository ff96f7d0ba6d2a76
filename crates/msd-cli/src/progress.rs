//! Progress bars: drawn on a terminal, hidden otherwise (logs and `stats.jsonl` carry the same).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `total` steps labelled `what`.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if !std::io::stdout().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// An experiment observer for the terminal: one bar per training job, notes printed as lines,
/// sample grids written beside image evaluations.
#[derive(Default)]
pub struct Console {
    bar: Option<ProgressBar>,
}

impl msd::experiment::Observer for Console {
    fn note(&mut self, msg: &str) {
        // Not `ProgressBar::println`: on a hidden bar (stdout not a terminal, e.g. a log file)
        // it prints nothing, and the note would be lost.
        match &self.bar {
            Some(b) => b.suspend(|| println!("{msg}")),
            None => println!("{msg}"),
        }
    }
    fn begin(&mut self, label: &str, total: u64) {
        self.bar = Some(bar(total, label));
    }
    fn step(&mut self, step: u64) {
        if let Some(b) = &self.bar {
            b.set_position(step);
        }
    }
    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
    fn samples(
        &mut self,
        dir: &std::path::Path,
        x: &tch::Tensor,
        labels: &[i64],
    ) -> msd::Result<()> {
        msd::draw::write_picture(x, labels, &dir.join("samples.png"))
    }
}
