//! `sparring monitor`: a board's log port (or a saved log), timestamped, panics decoded.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sparring_backtrace::{PanicDecoder, Symbolizer};

/// Print a board's log port with timestamps, ESP-IDF panics decoded with the app ELF.
///
/// Each line prints as `[   1.234] text` (seconds since the monitor started). With `--elf`,
/// a line carrying code addresses is followed by their function, file and line, as
/// `idf.py monitor` prints them: `0x400d1234: app_main at /src/main/main.c:42`, plus
/// ` (inlined by) caller at …` lines. Decoded: Xtensa `Backtrace:` PCs (also the task
/// watchdog's), RISC-V `MEPC`/`RA` and the words of the `Stack memory:` dump that point into
/// code, Xtensa `PC`, `abort() was called at PC 0x…`, and any other address inside the ELF's
/// code. A panic PC the ELF does not know (ROM, another build) prints as `0x…: ?? ??:0`.
///
/// `--input FILE` (`-` for stdin) decodes a saved log instead of a port, e.g. a CI log:
/// `sparring monitor --input uart0.log --elf build/app.elf --no-timestamps`.
/// Ctrl-C ends a port monitor with exit code 0; 2 is a usage error (bad port, not an ELF).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serial port of the board's log UART (/dev/ttyUSB0, a vboard's uart0 pty).
    #[arg(long, required_unless_present = "input", conflicts_with = "input")]
    port: Option<String>,
    /// Baud rate of the port.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// The app ELF the board runs (build/<project>.elf), to decode panic addresses.
    #[arg(long, value_name = "APP.elf")]
    elf: Option<PathBuf>,
    /// A saved log to decode instead of reading a port; `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print lines without the `[seconds]` prefix.
    #[arg(long)]
    no_timestamps: bool,
}

/// How long a port read waits before the monitor checks for Ctrl-C again.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let symbolizer = args
        .elf
        .as_deref()
        .map(|elf| Symbolizer::from_path(elf).with_context(|| format!("--elf {}", elf.display())))
        .transpose()?;
    let mut printer = Printer {
        decoder: symbolizer.as_ref().map(PanicDecoder::new),
        started: (!args.no_timestamps).then(Instant::now),
        out: std::io::stdout().lock(),
    };
    match (&args.input, &args.port) {
        (Some(input), _) => print_log(input, &mut printer)?,
        (None, Some(port)) => monitor_port(port, args.baud, &mut printer)?,
        (None, None) => anyhow::bail!("--port or --input is required"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints lines, each followed by its decoded addresses.
struct Printer<'elf, W> {
    decoder: Option<PanicDecoder<'elf>>,
    started: Option<Instant>,
    out: W,
}

impl<W: Write> Printer<'_, W> {
    fn line(&mut self, raw: &[u8]) -> std::io::Result<()> {
        // Boot ROM output at another baud rate, or noise, must not end the monitor.
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\r', '\n']);
        let stamp = self
            .started
            .map(|started| format!("[{:8.3}] ", started.elapsed().as_secs_f64()))
            .unwrap_or_default();
        writeln!(self.out, "{stamp}{text}")?;
        if let Some(decoder) = &self.decoder {
            for decoded in decoder.feed(text) {
                writeln!(self.out, "{stamp}{decoded}")?;
            }
        }
        self.out.flush()
    }
}

fn print_log(input: &Path, printer: &mut Printer<'_, impl Write>) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(input)
            .with_context(|| format!("--input {}: cannot be opened", input.display()))?;
        Box::new(BufReader::new(file))
    };
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("reading {}", input.display()))?;
        printer.line(&line)?;
    }
    Ok(())
}

fn monitor_port(
    name: &str,
    baud: u32,
    printer: &mut Printer<'_, impl Write>,
) -> anyhow::Result<()> {
    let mut port = serialport::new(name, baud)
        .timeout(READ_TIMEOUT)
        .open()
        .with_context(|| format!("--port {name}: cannot be opened"))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    super::watch_ctrl_c(interrupted.clone(), None);
    // On stderr, so stdout stays the board's log; also tells scripts the port is open.
    eprintln!("--- sparring monitor on {name} at {baud} baud, Ctrl-C ends it");
    let mut pending = Vec::new();
    let mut chunk = [0u8; 1024];
    while !interrupted.load(Ordering::SeqCst) {
        match port.read(&mut chunk) {
            // End of file: the device hung up (timeouts are errors, not empty reads).
            Ok(0) => break,
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            printer.line(&line)?;
        }
    }
    if !pending.is_empty() {
        printer.line(&pending)?;
    }
    Ok(())
}
