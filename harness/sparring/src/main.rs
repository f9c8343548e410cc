//! The `sparring` command line: argument parsing, dispatch and exit codes only.
//! Every subcommand lives in `cmd/<name>.rs` and calls into the library crates;
//! nothing here is logic a test would want to reach.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// sparring — a sparring partner for IoT firmware.
///
/// Flashes ESP32-family firmware onto boards (or a virtual board), serves it a
/// mutual-TLS MQTT broker, an HTTPS OTA server and SNTP backed by certificate
/// authorities sparring generates itself, and checks how the firmware behaves
/// when the network has its worst day.
///
/// Exit codes: 0 success, 1 a problem was found (failed scenario, bad
/// certificate), 2 usage or configuration error, 130 a run stopped by Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "sparring", version)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Each subcommand's help (short and long) is the doc comment of its `Args`.
enum Command {
    Run(cmd::run::Args),
    Certs(cmd::certs::Args),
    Image(cmd::image::Args),
    Vboard(cmd::vboard::Args),
    Serve(cmd::serve::Args),
    Check(cmd::check::Args),
    Boards(cmd::boards::Args),
    New(cmd::new::Args),
    Monitor(cmd::monitor::Args),
    Flash(cmd::flash::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let outcome = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Certs(args) => cmd::certs::run(args),
        Command::Image(args) => cmd::image::run(args),
        Command::Vboard(args) => cmd::vboard::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Boards(args) => cmd::boards::run(args),
        Command::New(args) => cmd::new::run(args),
        Command::Monitor(args) => cmd::monitor::run(args),
        Command::Flash(args) => cmd::flash::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "reading X: permission denied".
            eprintln!("error: {error:#}");
            cmd::exit_usage()
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // rumqttd logs every closed connection as an ERROR; the TLS gate already records each
    // connection precisely, so its own log stays off unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},rumqttd=off")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    /// clap checks the whole command tree (duplicate names, bad defaults) only when asked.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
