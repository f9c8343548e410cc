//! Judging a scenario from what was observed outside the board — its serial ports and the
//! services' events — and nothing else: crashes and resets nobody asked for, warnings a
//! reviewer should see, and the facts the report shows and `assert` steps check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use regex::Regex;
use sparring_backtrace::{Symbolizer, decode_transcript};
use sparring_services::events::{Direction, TlsOutcome};
use sparring_services::{Event, EventKind};
use time::OffsetDateTime;

use crate::crash::{self, Incident};
use crate::events::{Facts, ScenarioResult, Verdict};
use crate::observe::Observed;

/// Crashes and resets nobody asked for fail the scenario with the excerpt, its code addresses
/// decoded with the board's `elf` when there is one.
pub fn judge_incidents(
    observed: &Observed,
    expect_crash: bool,
    allowed_resets: usize,
    elf: Option<&Path>,
    result: &mut ScenarioResult,
) {
    let lines = observed.log.lines();
    let mut resets = 0;
    let mut panic_at = None;
    for (i, line) in lines.iter().enumerate() {
        match crash::detect(&line.text) {
            Some(Incident::RomReset) => resets += 1,
            Some(_) if panic_at.is_none() => panic_at = Some(i),
            _ => {}
        }
    }
    let excerpt = |at: usize| -> Vec<String> {
        lines[at..lines.len().min(at + 12)]
            .iter()
            .map(|l| l.text.clone())
            .collect()
    };
    let failed = !matches!(result.verdict, Verdict::Pass);
    match panic_at {
        Some(at) if !expect_crash => {
            result.verdict = Verdict::Fail;
            result.reason = format!(
                "the board crashed: {}",
                crash::detect(&lines[at].text).map_or_else(String::new, |i| i.to_string())
            );
            result.evidence = with_frames(elf, excerpt(at));
        }
        // The crash a scenario provokes is its evidence: what happened, where in the code.
        Some(at) => result.evidence = with_frames(elf, excerpt(at)),
        None if expect_crash && !failed => {
            result.verdict = Verdict::Fail;
            result.reason = "expected a crash (Guru Meditation / abort), none was seen".into();
        }
        None if resets > allowed_resets + usize::from(expect_crash) && !failed => {
            result.verdict = Verdict::Fail;
            result.reason =
                format!("the board reset {resets} times, the scenario caused {allowed_resets}");
            result.evidence = lines
                .iter()
                .filter(|l| crash::detect(&l.text) == Some(Incident::RomReset))
                .map(|l| l.text.clone())
                .collect();
        }
        None => {}
    }
}

/// Each line of `excerpt` followed by the function, file and line of the addresses it carries
/// (as `idf.py monitor` prints them); an ELF that cannot be read is said so, not fatal.
fn with_frames(elf: Option<&Path>, excerpt: Vec<String>) -> Vec<String> {
    let Some(elf) = elf else {
        return excerpt;
    };
    match Symbolizer::from_path(elf) {
        Ok(symbolizer) => decode_transcript(&symbolizer, &excerpt),
        Err(e) => {
            let mut excerpt = excerpt;
            excerpt.push(format!("(addresses not decoded: {}: {e})", elf.display()));
            excerpt
        }
    }
}

/// A refusal without a TLS alert passes, with a warning (Device Advisor counts it so); so does
/// a handshake with the broker the board completed where the scenario declared
/// `warn_if_connected` (a revoked or CN-only server certificate the real stack accepts).
pub fn judge_warnings(
    observed: &Observed,
    warn_if_connected: Option<&str>,
    result: &mut ScenarioResult,
) {
    for event in &observed.events {
        let EventKind::Tls(record) = &event.kind else {
            continue;
        };
        match (&record.outcome, warn_if_connected) {
            (TlsOutcome::AbortedByPeer { alert: None }, _) => result
                .warnings
                .push("the board closed the TLS connection without sending an alert".into()),
            (TlsOutcome::Established, Some(warning)) if event.service == "mqtt" => {
                result.warnings.push(warning.to_owned());
            }
            _ => {}
        }
    }
    result.warnings.dedup();
    if result.verdict == Verdict::Pass && !result.warnings.is_empty() {
        result.verdict = Verdict::PassWithWarnings;
        result.reason = result.warnings.join("; ");
    }
}

