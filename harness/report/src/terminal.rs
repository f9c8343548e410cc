//! The terminal reporter: a progress bar while scenarios run, one line per finished
//! scenario, a summary at the end.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparring_runner::events::{RunEvent, Verdict};

pub struct Terminal {
    bar: ProgressBar,
    /// Several boards: each verdict line says which board.
    boards: usize,
    /// The harness's own time over all cells, for the summary.
    harness_ms: u64,
}

impl Default for Terminal {
    fn default() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Terminal {
            bar,
            boards: 0,
            harness_ms: 0,
        }
    }
}

impl Terminal {
    /// A line above the bar; straight to stderr when there is no terminal to draw on (CI).
    fn println(&self, line: String) {
        if self.bar.is_hidden() {
            say(&line);
        } else {
            self.bar.println(line);
        }
    }

    pub fn on(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted {
                boards, scenarios, ..
            } => {
                // One per cell: scenarios × the boards each runs on.
                self.bar.set_length(*scenarios as u64);
                self.boards = boards.len();
                for b in boards {
                    self.println(format!(
                        "board {}: {} {} ({} flash, ROM loader)",
                        b.name, b.chip, b.mac, b.flash_size
                    ));
                }
            }
            RunEvent::ScenarioStarted { id, .. } => self.bar.set_message(id.clone()),
            RunEvent::StepFinished { .. } => {}
            RunEvent::ScenarioFinished(r) => {
                self.bar.inc(1);
                let mark = match r.verdict {
                    Verdict::Pass => "PASS",
                    Verdict::PassWithWarnings => "WARN",
                    Verdict::Fail => "FAIL",
                    Verdict::Error => "ERROR",
                    Verdict::Skipped => "SKIP",
                };
                self.harness_ms += r.harness_ms;
                let mut line = format!("{mark:>5} {:<28} {:>6} ms", r.id, r.elapsed_ms);
                if self.boards > 1 && !r.board.is_empty() {
                    line.push_str(&format!("  [{}]", r.board));
                }
                if !r.reason.is_empty() {
                    line.push_str(&format!("  {}", r.reason));
                }
                for e in r.evidence.iter().take(6) {
                    line.push_str(&format!("\n        | {e}"));
                }
                self.println(line);
            }
            RunEvent::RunFinished {
                elapsed_ms,
                counts,
                interrupted,
            } => {
                self.bar.finish_and_clear();
                let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                say(&format!(
                    "{}{} in {:.1} s (harness time over all cells {:.1} s, the rest waiting for boards and services)",
                    if *interrupted { "interrupted: " } else { "" },
                    summary.join(", "),
                    *elapsed_ms as f64 / 1000.0,
                    self.harness_ms as f64 / 1000.0
                ));
            }
        }
    }
}

/// A line on stderr; a closed stderr (`sparring run 2>&1 | head`) must not stop the run, which
/// still writes its reports.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
