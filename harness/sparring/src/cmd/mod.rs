//! One module per subcommand. Each exposes an `Args` struct (clap) and
//! `run(args) -> anyhow::Result<ExitCode>`; errors returned from `run` are
//! usage or configuration errors and exit with [`exit_usage`].

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub mod boards;
pub mod certs;
pub mod check;
pub mod flash;
pub mod image;
pub mod monitor;
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

/// Ctrl-C sets `flag` (and prints `note`) instead of ending the process. The handler is in
/// place when this returns, so a Ctrl-C that comes right after is not lost.
pub fn watch_ctrl_c(flag: Arc<AtomicBool>, note: Option<&'static str>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    // tokio installs the signal handler on the future's first poll.
    let already = runtime.block_on(async {
        tokio::select! {
            biased;
            result = &mut ctrl_c => Some(result),
            () = std::future::ready(()) => None,
        }
    });
    let on_ctrl_c = move || {
        if let Some(note) = note {
            eprintln!("{note}");
        }
        flag.store(true, Ordering::SeqCst);
    };
    match already {
        Some(Ok(())) => on_ctrl_c(),
        // No handler could be installed: Ctrl-C ends the process as it always does.
        Some(Err(_)) => {}
        None => {
            std::thread::spawn(move || {
                if runtime.block_on(ctrl_c).is_ok() {
                    on_ctrl_c();
                }
            });
        }
    }
}
