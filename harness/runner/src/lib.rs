//! The scenario engine: scenario files, executor, board backends, expectations, verdicts.
//! So far: board flashing, the scenario file model and loader (`scenario`), and
//! crash/reset signatures of the log port (`crash`), per-port serial capture (`capture`).

pub mod capture;
pub mod crash;
pub mod flash;
pub mod scenario;
