//! Numbers in words for people: counts with their noun, rates. The bottom layer of the CLI's
//! wording, used by the progress display and the summary alike; it depends on no other
//! module.

/// `1 record`, `2 records`, `0 records`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A rate for people: `0.25/s`, `5.4/s`, `54/s`, `1234/s`.
pub fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "0/s".to_string()
    } else if per_sec < 1.0 {
        format!("{per_sec:.2}/s")
    } else if per_sec < 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.0}/s")
    }
}
