//! Charts as inline SVG text, drawn here so the report needs no script and no network.
//!
//! Every number written into the SVG is finite (a non-finite input value is dropped, a
//! degenerate range is widened), every string is escaped, and every drawn data point carries
//! `data-*` attributes and a `<title>` tooltip, so a browser shows the value on hover and a
//! test can count what was drawn.

use std::fmt::Write;

use super::escape;

/// Chart size in SVG user units (the page scales it to its width).
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// Colours of successive series (readable on white, distinguishable for most eyes).
pub(crate) const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of a line chart.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A line chart: `series` over a shared x axis (seconds) and a y axis from 0.
pub(crate) fn line_chart(id: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let clean: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let pts = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (s.name.as_str(), pts)
        })
        .collect();
    let all = || clean.iter().flat_map(|(_, p)| p.iter());
    if all().next().is_none() {
        return empty_chart(id, "no samples yet");
    }
    let (x0, x1) = range(all().map(|p| p.0), false);
    let (_, y1) = range(all().map(|p| p.1), true);
    let sx = |x: f64| fin(LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT));
    let sy = |y: f64| fin(HEIGHT - BOTTOM - y / y1 * (HEIGHT - TOP - BOTTOM));
    let mut svg = open_svg(id);
    axes(&mut svg, (x0, x1), (0.0, y1), x_label, y_label);
    for (i, (name, pts)) in clean.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let color = PALETTE[i % PALETTE.len()];
        let mut d = String::new();
        for (j, (x, y)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                sx(*x),
                sy(*y)
            );
        }
        let _ = write!(
            svg,
            r#"<path class="series" data-series="{}" data-points="{}" d="{d}" fill="none" stroke="{color}" stroke-width="1.6"/>"#,
            escape(name),
            pts.len()
        );
        for (x, y) in pts {
            let _ = write!(
                svg,
                r#"<rect class="pt" data-series="{}" data-x="{}" data-y="{}" x="{:.1}" y="{:.1}" width="4" height="4" fill="{color}"><title>{}: {} at {}s</title></rect>"#,
                escape(name),
                num(*x),
                num(*y),
                sx(*x) - 2.0,
                sy(*y) - 2.0,
                escape(name),
                human(*y),
                human(*x)
            );
        }
    }
    legend(&mut svg, clean.iter().map(|(n, _)| *n));
    svg.push_str("</svg>");
    svg
}

/// A bar chart: one bar per `(label, value)`, from 0.
pub(crate) fn bar_chart(id: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let bars: Vec<(&str, f64)> = bars
        .iter()
        .map(|(l, v)| (l.as_str(), if v.is_finite() { v.max(0.0) } else { 0.0 }))
        .collect();
    if bars.is_empty() {
        return empty_chart(id, "no data");
    }
    let (_, y1) = range(bars.iter().map(|b| b.1), true);
    let slot = (WIDTH - LEFT - RIGHT) / bars.len() as f64;
    let mut svg = open_svg(id);
    axes_y(&mut svg, y1, y_label);
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = fin(v / y1 * (HEIGHT - TOP - BOTTOM));
        let x = fin(LEFT + i as f64 * slot + slot * 0.1);
        let _ = write!(
            svg,
            r#"<rect class="bar" data-label="{}" data-value="{}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {}</title></rect>"#,
            escape(label),
            num(*v),
            HEIGHT - BOTTOM - h,
            fin(slot * 0.8),
            PALETTE[0],
            escape(label),
            human(*v)
        );
        if bars.len() <= 24 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                fin(LEFT + (i as f64 + 0.5) * slot),
                HEIGHT - BOTTOM + 14.0,
                escape(label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal stacked bars, one row per `(label, busy share, restarts)`: busy and idle.
pub(crate) fn utilisation_chart(id: &str, rows: &[(String, f64, u64)]) -> String {
    if rows.is_empty() {
        return empty_chart(id, "no worker samples yet");
    }
    let row_h = 22.0;
    let height = TOP + rows.len() as f64 * row_h + 30.0;
    let width = WIDTH - LEFT - RIGHT - 150.0;
    let mut svg = format!(
        r#"<svg id="{}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" role="img">"#,
        escape(id)
    );
    for (i, (label, share, restarts)) in rows.iter().enumerate() {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let y = TOP + i as f64 * row_h;
        let busy_w = fin(share * width);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 14.0,
            escape(label)
        );
        let _ = write!(
            svg,
            r##"<rect class="busy" data-worker="{}" data-busy="{}" x="{LEFT}" y="{y:.1}" width="{busy_w:.1}" height="{:.1}" fill="#1f77b4"><title>{}: busy {:.1}%</title></rect>"##,
            escape(label),
            num(share),
            row_h - 6.0,
            escape(label),
            share * 100.0
        );
        let _ = write!(
            svg,
            r##"<rect class="idle" data-worker="{}" data-idle="{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#d9d9d9"><title>{}: idle {:.1}%</title></rect>"##,
            escape(label),
            num(1.0 - share),
            LEFT + busy_w,
            fin(width - busy_w),
            row_h - 6.0,
            escape(label),
            (1.0 - share) * 100.0
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{:.0}% busy, {} restart{}</text>"#,
            LEFT + width + 6.0,
            y + 14.0,
            share * 100.0,
            restarts,
            if *restarts == 1 { "" } else { "s" }
        );
    }
    svg.push_str("</svg>");
    svg
}

fn open_svg(id: &str) -> String {
    format!(
        r#"<svg id="{}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">"#,
        escape(id)
    )
}

fn empty_chart(id: &str, note: &str) -> String {
    format!(
        r##"<svg id="{}" class="chart empty" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 60" role="img"><text x="{LEFT}" y="34" font-size="13" fill="#666">{}</text></svg>"##,
        escape(id),
        escape(note)
    )
}

/// Both axes with five ticks each.
fn axes(svg: &mut String, (x0, x1): (f64, f64), (_, y1): (f64, f64), x_label: &str, y_label: &str) {
    axes_y(svg, y1, y_label);
    for i in 0..=4 {
        let v = x0 + (x1 - x0) * f64::from(i) / 4.0;
        let x = fin(LEFT + (WIDTH - LEFT - RIGHT) * f64::from(i) / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 4.0,
            HEIGHT - BOTTOM + 15.0,
            human(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(x_label)
    );
}

fn axes_y(svg: &mut String, y1: f64, y_label: &str) {
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#999"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/>"##,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM
    );
    for i in 0..=4 {
        let v = y1 * f64::from(i) / 4.0;
        let y = fin(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * f64::from(i) / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 3.0,
            human(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="12" y="{:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {:.1})">{}</text>"#,
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
        escape(y_label)
    );
}

fn legend<'a>(svg: &mut String, names: impl Iterator<Item = &'a str>) {
    let mut x = LEFT + 8.0;
    for (i, name) in names.enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            TOP - 2.0,
            x + 14.0,
            TOP + 7.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count().min(30) as f64;
    }
}

/// The range of finite `values`, widened so it is never empty; from 0 when `from_zero`.
fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = 0.0;
        hi = hi.max(0.0);
    }
    // Keep the span finite and positive: huge values are scaled by a span that fits.
    lo = lo.clamp(-f64::MAX / 4.0, f64::MAX / 4.0);
    hi = hi.clamp(-f64::MAX / 4.0, f64::MAX / 4.0);
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (hi.abs() * 0.1).max(1.0);
        return if from_zero {
            (0.0, hi + pad)
        } else {
            (lo - pad, hi + pad)
        };
    }
    (lo, hi)
}

