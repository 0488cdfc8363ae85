//! When a static role rotates: every `rotation_period`, or at the occurrences of a cron
//! `rotation_schedule`, optionally only within a `rotation_window` after each occurrence.
//!
//! Schedules are evaluated in UTC. A cron pattern has Vault's five fields (`minute hour
//! day-of-month month day-of-week`, e.g. `0 3 * * SUN`); six fields add seconds in front, which
//! Vault does not accept but which makes second-granular schedules (and fast tests) possible.
//!
//! The parser is `croner` (the one tokio-cron-scheduler itself uses). Lessor does not run an
//! in-memory job scheduler on top of it: the durable `next_rotation_at` column is the schedule, and
//! the rotator sleeps until the earliest one, so a restart loses nothing and needs no re-registration.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};

/// Vault's lower bound on `rotation_period`: shorter periods would rotate faster than clients can
/// pick the new password up.
pub const MIN_ROTATION_PERIOD: Duration = Duration::from_secs(5);

/// Vault's lower bound on `rotation_window`.
pub const MIN_ROTATION_WINDOW: Duration = Duration::from_secs(3600);

/// Longest accepted cron pattern; real ones are a few dozen characters.
const MAX_SCHEDULE_LEN: usize = 128;

/// A static role's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Rotate this long after the previous rotation.
    Period(Duration),
    /// Rotate at each occurrence of a cron pattern.
    Cron {
        /// The pattern as the operator wrote it (what the API shows back).
        text: String,
        /// Boxed: a parsed pattern is far larger than a period.
        cron: Box<Cron>,
        /// How long after an occurrence a rotation may still start; past it the occurrence is
        /// skipped (as Vault does), so rotations stay inside the operator's maintenance window.
        window: Option<Duration>,
    },
}

impl Schedule {
    /// Builds and checks a schedule from a role's fields: exactly one of period and schedule, the
    /// window only with a schedule. Messages name the field.
    pub fn from_fields(
        period: Option<Duration>,
        schedule: Option<&str>,
        window: Option<Duration>,
    ) -> Result<Self> {
        match (period, schedule) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "rotation_period and rotation_schedule: set exactly one of them, not both",
            )),
            (None, None) => Err(Error::invalid(
                "rotation_period or rotation_schedule: one of them is required",
            )),
            (Some(period), None) => {
                if window.is_some() {
                    return Err(Error::invalid(
                        "rotation_window: only valid with rotation_schedule",
                    ));
                }
                if period < MIN_ROTATION_PERIOD {
                    return Err(Error::invalid(format!(
                        "rotation_period: must be at least {}s",
                        MIN_ROTATION_PERIOD.as_secs()
                    )));
                }
                Ok(Self::Period(period))
            }
            (None, Some(text)) => {
                let cron = Box::new(parse_cron(text)?);
                if let Some(window) = window {
                    if window < MIN_ROTATION_WINDOW {
                        return Err(Error::invalid(format!(
                            "rotation_window: must be at least {}s",
                            MIN_ROTATION_WINDOW.as_secs()
                        )));
                    }
                }
                let schedule = Self::Cron {
                    text: text.trim().to_owned(),
                    cron,
                    window,
                };
                // A pattern that never matches (30 February) would leave the role unscheduled.
                schedule.next_after(Utc::now()).map_err(|_| {
                    Error::invalid(format!("rotation_schedule: {:?} never occurs", text.trim()))
                })?;
                Ok(schedule)
            }
        }
    }

    /// The first rotation time strictly after `from`.
    pub fn next_after(&self, from: DateTime<Utc>) -> Result<DateTime<Utc>> {
        match self {
            Self::Period(period) => {
                let step = chrono::Duration::from_std(*period)
                    .map_err(|e| Error::Internal(format!("rotation period out of range: {e}")))?;
                Ok(from + step)
            }
            Self::Cron { text, cron, .. } => cron.find_next_occurrence(&from, false).map_err(|e| {
                Error::Internal(format!(
                    "cannot compute the next occurrence of {text:?}: {e}"
                ))
            }),
        }
    }

    /// Whether a rotation scheduled for `scheduled_at` may still start at `now`.
    pub fn within_window(&self, scheduled_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        match self {
            Self::Cron {
                window: Some(window),
                ..
            } => match chrono::Duration::from_std(*window) {
                Ok(window) => now <= scheduled_at + window,
                Err(_) => true,
            },
            _ => true,
        }
    }

    pub fn period(&self) -> Option<Duration> {
        match self {
            Self::Period(period) => Some(*period),
            Self::Cron { .. } => None,
        }
    }

    pub fn cron_text(&self) -> Option<&str> {
        match self {
            Self::Cron { text, .. } => Some(text),
            Self::Period(_) => None,
        }
    }

    pub fn window(&self) -> Option<Duration> {
        match self {
            Self::Cron { window, .. } => *window,
            Self::Period(_) => None,
        }
    }
}

