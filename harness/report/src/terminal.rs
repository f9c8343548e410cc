//! The terminal reporter: a progress bar while scenarios run, one line per finished
//! scenario, a summary at the end.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparring_runner::events::{RunEvent, Verdict};

pub struct Terminal {
    bar: ProgressBar,
}

impl Default for Terminal {
    fn default() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Terminal { bar }
    }
}

impl Terminal {
    /// A line above the bar; straight to stderr when there is no terminal to draw on (CI).
    fn println(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.println(line);
        }
    }

    pub fn on(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted {
                boards, scenarios, ..
            } => {
                self.bar.set_length((scenarios * boards.len()) as u64);
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
                let mut line = format!("{mark:>5} {:<28} {:>6} ms", r.id, r.elapsed_ms);
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
                eprintln!(
                    "{}{} in {:.1} s",
                    if *interrupted { "interrupted: " } else { "" },
                    summary.join(", "),
                    *elapsed_ms as f64 / 1000.0
                );
            }
        }
    }
}
