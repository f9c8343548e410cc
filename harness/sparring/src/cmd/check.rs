//! `sparring check`: validate scenario files without running them.

use std::path::PathBuf;
use std::process::ExitCode;

use sparring_runner::scenario::{LoadError, load_path};

/// Validate scenario files (syntax, step kinds, ports, regexes, steps that would pass whatever
/// the board does) and the step library files they include, without running anything.
///
/// Every error is printed as `file:line:column: what was expected`, in the file where it is. Exits 1 when
/// any file is invalid, 2 when the path cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A scenario file, or a directory whose `*.toml` files are scenarios.
    #[arg(default_value = "scenarios")]
    path: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (scenarios, errors) = load_path(&args.path);
    // An unreadable input is a usage error, not a finding about a scenario.
    if let Some(unreadable) = errors.iter().find(|e| matches!(e, LoadError::Read { .. })) {
        anyhow::bail!("{unreadable}");
    }
    // The loader also expands includes, so a broken library file is among the errors.
    for error in &errors {
        eprintln!("{error}");
    }
    println!(
        "{} scenario(s) valid, {} invalid",
        scenarios.len(),
        errors.len()
    );
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        super::exit_problem()
    })
}
