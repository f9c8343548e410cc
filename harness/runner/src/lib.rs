//! The scenario engine, along the data flow: scenario files (`scenario`) are flattened into
//! steps (`plan`, with files from the step `library`), run by the `executor` on boards
//! (`board`: backends, inventory, capabilities; `bench`: a board with its ports and identity;
//! `flash`: espflash) against per-scenario services (`environment`); what the board prints and
//! the services see is collected (`capture`, `observe`), judged (`crash`, `verdict`),
//! snapshotted (`snapshot`) and emitted as typed `events` that reporters consume.

pub mod bench;
pub mod board;
pub mod capture;
pub mod cells;
pub mod crash;
pub mod environment;
pub mod events;
pub mod executor;
pub mod firmware;
pub mod flash;
pub mod library;
pub mod observe;
pub mod plan;
pub mod scenario;
pub mod snapshot;
pub mod verdict;
