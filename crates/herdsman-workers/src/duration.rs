//! The one place where durations are written for people: in messages, notices and progress
//! lines, across the workspace.
//!
//! Each style is the text users already see (and tests and scripts may match): this module
//! must never change the text of an existing style; a new wording is a new style.

use std::time::Duration;

/// How [`format_duration`] writes a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationStyle {
    /// As a user would write it for `--timeout`: `1s`, `1.5s`, `300ms`, `250µs`.
    Flag,
    /// A wait, in whole seconds with a space (`60 s`), or milliseconds under a second
    /// (`300 ms`).
    Wait,
    /// A clock for progress lines, in whole seconds: `7s`, `3m05s`, `2h03m`.
    Clock,
}

/// Writes `d` in the given style.
///
/// ```
/// use herdsman_workers::duration::{format_duration, DurationStyle};
/// use std::time::Duration;
///
/// assert_eq!(format_duration(Duration::from_millis(1500), DurationStyle::Flag), "1.5s");
/// assert_eq!(format_duration(Duration::from_secs(61), DurationStyle::Wait), "61 s");
/// assert_eq!(format_duration(Duration::from_secs(185), DurationStyle::Clock), "3m05s");
/// ```
pub fn format_duration(d: Duration, style: DurationStyle) -> String {
    match style {
        DurationStyle::Flag => {
            let ms = d.as_millis();
            if ms == 0 {
                format!("{}µs", d.as_micros())
            } else if ms.is_multiple_of(1000) {
                format!("{}s", ms / 1000)
            } else if ms < 1000 {
                format!("{ms}ms")
            } else {
                let text = format!("{:.3}", d.as_secs_f64());
                format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
            }
        }
        DurationStyle::Wait => {
            if d >= Duration::from_secs(1) {
                format!("{} s", d.as_secs())
            } else {
                format!("{} ms", d.as_millis())
            }
        }
        DurationStyle::Clock => {
            let s = d.as_secs();
            if s < 60 {
                format!("{s}s")
            } else if s < 3600 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(d: Duration) -> String {
        format_duration(d, DurationStyle::Flag)
    }

    #[test]
    fn flag_style() {
        assert_eq!(f(Duration::from_secs(1)), "1s");
        assert_eq!(f(Duration::from_millis(300)), "300ms");
        assert_eq!(f(Duration::from_millis(1500)), "1.5s");
        assert_eq!(f(Duration::from_secs(120)), "120s");
        assert_eq!(f(Duration::from_micros(250)), "250µs");
    }

    #[test]
    fn wait_style() {
        let w = |d| format_duration(d, DurationStyle::Wait);
        assert_eq!(w(Duration::from_millis(200)), "200 ms");
        assert_eq!(w(Duration::from_millis(60_900)), "60 s");
    }

    #[test]
    fn clock_style() {
        let c = |s| format_duration(Duration::from_secs(s), DurationStyle::Clock);
        assert_eq!(c(7), "7s");
        assert_eq!(c(185), "3m05s");
        assert_eq!(c(7380), "2h03m");
    }
}
