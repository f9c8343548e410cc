//! The scenario engine: scenario files, executor, board backends, expectations, verdicts.
//! So far it holds the board flashing used by `sparring run` and its tests.

pub mod flash;
