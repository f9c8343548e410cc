//! One module per subcommand. Each exposes an `Args` struct (clap) and
//! `run(args) -> anyhow::Result<ExitCode>`; errors returned from `run` are
//! usage or configuration errors and exit with [`exit_usage`].

use std::process::ExitCode;

pub mod boards;
pub mod certs;
pub mod check;
pub mod image;
pub mod new;
pub mod run;
pub mod serve;
pub mod vboard;

/// A problem was found in what was examined (a failed scenario, a bad certificate).
pub fn exit_problem() -> ExitCode {
    ExitCode::from(1)
}

/// The command could not do its job: bad arguments, unreadable input, configuration error.
pub fn exit_usage() -> ExitCode {
    ExitCode::from(2)
}