/// Parses a cron pattern: five fields, or six with seconds first; `@daily`-style nicknames too.
fn parse_cron(text: &str) -> Result<Cron> {
    let trimmed = text.trim();
    let shown: String = trimmed.chars().take(40).collect();
    if trimmed.is_empty()
        || trimmed.len() > MAX_SCHEDULE_LEN
        || !trimmed.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    {
        return Err(Error::invalid(format!(
            "rotation_schedule: {shown:?} is not a cron pattern; use five fields such as \"0 3 * * SUN\""
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| {
            Error::invalid(format!(
                "rotation_schedule: cannot parse {shown:?} ({e}); use five fields (minute hour day-of-month month day-of-week) such as \"0 3 * * SUN\""
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn weekly_schedule_finds_the_next_sunday_three_am() {
        let schedule =
            Schedule::from_fields(None, Some("0 3 * * SUN"), Some(Duration::from_secs(7200)))
                .unwrap();
        // 2026-03-04 is a Wednesday.
        let next = schedule.next_after(at(2026, 3, 4, 12, 0, 0)).unwrap();
        assert_eq!(next, at(2026, 3, 8, 3, 0, 0));
        // Strictly after: at the occurrence itself, the next one is a week later.
        assert_eq!(schedule.next_after(next).unwrap(), at(2026, 3, 15, 3, 0, 0));
        assert_eq!(schedule.cron_text(), Some("0 3 * * SUN"));
        assert_eq!(schedule.window(), Some(Duration::from_secs(7200)));
    }

    #[test]
    fn window_bounds_when_a_missed_rotation_may_still_run() {
        let schedule =
            Schedule::from_fields(None, Some("0 3 * * *"), Some(Duration::from_secs(7200)))
                .unwrap();
        let occurrence = at(2026, 3, 8, 3, 0, 0);
        assert!(schedule.within_window(occurrence, at(2026, 3, 8, 4, 59, 59)));
        assert!(!schedule.within_window(occurrence, at(2026, 3, 8, 5, 0, 1)));
        let unbounded = Schedule::from_fields(None, Some("0 3 * * *"), None).unwrap();
        assert!(
            unbounded.within_window(occurrence, at(2026, 4, 1, 0, 0, 0)),
            "no window: always catch up"
        );
    }

    #[test]
    fn six_fields_give_second_granularity() {
        let schedule = Schedule::from_fields(None, Some("*/2 * * * * *"), None).unwrap();
        assert_eq!(
            schedule.next_after(at(2026, 1, 1, 0, 0, 1)).unwrap(),
            at(2026, 1, 1, 0, 0, 2)
        );
        assert_eq!(
            schedule.next_after(at(2026, 1, 1, 0, 0, 2)).unwrap(),
            at(2026, 1, 1, 0, 0, 4)
        );
    }

    #[test]
    fn period_counts_from_the_given_time() {
        let schedule =
            Schedule::from_fields(Some(Duration::from_secs(30 * 86400)), None, None).unwrap();
        assert_eq!(
            schedule.next_after(at(2026, 1, 1, 0, 0, 0)).unwrap(),
            at(2026, 1, 31, 0, 0, 0)
        );
        assert_eq!(schedule.period(), Some(Duration::from_secs(30 * 86400)));
        assert!(schedule.within_window(at(2020, 1, 1, 0, 0, 0), Utc::now()));
    }

    #[test]
    fn bad_schedules_are_refused_naming_the_field() {
        // (period, schedule, window, expected words of the error)
        type Case = (
            Option<Duration>,
            Option<&'static str>,
            Option<Duration>,
            &'static str,
        );
        let cases: [Case; 9] = [
            (None, None, None, "one of them is required"),
            (
                Some(Duration::from_secs(60)),
                Some("0 3 * * *"),
                None,
                "not both",
            ),
            (Some(Duration::from_secs(4)), None, None, "at least 5s"),
            (
                Some(Duration::from_secs(60)),
                None,
                Some(Duration::from_secs(7200)),
                "rotation_window",
            ),
            (
                None,
                Some("0 3 * * *"),
                Some(Duration::from_secs(60)),
                "at least 3600s",
            ),
            (None, Some("every sunday"), None, "rotation_schedule"),
            (None, Some("61 3 * * *"), None, "rotation_schedule"),
            (None, Some("0 3 * * * * 2030"), None, "rotation_schedule"),
            (None, Some("0 0 30 2 *"), None, "never occurs"),
        ];
        for (period, schedule, window, expected) in cases {
            let err = Schedule::from_fields(period, schedule, window)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{period:?} {schedule:?} {window:?}: {err}"
            );
        }
    }
}
