//! Reporters: each consumes the executor's [`RunEvent`]s and nothing else, so the terminal,
//! JUnit, JSON and HTML outputs cannot disagree.

pub mod html;
pub mod json;
pub mod junit;
pub mod terminal;

use std::path::{Path, PathBuf};

use sparring_runner::events::{BoardIdentity, RunEvent, ScenarioResult};

/// Everything a run reported, collected from its events (what the file reporters render).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunRecord {
    pub sparring_version: String,
    pub boards: Vec<BoardIdentity>,
    pub ca_fingerprints: std::collections::BTreeMap<String, String>,
    pub results: Vec<ScenarioResult>,
    pub elapsed_ms: u64,
    pub interrupted: bool,
}

impl RunRecord {
    pub fn record(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted {
                sparring_version,
                boards,
                ca_fingerprints,
                ..
            } => {
                self.sparring_version = sparring_version.clone();
                self.boards = boards.clone();
                self.ca_fingerprints = ca_fingerprints.clone();
            }
            RunEvent::ScenarioFinished(result) => {
                // The firmware a board runs is known once a boot log showed it.
                if let Some(firmware) = &result.facts.firmware
                    && let Some(board) = self.boards.iter_mut().find(|b| b.name == result.board)
                {
                    board.firmware = Some(firmware.clone());
                }
                self.results.push((**result).clone());
            }
            RunEvent::RunFinished {
                elapsed_ms,
                interrupted,
                ..
            } => {
                self.elapsed_ms = *elapsed_ms;
                self.interrupted = *interrupted;
            }
            RunEvent::ScenarioStarted { .. } | RunEvent::StepFinished { .. } => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("JUnit: {0}")]
    Junit(String),
}

/// Writes the three report files into `dir`; returns their paths.
pub fn write_all(dir: &Path, record: &RunRecord) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Write(dir.to_owned(), e))?;
    let files = [
        (dir.join("junit.xml"), junit::render(record)?),
        (dir.join("report.json"), json::render(record)),
        (dir.join("report.html"), html::render(record)),
    ];
    for (path, text) in &files {
        std::fs::write(path, text).map_err(|e| ReportError::Write(path.clone(), e))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}
