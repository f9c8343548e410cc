//! The self-contained HTML qualification report: board identity, sparring version, CA
//! fingerprints, and every scenario's verdict, reason, evidence and observed facts. No scripts,
//! no external resources: it opens offline and archives as one file.

use std::fmt::Write;

use sparring_runner::events::Verdict;

use crate::RunRecord;

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.pass{background:#e6f4ea}.pass-with-warnings{background:#fff4d6}.fail,.error{background:#fde2e1}.skipped{background:#eee}\
pre{margin:0;white-space:pre-wrap;font-size:12px}code{font-size:12px}";

pub fn render(record: &RunRecord) -> String {
    let mut h = String::new();
    let count = |v: Verdict| record.results.iter().filter(|r| r.verdict == v).count();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sparring qualification report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>sparring qualification report</h1><p id=\"summary\">sparring {} — {} scenarios: {} pass, {} pass with warnings, {} fail, {} error, {} skipped — {:.1} s{}</p>",
        esc(&record.sparring_version),
        record.results.len(),
        count(Verdict::Pass),
        count(Verdict::PassWithWarnings),
        count(Verdict::Fail),
        count(Verdict::Error),
        count(Verdict::Skipped),
        record.elapsed_ms as f64 / 1000.0,
        if record.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    h.push_str("<h2>Boards</h2><table><tr><th>board</th><th>chip</th><th>MAC</th><th>flash</th><th>firmware</th><th>version</th><th>ELF SHA-256</th></tr>");
    for b in &record.boards {
        let firmware = b.firmware.as_ref();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&b.name),
            esc(&b.chip),
            esc(&b.mac),
            esc(&b.flash_size),
            esc(firmware.map_or("(not seen booting)", |f| f.project.as_str())),
            esc(firmware.map_or("", |f| f.version.as_str())),
            esc(firmware.map_or("", |f| f.elf_sha256.as_str()))
        );
    }
    h.push_str("</table><h2>Certificate authorities</h2><table><tr><th>CA</th><th>SHA-256 fingerprint</th></tr>");
    for (name, fp) in &record.ca_fingerprints {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td></tr>",
            esc(name),
            esc(fp)
        );
    }
    h.push_str("</table><h2>Scenarios</h2><table><tr><th>scenario</th><th>verdict</th><th>reason and evidence</th><th>observed facts</th></tr>");
    for r in &record.results {
        let refs: Vec<String> = r
            .references
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let f = &r.facts;
        let _ = write!(
            h,
            "<tr class=\"{v}\"><td><b>{id}</b><br>{title}<br><small>{board} · {refs}</small></td><td>{v}</td><td>{reason}<pre>{evidence}</pre></td>\
             <td><small>TLS {tls} · suites offered {suites} · SNI {sni} · alerts sent {alerts} · handshakes {hs} · connect attempts {att} · backoff {bo} ms · free heap {free} · low-water {low}</small></td></tr>",
            v = r.verdict.name(),
            id = esc(&r.id),
            title = esc(&r.title),
            board = esc(&r.board),
            refs = esc(&refs.join(", ")),
            reason = esc(&r.reason),
            evidence = esc(&r.evidence.join("\n")),
            tls = esc(&f.tls_versions_offered.join(", ")),
            suites = f.cipher_suites_offered,
            sni = esc(&f.sni_sent.join(", ")),
            alerts = esc(&f.alerts_sent.join(", ")),
            hs = f.handshakes,
            att = f.connect_attempts,
            bo = optional(f.last_backoff_ms),
            free = optional(f.free_heap),
            low = optional(f.heap_low_water),
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// A fact that may not have been observed.
fn optional(value: Option<u32>) -> String {
    value.map_or_else(|| "not seen".to_owned(), |v| v.to_string())
}
