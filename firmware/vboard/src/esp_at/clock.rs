//! `asctime()` formatting of the board clock, as `AT+CIPSNTPTIME?` prints it.
//! Hand-written (days-to-civil, H. Hinnant's algorithm) because the vboard crate has no
//! date library and this is the only date it formats.

use std::time::{SystemTime, UNIX_EPOCH};

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Thu Sep  2 18:57:03 2021` for `now` shifted by `tz_hours`; times before 1970 print 1970.
pub fn asctime(now: SystemTime, tz_hours: i64) -> String {
    let utc = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let local = i64::try_from(utc)
        .unwrap_or(i64::MAX / 2)
        .saturating_add(tz_hours * 3600)
        .max(0);
    let (days, secs) = (local / 86_400, local % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        year
    )
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (non-negative).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