/// The facts of a scenario, from the ports and the services' events.
/// Durations the broker measured are wall time: `time_scale` turns them into board time.
pub fn facts(observed: &Observed, time_scale: u32) -> Facts {
    let mut facts = Facts::default();
    for event in &observed.events {
        match &event.kind {
            EventKind::Tls(r) => {
                facts.handshakes += 1;
                for v in &r.versions_offered {
                    if !facts.tls_versions_offered.contains(v) {
                        facts.tls_versions_offered.push(v.clone());
                    }
                }
                facts.cipher_suites_offered = facts
                    .cipher_suites_offered
                    .max(r.cipher_suites_offered.len());
                let sni = r.sni.clone().unwrap_or_else(|| "(none)".into());
                if !facts.sni_sent.contains(&sni) {
                    facts.sni_sent.push(sni);
                }
                if let TlsOutcome::AbortedByPeer { alert } = &r.outcome {
                    facts
                        .alerts_sent
                        .push(alert.clone().unwrap_or_else(|| "none".into()));
                }
            }
            EventKind::Mqtt(m) if m.direction == Direction::FromDevice && m.packet == "CONNECT" => {
                if let Some(id) = &m.client_id
                    && !facts.mqtt_client_ids.contains(id)
                {
                    facts.mqtt_client_ids.push(id.clone());
                }
            }
            EventKind::Http(_) => facts.http_requests += 1,
            _ => {}
        }
    }
    let attempts = broker_attempts(&observed.events);
    facts.connect_attempts = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
    facts.last_backoff_ms = last_backoff_ms(&attempts).map(|ms| ms.saturating_mul(time_scale));
    if let Some((free, low)) = heap_report(observed) {
        facts.free_heap = Some(free);
        facts.heap_low_water = Some(low);
    }
    facts
}

/// One connection of the board to the broker, as the gate and the broker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When the TLS handshake began (the gate's record ends it; its duration goes back).
    pub started: OffsetDateTime,
    /// The last thing seen on that connection.
    pub ended: OffsetDateTime,
}

/// The board's connections to the MQTT service, in order, one per TCP peer address.
pub fn broker_attempts(events: &[Event]) -> Vec<Attempt> {
    let mut by_peer: BTreeMap<SocketAddr, Attempt> = BTreeMap::new();
    let mut order: Vec<SocketAddr> = Vec::new();
    for event in events.iter().filter(|e| e.service == "mqtt") {
        match &event.kind {
            EventKind::Tls(r) => {
                let started = event.at - time::Duration::milliseconds(r.duration_ms as i64);
                by_peer.insert(
                    event.peer,
                    Attempt {
                        started,
                        ended: event.at,
                    },
                );
                order.push(event.peer);
            }
            EventKind::Mqtt(_) => {
                if let Some(attempt) = by_peer.get_mut(&event.peer) {
                    attempt.ended = attempt.ended.max(event.at);
                }
            }
            _ => {}
        }
    }
    order
        .iter()
        .filter_map(|peer| by_peer.get(peer).copied())
        .collect()
}

/// From the end of the last attempt that failed or lost its session (the broker closed it, a
/// keep-alive ran out) to the start of the attempt after it: the device's reconnect wait.
pub fn last_backoff_ms(attempts: &[Attempt]) -> Option<u32> {
    attempts
        .windows(2)
        .rev()
        .map(|pair| {
            (pair[1].started - pair[0].ended)
                .whole_milliseconds()
                .max(0)
        })
        .next()
        .map(|ms| u32::try_from(ms).unwrap_or(u32::MAX))
}

/// Packets the board sent again, as the broker saw them: PUBLISHes flagged DUP, and
/// SUBSCRIBE, UNSUBSCRIBE or PUBREL repeating a packet id already seen on that connection
/// (esp-mqtt resends those without a flag).
pub fn resent_packets(events: &[Event]) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    events
        .iter()
        .filter(|e| e.service == "mqtt")
        .filter_map(|e| match &e.kind {
            EventKind::Mqtt(m) if m.direction == Direction::FromDevice => Some((e.peer, m)),
            _ => None,
        })
        .filter(|(peer, m)| match m.packet.as_str() {
            "PUBLISH" => m.dup == Some(true),
            "SUBSCRIBE" | "UNSUBSCRIBE" | "PUBREL" => {
                !seen.insert((*peer, m.packet.clone(), m.packet_id))
            }
            _ => false,
        })
        .count()
}

/// The firmware's last heap report: ESP-AT's `+SYSRAM:<free>,<min free>` (AT port), or an
/// app's `free heap: N` log line (then the minimum is not known and equals it).
pub fn heap_report(observed: &Observed) -> Option<(u32, u32)> {
    let sysram = Regex::new(r"^\+SYSRAM:(\d+),(\d+)").ok()?;
    let app = Regex::new(r"(?i)free heap(?: size)?[:=]?\s*(\d+)").ok()?;
    let from_at = observed.at.lines().iter().rev().find_map(|l| {
        let caps = sysram.captures(&l.text)?;
        Some((caps[1].parse().ok()?, caps[2].parse().ok()?))
    });
    from_at.or_else(|| {
        observed.log.lines().iter().rev().find_map(|l| {
            let free: u32 = app.captures(&l.text)?[1].parse().ok()?;
            Some((free, free))
        })
    })
}
