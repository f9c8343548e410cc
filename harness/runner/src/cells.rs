//! What a run executes: cells, each one scenario on one board (or on any board of a group), with
//! a stable id `scenario@board` that JUnit test names, report rows, `--filter` and `--shard`
//! use. Worked out from the boards' descriptions alone, so `--list` touches no hardware.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::board::{BoardDescriptor, FirmwareKind};
use crate::scenario::LoadedScenario;

/// Which boards a scenario runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Spread {
    /// Every board it is eligible for.
    #[default]
    Every,
    /// One board per chip, whichever of that chip is free first.
    EachChip,
    /// One board, whichever eligible board is free first.
    Any,
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// `tls-valid@desk-c3`, `tls-valid@esp32c3` (each chip), `tls-valid@any`.
    pub id: String,
    pub scenario: String,
    /// The board, chip or `any` after the `@`: who reports it when no board runs it.
    #[serde(skip)]
    pub group: String,
    /// Index into the run's scenarios.
    #[serde(skip)]
    pub scenario_index: usize,
    /// Boards (indices into the run's boards) that may still run it; empty when none can.
    #[serde(skip)]
    pub eligible: Vec<usize>,
    /// Boards that could run it when the run began.
    #[serde(skip)]
    pub candidates: Vec<usize>,
    /// Names of those boards.
    pub boards: Vec<String>,
    /// Why no board can run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
}

/// Why `scenario` does not run on `board`, if it does not.
pub fn ineligible(board: &BoardDescriptor, scenario: &LoadedScenario) -> Option<String> {
    let wanted = &scenario.scenario.board;
    if !wanted.chips.is_empty() && !wanted.chips.iter().any(|c| c == board.target.name()) {
        return Some(format!("needs a {} board", wanted.chips.join(", ")));
    }
    if wanted.personality != board.firmware.personality() {
        return Some(format!(
            "needs {} firmware; {} runs {}",
            wanted.personality,
            board.name,
            board.firmware.personality()
        ));
    }
    if let Some(storage) = board.at_storage
        && wanted.personality == FirmwareKind::EspAt.personality()
        && storage != wanted.at_storage
    {
        return Some(format!(
            "needs ESP-AT firmware keeping certificates in {}; {}'s keeps them in {} (at_storage in its inventory entry)",
            wanted.at_storage.name(),
            board.name,
            storage.name()
        ));
    }
    let missing: Vec<&str> = wanted
        .requires
        .iter()
        .filter(|c| !board.capabilities.contains(c))
        .map(|c| c.name())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "needs {} ({} does not have it)",
            missing.join(", "),
            board.name
        ));
    }
    None
}

/// The cells of a run, in scenario order.
pub fn plan(scenarios: &[LoadedScenario], boards: &[BoardDescriptor], spread: Spread) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (scenario_index, loaded) in scenarios.iter().enumerate() {
        let scenario = loaded.scenario.id.get_ref().clone();
        let cell = |group: &str, members: &[usize]| {
            let reasons: Vec<String> = members
                .iter()
                .filter_map(|&b| ineligible(&boards[b], loaded))
                .collect();
            let eligible: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&b| ineligible(&boards[b], loaded).is_none())
                .collect();
            Cell {
                id: format!("{scenario}@{group}"),
                group: group.to_owned(),
                candidates: eligible.clone(),
                scenario: scenario.clone(),
                scenario_index,
                boards: eligible.iter().map(|&b| boards[b].name.clone()).collect(),
                skip: eligible.is_empty().then(|| {
                    if reasons.is_empty() {
                        "no board to run it on".to_owned()
                    } else {
                        reasons.join("; ")
                    }
                }),
                eligible,
            }
        };
        match spread {
            Spread::Every => {
                for (index, board) in boards.iter().enumerate() {
                    cells.push(cell(&board.name, &[index]));
                }
            }
            Spread::EachChip => {
                let mut by_chip: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (index, board) in boards.iter().enumerate() {
                    by_chip.entry(board.target.name()).or_default().push(index);
                }
                for (chip, members) in by_chip {
                    cells.push(cell(chip, &members));
                }
            }
            Spread::Any => {
                let all: Vec<usize> = (0..boards.len()).collect();
                cells.push(cell("any", &all));
            }
        }
    }
    cells
}

/// `k/n`: the k-th of n shards (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("shard {text:?}: expected k/n with 1 <= k <= n, e.g. 2/3");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether this shard owns the cell: by a hash of its id alone, so a cell stays in its shard
    /// whatever other cells are added or removed.
    pub fn owns(&self, cell_id: &str) -> bool {
        stable_hash(cell_id) % self.count == self.index - 1
    }
}

/// FNV-1a, 64 bit: the same on every machine and every Rust version (std's hasher is neither).
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_parsed_and_cover_every_id_once() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert!("3".parse::<Shard>().is_err());
        let shards: Vec<Shard> = (1..=3).map(|k| Shard { index: k, count: 3 }).collect();
        for id in ["a@x", "b@x", "tls-valid@virtual:esp32c3", "ota-valid@any"] {
            assert_eq!(shards.iter().filter(|s| s.owns(id)).count(), 1, "{id}");
        }
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // FNV-1a 64 of "a" (the algorithm's published test vector).
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