/// A coordinate that is always a finite number.
fn fin(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(-1e7, 1e7)
    } else {
        0.0
    }
}

/// A data value for an attribute: finite, plain.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// A short human label: 1234 → "1.2k", 0.0123 → "0.012".
pub(crate) fn human(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if a >= 1e15 {
        return format!("{v:.2e}");
    }
    let s = if scaled.abs() >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 1.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.3}")
    };
    format!("{s}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every number in the SVG's attributes parses as a finite number.
    fn assert_finite(svg: &str) {
        assert!(!svg.contains("NaN"), "{svg}");
        assert!(!svg.contains("inf"), "{svg}");
        for part in svg.split('"') {
            if let Ok(v) = part.parse::<f64>() {
                assert!(v.is_finite(), "{part} in {svg}");
            }
        }
    }

    fn count(svg: &str, what: &str) -> usize {
        svg.matches(what).count()
    }

    #[test]
    fn an_empty_series_draws_a_note_not_a_chart() {
        let svg = line_chart("t", "s", "rec/s", &[]);
        assert!(svg.contains("no samples yet"));
        assert_eq!(count(&svg, "<path"), 0);
        let svg = line_chart(
            "t",
            "s",
            "rec/s",
            &[Series {
                name: "a".into(),
                points: vec![],
            }],
        );
        assert!(svg.contains("no samples yet"));
        assert!(bar_chart("b", "n", &[]).contains("no data"));
        assert!(utilisation_chart("u", &[]).contains("no worker samples"));
    }

    #[test]
    fn one_point_draws_one_marker_within_the_chart() {
        let svg = line_chart(
            "t",
            "s",
            "rec/s",
            &[Series {
                name: "run 1".into(),
                points: vec![(3.0, 42.0)],
            }],
        );
        assert_eq!(count(&svg, r#"class="series""#), 1);
        assert_eq!(count(&svg, r#"class="pt""#), 1);
        assert!(svg.contains(r#"data-y="42""#));
        assert_finite(&svg);
    }

    #[test]
    fn huge_and_non_finite_values_stay_finite() {
        let svg = line_chart(
            "t",
            "s",
            "v",
            &[Series {
                name: "big".into(),
                points: vec![
                    (0.0, f64::MAX),
                    (1.0, 1e300),
                    (2.0, f64::NAN),
                    (f64::INFINITY, 1.0),
                    (-f64::MAX, 5.0),
                ],
            }],
        );
        assert_finite(&svg);
        assert_eq!(
            count(&svg, r#"class="pt""#),
            3,
            "non-finite points are dropped"
        );
        let bars = bar_chart(
            "b",
            "n",
            &[
                ("a".into(), f64::MAX),
                ("b".into(), f64::NAN),
                ("c".into(), -3.0),
            ],
        );
        assert_finite(&bars);
        assert_eq!(count(&bars, r#"class="bar""#), 3);
        let u = utilisation_chart("u", &[("w1".into(), f64::NAN, 0), ("w2".into(), 7.0, 2)]);
        assert_finite(&u);
        assert!(u.contains("100% busy, 2 restarts"));
    }

    #[test]
    fn labels_from_data_are_escaped() {
        let svg = line_chart(
            "t",
            "s",
            "v",
            &[Series {
                name: "<script>alert(1)</script>".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn human_labels() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(2.5e6), "2.5M");
        assert_eq!(human(0.0125), "0.013");
        assert_eq!(human(f64::NAN), "-");
        assert_eq!(human(f64::MAX), "1.80e308");
    }
}
