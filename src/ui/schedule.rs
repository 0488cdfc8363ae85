//! Rotation schedules for people: a cron pattern in words and its next occurrences, computed by
//! the rotator's own [`Schedule`] (so the preview is what the rotator will do, not a guess).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::rotation::schedule::Schedule;

/// What the static-role form previews: the schedule in words and its next `count` times.
#[derive(Debug, serde::Serialize)]
pub struct Preview {
    pub words: String,
    pub next: Vec<DateTime<Utc>>,
}

/// Checks `cron` (and `window`) as a static role write would, and lists the next `count` times
/// after `from`. The error is the one the API would answer, naming the field.
pub fn preview(
    cron: &str,
    window: Option<Duration>,
    from: DateTime<Utc>,
    count: usize,
) -> Result<Preview> {
    let schedule = Schedule::from_fields(None, Some(cron), window)?;
    let mut next = Vec::with_capacity(count);
    let mut at = from;
    for _ in 0..count {
        at = schedule.next_after(at)?;
        next.push(at);
    }
    Ok(Preview {
        words: describe(cron, window),
        next,
    })
}

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A day-of-week field value (`0`-`7`, `SUN`..) as its name.
fn day_name(value: &str) -> String {
    if let Ok(n) = value.parse::<usize>() {
        return DAYS
            .get(n % 7)
            .map_or(value.to_owned(), |d| (*d).to_owned());
    }
    DAYS.iter()
        .find(|d| d[..3].eq_ignore_ascii_case(value))
        .map_or(value.to_owned(), |d| (*d).to_owned())
}

fn month_name(value: &str) -> String {
    if let Ok(n) = value.parse::<usize>() {
        return MONTHS
            .get(n.wrapping_sub(1))
            .map_or(value.to_owned(), |m| (*m).to_owned());
    }
    MONTHS
        .iter()
        .find(|m| m[..3].eq_ignore_ascii_case(value))
        .map_or(value.to_owned(), |m| (*m).to_owned())
}

/// A list field (`1,3`, `MON-FRI`) in words, each item named by `name`.
fn list(field: &str, name: fn(&str) -> String) -> String {
    let items: Vec<String> = field
        .split(',')
        .map(|item| match item.split_once('-') {
            Some((a, b)) => format!("{} to {}", name(a), name(b)),
            None => name(item),
        })
        .collect();
    match items.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        [] => String::new(),
    }
}

fn is_number(field: &str) -> bool {
    !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit())
}

/// A cron pattern in words, e.g. `0 3 * * SUN` as "at 03:00 UTC, on Sunday". Patterns the
/// sentence cannot say simply are described field by field; the next times shown beside it are
/// exact either way.
pub fn describe(cron: &str, window: Option<Duration>) -> String {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let (seconds, rest) = match fields.len() {
        6 => (Some(fields[0]), &fields[1..]),
        _ => (None, &fields[..]),
    };
    let mut words = if let [minute, hour, dom, month, dow] = rest {
        let mut time = match (is_number(minute), is_number(hour), seconds) {
            (true, true, None | Some("0")) => format!(
                "at {:02}:{:02} UTC",
                hour.parse::<u32>().unwrap_or(0),
                minute.parse::<u32>().unwrap_or(0)
            ),
            _ => {
                let part = |field: &str, unit: &str| match field {
                    "*" => format!("every {unit}"),
                    f if f.starts_with("*/") => format!("every {} {unit}s", &f[2..]),
                    f => format!("{unit} {f}"),
                };
                let mut parts = vec![];
                if let Some(s) = seconds {
                    parts.push(part(s, "second"));
                }
                parts.push(part(minute, "minute"));
                parts.push(part(hour, "hour"));
                format!("{} (UTC)", parts.join(", "))
            }
        };
        if *dom != "*" {
            time.push_str(&format!(", on day {dom} of the month"));
        }
        if *month != "*" {
            time.push_str(&format!(", in {}", list(month, month_name)));
        }
        if *dow != "*" && *dow != "?" {
            time.push_str(&format!(", on {}", list(dow, day_name)));
        }
        if *dom == "*" && *month == "*" && (*dow == "*" || *dow == "?") && is_number(hour) {
            time.push_str(", every day");
        }
        time
    } else {
        format!("cron {cron}")
    };
    if let Some(window) = window {
        words.push_str(&format!(
            "; a rotation may start up to {} after each time, or waits for the next",
            humantime::format_duration(window)
        ));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn common_patterns_read_as_sentences() {
        assert_eq!(describe("0 3 * * SUN", None), "at 03:00 UTC, on Sunday");
        assert_eq!(describe("30 2 * * *", None), "at 02:30 UTC, every day");
        assert_eq!(
            describe("0 4 1 * *", Some(Duration::from_secs(7200))),
            "at 04:00 UTC, on day 1 of the month; a rotation may start up to 2h after each time, or waits for the next"
        );
        assert_eq!(
            describe("0 1 * * MON-FRI", None),
            "at 01:00 UTC, on Monday to Friday"
        );
        assert_eq!(
            describe("*/15 * * * *", None),
            "every 15 minutes, every hour (UTC)"
        );
    }

    #[test]
    fn the_preview_lists_the_rotator_s_next_times_and_refuses_what_a_write_refuses() {
        let from = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        let p = preview("0 3 * * SUN", None, from, 5).unwrap();
        let expected: Vec<_> = [5, 12, 19, 26]
            .iter()
            .map(|d| Utc.with_ymd_and_hms(2025, 1, *d, 3, 0, 0).unwrap())
            .chain([Utc.with_ymd_and_hms(2025, 2, 2, 3, 0, 0).unwrap()])
            .collect();
        assert_eq!(p.next, expected);
        let error = preview("61 * * * *", None, from, 5).unwrap_err();
        assert!(error.to_string().contains("rotation_schedule"), "{error}");
        let error = preview("0 3 * * *", Some(Duration::from_secs(60)), from, 5).unwrap_err();
        assert!(error.to_string().contains("rotation_window"), "{error}");
    }
}
