//! Serial capture of one board port: every byte kept, split into timestamped lines.
//!
//! Expectations search from a cursor and return a new cursor; they never remove
//! anything, so a later step (or a snapshot, or the crash detector) still sees
//! every line.

use std::time::Duration;

/// One complete line (without its line ending), stamped with the time since the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedLine {
    pub at: Duration,
    pub text: String,
}

/// Everything received on one port.
#[derive(Debug, Default)]
pub struct Capture {
    raw: Vec<u8>,
    lines: Vec<CapturedLine>,
    /// Bytes of the line still being received.
    partial: Vec<u8>,
}

/// A position in a capture's lines: expectations search from here onwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(usize);

impl Capture {
    /// Appends received bytes; completes a line at each `\n` (a trailing `\r` is dropped).
    pub fn push(&mut self, at: Duration, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        for &byte in bytes {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.lines.push(CapturedLine {
                    at,
                    text: String::from_utf8_lossy(&line).into_owned(),
                });
            } else {
                self.partial.push(byte);
            }
        }
    }

    /// The line still being received (a prompt such as `>` never ends in a newline).
    pub fn partial(&self) -> &str {
        std::str::from_utf8(&self.partial).unwrap_or("")
    }

    /// Every byte received, as received (for the raw log file).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Complete lines received so far.
    pub fn lines(&self) -> &[CapturedLine] {
        &self.lines
    }

    /// The cursor after the last complete line: "from now on".
    pub fn end(&self) -> Cursor {
        Cursor(self.lines.len())
    }

    /// The first line at or after `from` matching `regex`, and the cursor just past it. The
    /// line still being received counts as the next line (a `>` prompt has no newline); the
    /// cursor past it also passes the line it becomes once complete.
    pub fn find(&self, from: Cursor, regex: &regex::Regex) -> Option<(&str, Cursor)> {
        let complete = self
            .lines
            .iter()
            .enumerate()
            .skip(from.0)
            .map(|(index, line)| (line.text.as_str(), Cursor(index + 1)));
        let partial = (from.0 <= self.lines.len() && !self.partial.is_empty())
            .then(|| (self.partial(), Cursor(self.lines.len() + 1)));
        complete
            .chain(partial)
            .find(|(text, _)| regex.is_match(text))
    }

    /// Complete lines from `from` on (for a failed expectation's evidence).
    pub fn lines_from(&self, from: Cursor) -> &[CapturedLine] {
        &self.lines[from.0.min(self.lines.len())..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn lines_are_split_across_chunks_and_raw_bytes_kept() {
        let mut capture = Capture::default();
        capture.push(ms(1), b"rea");
        capture.push(ms(2), b"dy\r\nOK\r\nbusy");
        assert_eq!(capture.raw(), b"ready\r\nOK\r\nbusy");
        let texts: Vec<&str> = capture.lines().iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["ready", "OK"]);
        assert_eq!(capture.lines()[0].at, ms(2));
    }

    #[test]
    fn finding_does_not_consume_lines_a_later_search_needs() {
        let mut capture = Capture::default();
        capture.push(ms(1), b"OK\r\n+MQTTCONNECTED:0\r\nOK\r\n");
        let ok = regex::Regex::new("^OK$").unwrap();
        let connected = regex::Regex::new(r"^\+MQTTCONNECTED").unwrap();
        let (_, after_ok) = capture.find(Cursor::default(), &ok).unwrap();
        let (_, after_second_ok) = capture.find(after_ok, &ok).unwrap();
        assert_eq!(after_second_ok, capture.end());
        // A search from the start still sees the line both OK searches passed over.
        assert!(capture.find(Cursor::default(), &connected).is_some());
        assert!(capture.find(capture.end(), &ok).is_none());
    }

    #[test]
    fn a_prompt_still_being_received_matches_once() {
        let mut capture = Capture::default();
        capture.push(ms(1), b"OK\r\n>");
        let prompt = regex::Regex::new("^>$").unwrap();
        let (text, past_prompt) = capture.find(Cursor::default(), &prompt).unwrap();
        assert_eq!(text, ">");
        capture.push(ms(2), b"\r\nRecv 5 bytes\r\n");
        // The prompt's line, now complete, is behind the cursor its match returned.
        assert!(capture.find(past_prompt, &prompt).is_none());
        let recv = regex::Regex::new("^Recv").unwrap();
        assert!(capture.find(past_prompt, &recv).is_some());
    }
}
