//! Log snapshots in insta's file format (`scenarios/snapshots/<id>__<name>.snap`), so
//! `cargo insta review` accepts changes as it does for tests. insta's assertion macros are not
//! used: they panic on a mismatch and belong inside a test harness, while a run must record
//! the change as a failed scenario and go on. A changed log is written beside the snapshot as
//! `.snap.new`, which is what `cargo insta review` looks for.

use std::path::{Path, PathBuf};

use regex::Regex;

/// What comparing a log with its snapshot found.
#[derive(Debug)]
pub enum SnapshotOutcome {
    Matched,
    /// No snapshot existed, or `--update-snapshots` replaced it.
    Written,
    Changed {
        diff: Vec<String>,
        pending: PathBuf,
    },
}

/// Replaces what differs from run to run: timestamps, heap figures, ports, MACs, clocks,
/// fingerprints.
/// `placeholders` replace values that differ between labs (host names or addresses, Wi-Fi
/// credentials) before the rules run.
pub fn normalise(lines: &[String], placeholders: &[(String, &str)]) -> String {
    let rules: [(&str, &str); 9] = [
        (r"^([EWID]) \(\d+\)", "$1 (T)"),
        // Certificate lengths vary with their signatures; ports are picked at run time.
        (r#"(AT\+SYSFLASH=1,"[a-z_]+",0,)\d+"#, "${1}<len>"),
        (r#"(AT\+MQTTCONN=0,"[^"]*",)\d+"#, "${1}<port>"),
        (r"\+SYSRAM:\d+,\d+", "+SYSRAM:<free>,<min>"),
        (r"\+CIPSNTPTIME:.*", "+CIPSNTPTIME:<time>"),
        (r#"("|:)(\d{4,5})(")"#, "$1<port>$3"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
        (r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", "<mac>"),
        (r"\b[0-9a-f]{16,}\b", "<hex>"),
    ];
    let compiled: Vec<(Regex, &str)> = rules
        .iter()
        .filter_map(|(pattern, with)| Regex::new(pattern).ok().map(|r| (r, *with)))
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut line = line.clone();
        for (value, placeholder) in placeholders {
            line = line.replace(value.as_str(), placeholder);
        }
        for (regex, with) in &compiled {
            line = regex.replace_all(&line, *with).into_owned();
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn file_text(source: &Path, name: &str, content: &str) -> String {
    format!(
        "---\nsource: {}\nexpression: {name}\n---\n{content}",
        source.display()
    )
}

/// The content of a `.snap` file (after its header).
fn content_of(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("---\n")?;
    let end = rest.find("\n---\n")?;
    Some(&rest[end + 5..])
}

/// Compares `content` with the snapshot `name` in `dir`, writing as the outcome requires.
pub fn check(
    dir: &Path,
    name: &str,
    source: &Path,
    content: &str,
    update: bool,
) -> std::io::Result<SnapshotOutcome> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.snap"));
    let pending = dir.join(format!("{name}.snap.new"));
    let existing = std::fs::read_to_string(&path).ok();
    let old = existing.as_deref().and_then(content_of);
    if old == Some(content) {
        let _ = std::fs::remove_file(&pending);
        return Ok(SnapshotOutcome::Matched);
    }
    if update || old.is_none() {
        std::fs::write(&path, file_text(source, name, content))?;
        let _ = std::fs::remove_file(&pending);
        return Ok(SnapshotOutcome::Written);
    }
    std::fs::write(&pending, file_text(source, name, content))?;
    let old: Vec<&str> = old.unwrap_or("").lines().collect();
    let new: Vec<&str> = content.lines().collect();
    let diff = (0..old.len().max(new.len()))
        .filter_map(|i| match (old.get(i), new.get(i)) {
            (a, b) if a == b => None,
            (a, b) => Some(format!(
                "line {}: -{} +{}",
                i + 1,
                a.unwrap_or(&""),
                b.unwrap_or(&"")
            )),
        })
        .take(10)
        .collect();
    Ok(SnapshotOutcome::Changed { diff, pending })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_what_varies_between_runs() {
        let lines = [
            "I (1234) esp-tls: x".to_owned(),
            "+SYSRAM:148408,84044".to_owned(),
            "+MQTTCONNECTED:0,5,\"broker.sparring.test\",\"41234\",\"\",1".to_owned(),
        ];
        assert_eq!(
            normalise(&lines, &[]),
            "I (T) esp-tls: x\n+SYSRAM:<free>,<min>\n+MQTTCONNECTED:0,5,\"broker.sparring.test\",\"<port>\",\"\",1\n"
        );
    }

    #[test]
    fn new_matching_and_changed_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new("scenarios/x.toml");
        let first = check(dir.path(), "x__at", src, "a\nb\n", false).unwrap();
        assert!(matches!(first, SnapshotOutcome::Written));
        let same = check(dir.path(), "x__at", src, "a\nb\n", false).unwrap();
        assert!(matches!(same, SnapshotOutcome::Matched));
        let changed = check(dir.path(), "x__at", src, "a\nc\n", false).unwrap();
        let SnapshotOutcome::Changed { diff, pending } = changed else {
            panic!("expected a change");
        };
        assert_eq!(diff, vec!["line 2: -b +c".to_owned()]);
        assert!(pending.exists());
        assert!(matches!(
            check(dir.path(), "x__at", src, "a\nc\n", true).unwrap(),
            SnapshotOutcome::Written
        ));
    }
}
