//! Parsing one AT command line into a typed [`AtCommand`], and the AT error codes
//! (`ERR CODE:0x01SSEEEE`, esp-facts §4.6) a malformed line maps to.

use thiserror::Error;

/// How a command was invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// `AT+X`
    Execute,
    /// `AT+X?`
    Query,
    /// `AT+X=?`
    Test,
    /// `AT+X=a,"b",…` (basic commands such as `ATE0` are `Set` with one integer).
    Set(Vec<Param>),
}

/// One parameter of a set command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// Nothing between two commas (optional parameter left out).
    Omitted,
    Int(i64),
    /// A double-quoted string, escapes (`\"`, `\,`, `\\`) resolved; raw bytes, not UTF-8.
    Str(Vec<u8>),
}

/// A parsed command line: `name` is what follows `AT` (`""` for `AT`, `"+GMR"`, `"E"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtCommand {
    pub name: String,
    pub kind: CommandKind,
}

/// Why a command was refused; [`AtError::code`] is the value ESP-AT prints after `AT+SYSLOG=1`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AtError {
    #[error("line is not terminated by CR LF")]
    NoTerminator,
    #[error("line does not start with AT")]
    NoAt,
    #[error("parameter {0} is too long")]
    ParamLength(u16),
    #[error("parameter {0} has the wrong type")]
    ParamType(u16),
    #[error("expected {need} parameters, got {given}")]
    ParamCount { need: u8, given: u8 },
    #[error("parameter {0} is out of range")]
    ParamInvalid(u16),
    #[error("parameter {0} cannot be parsed")]
    ParamParse(u16),
    #[error("unknown command")]
    Unsupported,
    #[error("command failed (0x{0:04x})")]
    ExecFailed(u16),
    #[error("previous command still running")]
    Busy,
    #[error("operation type not supported by this command")]
    WrongOperation,
}

impl AtError {
    /// `0x01 << 24 | subcategory << 16 | extension` (esp_at_core.h).
    pub fn code(&self) -> u32 {
        let (sub, ext): (u32, u32) = match *self {
            AtError::NoTerminator => (0x02, 0),
            AtError::NoAt => (0x03, 0),
            AtError::ParamLength(i) => (0x04, i.into()),
            AtError::ParamType(i) => (0x05, i.into()),
            AtError::ParamCount { need, given } => (0x06, u32::from(need) << 8 | u32::from(given)),
            AtError::ParamInvalid(i) => (0x07, i.into()),
            AtError::ParamParse(i) => (0x08, i.into()),
            AtError::Unsupported => (0x09, 0),
            AtError::ExecFailed(e) => (0x0A, e.into()),
            AtError::Busy => (0x0B, 0),
            AtError::WrongOperation => (0x0C, 0),
        };
        0x0100_0000 | sub << 16 | ext
    }
}

/// Parses one line (terminator already stripped). Never panics, whatever the bytes.
pub fn parse_line(line: &[u8]) -> Result<AtCommand, AtError> {
    let rest = line.strip_prefix(b"AT").ok_or(AtError::NoAt)?;
    let name_len = match rest.first() {
        // Extended command: `+` and an identifier.
        Some(b'+') => {
            1 + rest[1..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count()
        }
        // Basic command (`ATE0`): letters, then an optional number as its only parameter.
        _ => rest.iter().take_while(|b| b.is_ascii_alphabetic()).count(),
    };
    let (name_bytes, tail) = rest.split_at(name_len);
    if name_bytes == b"+" {
        return Err(AtError::Unsupported);
    }
    // Safe: only ASCII bytes were taken into the name.
    let name: String = name_bytes.iter().map(|b| char::from(*b)).collect();
    let kind = if name.starts_with('+') {
        match tail {
            b"" => CommandKind::Execute,
            b"?" => CommandKind::Query,
            b"=?" => CommandKind::Test,
            [b'=', params @ ..] => CommandKind::Set(parse_params(params)?),
            _ => return Err(AtError::Unsupported),
        }
    } else if tail.is_empty() {
        CommandKind::Execute
    } else {
        CommandKind::Set(vec![parse_int(tail).ok_or(AtError::ParamParse(0))?])
    };
    Ok(AtCommand { name, kind })
}

fn parse_params(mut input: &[u8]) -> Result<Vec<Param>, AtError> {
    let mut params = Vec::new();
    loop {
        let index = u16::try_from(params.len()).unwrap_or(u16::MAX);
        let (param, after) = if let Some(quoted) = input.strip_prefix(b"\"") {
            let (text, after) = parse_quoted(quoted).ok_or(AtError::ParamParse(index))?;
            (Param::Str(text), after)
        } else {
            let end = input.iter().position(|b| *b == b',').unwrap_or(input.len());
            let (field, after) = input.split_at(end);
            let param = if field.is_empty() {
                Param::Omitted
            } else {
                parse_int(field).ok_or(AtError::ParamParse(index))?
            };
            (param, after)
        };
        params.push(param);
        match after {
            [] => return Ok(params),
            [b',', more @ ..] => input = more,
            _ => return Err(AtError::ParamParse(index)),
        }
    }
}

/// Reads a quoted string after its opening quote; returns the text and what follows the
/// closing quote, or `None` when the quote is never closed.
fn parse_quoted(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut text = Vec::new();
    let mut bytes = input.iter().enumerate();
    while let Some((i, &b)) = bytes.next() {
        match b {
            b'"' => return Some((text, &input[i + 1..])),
            // `\,` `\"` `\\` stand for the character itself; so does any other escaped byte.
            b'\\' => text.push(*bytes.next()?.1),
            _ => text.push(b),
        }
    }
    None
}

fn parse_int(field: &[u8]) -> Option<Param> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().map(Param::Int)
}
