//! The scenario engine: scenario files, executor, board backends, expectations, verdicts.
//! So far: board flashing, and the scenario file model and loader (`scenario`).

pub mod flash;
pub mod scenario;
