//! `sparring certs`: the certificate factory, AtPKI bins, and certificate diagnosis.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use esp_formats::atpki::{self, ItemType};
use sparring_pki::inspect::{self, Checks};
use sparring_pki::{KeyKind, KeySource, Options, Pki, Side};

/// Generate the test PKI, build ESP-AT PKI bins, or inspect certificate files.
///
/// Without a subcommand, writes a complete test PKI: a root CA name-constrained to the
/// given hosts and IPs, an intermediate CA, an unrelated root, a CRL, every server-side
/// fault profile (expired, wrong-host, missing-intermediate, ...) and device-side profile
/// (device-valid, device-expired, ...) as PEM and DER with PKCS#8 keys (mode 0600), full
/// chains, ESP-AT `mqtt_ca.bin`/`mqtt_cert.bin`/`mqtt_key.bin` for every device profile, and
/// `manifest.json` saying what each profile gets wrong and how a correct device must react.
/// The output directory is replaced all at once: a failed run leaves the previous set intact.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,

    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Output directory (replaced as a whole).
    #[arg(long, default_value = "certs/out")]
    out: PathBuf,
    /// DNS name devices use to reach the broker / OTA server. Repeatable. Real boards reach
    /// the host by its LAN name or address: give it here (the first is the server
    /// certificates' CN). Default: broker.sparring.test, localhost, ota.sparring.test (with
    /// --ip 127.0.0.1).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// IP address devices use to reach the broker / OTA server. Repeatable.
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<IpAddr>,
    /// Device id: the CN of the device certificate (and the MQTT client id a CN policy expects).
    #[arg(long, default_value = "sparring-dut-1")]
    device_id: String,
    /// Key type of every certificate (the rsa-4096 and rsa-1024 profiles have RSA-4096 and
    /// RSA-1024 leaves, sha1-signature an RSA-2048 intermediate). RSA keys are cached in
    /// $SPARRING_KEY_CACHE or ~/.cache/sparring/keys.
    #[arg(long, default_value = "ec-p256", value_parser = ["ec-p256", "rsa-2048", "rsa-4096"])]
    key: String,
    /// Generate RSA keys afresh instead of using the key cache.
    #[arg(long)]
    no_key_cache: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Build or parse an ESP-AT PKI bin (the format of ESP-AT's AtPKI.py), as written to the
    /// mqtt_ca / mqtt_cert / mqtt_key / client_* / server_* partitions with AT+SYSFLASH.
    ///
    /// Build: `sparring certs atpki OUT.bin ca ca.pem cert client.pem key client.key`.
    /// Items are grouped by type in the order each type first appears and numbered from 0
    /// per type, as AtPKI.py does; file contents are stored as given (PEM or DER).
    Atpki(AtpkiArgs),
    /// Tell what a certificate file is and what is wrong with it: PEM, DER, ESP-AT PKI bin
    /// or garbage; subject, issuer, names, validity, key, signature, fingerprint; with --ca
    /// whether the chain verifies (and which link is missing or expired); with --host
    /// whether the name matches. Exit code 1 when a problem is found.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
struct AtpkiArgs {
    /// List the items of FILE.bin instead of building one.
    #[arg(long, value_name = "FILE.bin", conflicts_with = "spec")]
    parse: Option<PathBuf>,
    /// OUT.bin followed by TYPE FILE pairs; TYPE is ca, cert or key.
    #[arg(value_name = "OUT.bin TYPE FILE", num_args = 0.., required_unless_present = "parse")]
    spec: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Files to inspect (PEM, DER, ESP-AT PKI bin).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// CA certificate(s) to verify the chain against (PEM or DER).
    #[arg(long, value_name = "ROOT.pem")]
    ca: Option<PathBuf>,
    /// Host name or IP address the certificate must be valid for.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        None => generate(args.generate),
        Some(Sub::Atpki(a)) => atpki_command(a),
        Some(Sub::Inspect(a)) => inspect_command(a),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let mut options = Options::default();
    if !args.hosts.is_empty() || !args.ips.is_empty() {
        options.hosts = args.hosts;
        options.ips = args.ips;
    }
    options.device_id = args.device_id;
    options.key =
        KeyKind::from_name(&args.key).with_context(|| format!("unknown --key {}", args.key))?;
    options.key_cache = if args.no_key_cache {
        None
    } else {
        KeySource::default_cache_dir()
    };
    let pki = Pki::generate(options)?;
    let manifest = pki
        .write(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let count = |side| manifest.profiles.iter().filter(|p| p.side == side).count();
    println!(
        "wrote {}: root CA {} (sha256 {}), {} server profiles, {} device profiles, CRL, ESP-AT PKI bins, manifest.json",
        args.out.display(),
        manifest.authorities.root.certificate.subject,
        manifest.authorities.root.certificate.sha256,
        count(Side::Server),
        count(Side::Device),
    );
    println!(
        "give devices {} as their CA",
        args.out.join(&manifest.authorities.root.cert.pem).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn atpki_command(args: AtpkiArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.parse {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let items = atpki::parse(&bytes)
            .with_context(|| format!("{} is not a valid PKI bin", path.display()))?;
        println!("{}: {} items", path.display(), items.len());
        for item in items {
            let report = inspect::inspect("", &item.content, &Checks::default());
            let what = report
                .contents
                .first()
                .cloned()
                .unwrap_or_else(|| "unrecognised content".into());
            println!(
                "  {} id {}: {} bytes, {} {}",
                item.item_type,
                item.id,
                item.content.len(),
                report.format,
                what
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some((out, pairs)) = args.spec.split_first() else {
        bail!("expected OUT.bin followed by TYPE FILE pairs");
    };
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        bail!(
            "expected TYPE FILE pairs after {out} (TYPE is ca, cert or key), got {} arguments",
            pairs.len()
        );
    }
    let mut inputs = Vec::new();
    for pair in pairs.chunks(2) {
        let item_type = ItemType::from_name(&pair[0]).with_context(|| {
            format!(
                "unknown item type {:?} before {}: expected ca, cert or key",
                pair[0], pair[1]
            )
        })?;
        let content = std::fs::read(&pair[1]).with_context(|| format!("reading {}", pair[1]))?;
        inputs.push((item_type, content));
    }
    let bin = atpki::build(&inputs)?;
    std::fs::write(out, &bin).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}: {} items, {} bytes", inputs.len(), bin.len());
    Ok(ExitCode::SUCCESS)
}

fn inspect_command(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut checks = Checks {
        host: args.host,
        ..Checks::default()
    };
    if let Some(ca) = &args.ca {
        let bytes = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
        let report = inspect::inspect(&ca.display().to_string(), &bytes, &Checks::default());
        if report.certificates.is_empty() {
            bail!(
                "--ca {}: no certificate found ({})",
                ca.display(),
                report.format
            );
        }
        checks.ca = inspect::certificates(&bytes);
    }
    let mut problem = false;
    for path in &args.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report = inspect::inspect(&path.display().to_string(), &bytes, &checks);
        print!("{report}");
        problem |= report.has_problem();
    }
    Ok(if problem {
        super::exit_problem()
    } else {
        ExitCode::SUCCESS
    })
}
