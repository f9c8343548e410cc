//! The versioned JSON report: the run record as data.

use crate::RunRecord;

/// Bumped whenever a field changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

pub fn render(record: &RunRecord) -> String {
    let value = serde_json::json!({
        "format": "sparring-report",
        "format_version": FORMAT_VERSION,
        "run": record,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}
