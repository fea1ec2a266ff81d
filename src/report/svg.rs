//! Inline SVG charts for the HTML report: plain shapes and text, no scripts, no fonts to
//! fetch. Every label goes through [`esc`]; every number is made finite before it is drawn.

use std::fmt::Write;

use super::escape::esc;

/// One series of a line chart, oldest point first.
pub struct Line<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub points: &'a [f32],
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// The smallest of 1, 2, 5 x 10^n at or above `v` (at least 1), for a y axis.
pub fn nice_ceiling(v: f64) -> f64 {
    let v = finite(v).max(1.0);
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if m * step >= v {
                return m * step;
            }
        }
        step *= 10.0;
    }
}

/// "-5 min", "-40 s": how long before the snapshot a point was taken.
fn ago(secs: f64) -> String {
    if secs >= 120.0 {
        format!("-{:.0} min", secs / 60.0)
    } else {
        format!("-{secs:.0} s")
    }
}

/// Lines over the window (the same time axis for all), y from 0 to `y_max`.
pub fn line_chart(title: &str, lines: &[Line], y_max: f64, unit: &str, span_secs: f64) -> String {
    let y_max = finite(y_max).max(f64::MIN_POSITIVE);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut svg = open(W, H, title);
    for i in 0..=4 {
        let value = y_max * f64::from(i) / 4.0;
        let y = TOP + ph - ph * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="axis">{}{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_number(value),
            esc(unit)
        );
    }
    let baseline = TOP + ph;
    for (x, anchor, label) in [
        (LEFT, "start", ago(span_secs)),
        (LEFT + pw / 2.0, "middle", ago(span_secs / 2.0)),
        (W - RIGHT, "end", "now".to_string()),
    ] {
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" class="axis">{}</text>"#,
            baseline + 18.0,
            esc(&label)
        );
    }
    if lines.iter().all(|l| l.points.is_empty()) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="empty">no samples yet</text>"#,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    // Series may be shorter than the window (the CPU ring skips the first tick): every one
    // ends at "now", one point per tick.
    let slots = lines.iter().map(|l| l.points.len()).max().unwrap_or(0);
    for line in lines {
        svg.push_str(&polyline(line, slots, pw, ph, y_max));
    }
    svg.push_str("</svg>");
    svg
}

/// `line` drawn in the last of `slots` evenly spaced x positions.
fn polyline(line: &Line, slots: usize, pw: f64, ph: f64, y_max: f64) -> String {
    let n = line.points.len();
    let offset = slots.saturating_sub(n);
    let xy = |i: usize, v: f32| {
        let x = if slots > 1 {
            LEFT + pw * (offset + i) as f64 / (slots - 1) as f64
        } else {
            LEFT + pw
        };
        let y = TOP + ph - ph * (finite(f64::from(v)) / y_max).clamp(0.0, 1.0);
        (x, y)
    };
    if n == 1 {
        let (x, y) = xy(0, line.points[0]);
        return format!(
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"><title>{}</title></circle>"#,
            esc(line.color),
            esc(line.label)
        );
    }
    let mut path = String::new();
    for (i, v) in line.points.iter().enumerate() {
        let (x, y) = xy(i, *v);
        let _ = write!(path, "{x:.1},{y:.1} ");
    }
    format!(
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round"><title>{}</title></polyline>"#,
        path.trim_end(),
        esc(line.color),
        esc(line.label)
    )
}

/// Horizontal bars, one per (label, value), scaled to `max`.
pub fn bar_chart(title: &str, items: &[(String, f64)], max: f64, unit: &str) -> String {
    const ROW: f64 = 20.0;
    const LABEL_W: f64 = 170.0;
    let max = finite(max).max(f64::MIN_POSITIVE);
    // As wide as the page: a bar chart has no second chart beside it.
    const BAR_W: f64 = 1100.0;
    let height = ROW * items.len().max(1) as f64 + 8.0;
    let bar_w = BAR_W - LABEL_W - 70.0;
    let mut svg = open(BAR_W, height, title);
    if items.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="18" text-anchor="middle" class="empty">nothing to show</text>"#,
            BAR_W / 2.0
        );
    }
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let value = finite(*value).max(0.0);
        let w = (bar_w * value / max).clamp(0.0, bar_w);
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text><rect x="{LABEL_W}" y="{y:.1}" width="{bar_w:.1}" height="14" fill="#f3f4f6"/><rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="14" fill="#2563eb"/><text x="{:.1}" y="{:.1}" class="value">{}{}</text>"##,
            LABEL_W - 8.0,
            y + 11.0,
            esc(&shorten(label, 26)),
            LABEL_W + bar_w + 6.0,
            y + 11.0,
            trim_number(value),
            esc(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Two bars, the baseline mean and the window mean of a fix's own figure (lower is better).
pub fn before_after(title: &str, before: Option<f64>, after: Option<f64>, unit: &str) -> String {
    const BW: f64 = 360.0;
    let max = nice_ceiling(before.unwrap_or(0.0).max(after.unwrap_or(0.0)));
    let mut svg = open(BW + 140.0, 52.0, title);
    for (i, (label, value, color)) in [("before", before, "#9ca3af"), ("after", after, "#16a34a")]
        .into_iter()
        .enumerate()
    {
        let y = 4.0 + 24.0 * i as f64;
        let _ = write!(
            svg,
            r#"<text x="52" y="{:.1}" text-anchor="end" class="label">{label}</text>"#,
            y + 13.0
        );
        match value {
            Some(v) => {
                let v = finite(v).max(0.0);
                let w = (BW * v / max).clamp(0.0, BW);
                let _ = write!(
                    svg,
                    r#"<rect x="60" y="{y:.1}" width="{w:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}" class="value">{:.2}{}</text>"#,
                    66.0 + w,
                    y + 13.0,
                    v,
                    esc(unit)
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r#"<text x="62" y="{:.1}" class="empty">no readings yet</text>"#,
                    y + 13.0
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A tiny line of CPU percent (0..=100 of one CPU, clamped) for a table cell.
pub fn sparkline(points: &[f32]) -> String {
    const SW: f64 = 90.0;
    const SH: f64 = 18.0;
    if points.len() < 2 {
        return String::new();
    }
    let max = nice_ceiling(points.iter().copied().fold(0.0f32, f32::max).into()).max(100.0);
    let mut path = String::new();
    for (i, v) in points.iter().enumerate() {
        let x = SW * i as f64 / (points.len() - 1) as f64;
        let y = SH - 1.0 - (SH - 2.0) * (finite(f64::from(*v)) / max).clamp(0.0, 1.0);
        let _ = write!(path, "{x:.1},{y:.1} ");
    }
    format!(
        r##"<svg class="spark" width="{SW}" height="{SH}" viewBox="0 0 {SW} {SH}" role="img" aria-label="CPU history"><polyline points="{}" fill="none" stroke="#2563eb" stroke-width="1.2"/></svg>"##,
        path.trim_end()
    )
}

fn open(w: f64, h: f64, title: &str) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h:.0}" width="100%" style="max-width:{w}px" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    )
}

/// "12", "12.5", "0.25": no trailing zeros on axis labels.
fn trim_number(v: f64) -> String {
    let text = format!("{:.2}", finite(v));
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// At most `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
