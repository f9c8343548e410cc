//! `sparring new`: write a commented starter scenario.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sparring_runner::scenario::is_valid_id;

/// Write a commented starter scenario, `DIR/NAME.toml`, that `sparring check` accepts.
///
/// The scenario flashes the ESP-AT firmware, provisions the device certificate, joins Wi-Fi
/// and syncs time (`esp-at/prepare.toml` from the step library), connects to the broker over
/// mutual TLS, waits for `+MQTTCONNECTED` and `OK` (anything sent before them is answered
/// `busy p...`), publishes and waits for the broker to see the message. Edit the title, the
/// `[setup]` keys and the steps, then `sparring check DIR` and `sparring run DIR --filter NAME`.
/// Refuses to overwrite an existing file unless `--force`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario id and file name: letters, digits, '-', '_' or '.'.
    name: String,
    /// Directory to write into (created when missing).
    #[arg(long, default_value = "scenarios")]
    dir: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
}

/// `{id}` is replaced by the scenario's name.
const STARTER: &str = r#"# A sparring scenario. Validate it with `sparring check`, run it with
# `sparring run --filter {id}`. Steps and their keys: README.md, "sparring run";
# library files (`include`): README.md, "The step library".
id = "{id}"
title = "TODO: what this scenario shows, in one sentence"
tags = []

# Catalog entries this scenario corresponds to, e.g. device-advisor = "TLS_Connect".
[references]

[board]
personality = "esp-at"
# chips = ["esp32c3"]          # empty or absent: any chip
# at_storage = "mfg-nvs"       # ESP-AT v3.1+ keeps certificates in mfg NVS (AT+SYSMFG)
# requires = ["heap-control"]  # beyond ports and resets: heap-control, defects, lab-network,
                               # power; boards without one skip the scenario

[setup]
# server_profile = "valid"     # the broker's certificate: a `sparring certs` profile
# device_profile = "device-valid"  # the board's client certificate
# client_auth = true           # the broker requires a client certificate
# sntp = true                  # answer SNTP requests
# sntp_offset_secs = 0         # clock skew served, in seconds
# ota_variant = "valid"        # OTA image served: valid, corrupt-byte, wrong-chip, ...
# reserve_heap = 40000         # heap taken from the board first (requires "heap-control")
# defects = []                 # virtual-firmware defects to switch on (requires "defects")
# expect_crash = false         # a crash is expected (its absence fails)

# Flash, provision the device certificate, join Wi-Fi, sync time.
[[steps]]
include = { file = "esp-at/prepare.toml" }

# Configure the MQTT client (scheme 5: mutual TLS) and send AT+MQTTCONN. It does not wait for
# the result: that is the next two steps.
[[steps]]
include = { file = "esp-at/connect-mqtt.toml", vars = { scheme = "5", host = "${broker.host}" } }

# Wait until connected before sending anything else: a command sent while AT+MQTTCONN is
# still running is answered `busy p...`.
[[steps]]
expect = { port = "at", regex = '^\+MQTTCONNECTED:0,', within_ms = 8000 }

[[steps]]
expect = { port = "at", regex = '^OK$', within_ms = 2000 }

[[steps]]
send = { port = "at", line = 'AT+MQTTPUB=0,"sparring/telemetry","hello",1,0' }

[[steps]]
expect = { port = "at", regex = '^OK$', within_ms = 5000 }

# The broker saw the message.
[[steps]]
wait-event = { event = "published", matching = 'topic=sparring/telemetry qos=1 size=5', within_ms = 5000 }
"#;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !is_valid_id(&args.name) {
        bail!(
            "{:?}: expected a name of letters, digits, '-', '_' or '.'",
            args.name
        );
    }
    let path = args.dir.join(format!("{}.toml", args.name));
    if path.exists() && !args.force {
        bail!("{} exists; --force overwrites it", path.display());
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    std::fs::write(&path, STARTER.replace("{id}", &args.name))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
