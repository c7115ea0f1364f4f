//! The report's charts as inline SVG, drawn with `plotters` and its SVG backend.
//!
//! Why plotters: a maintained plotting crate whose SVG backend writes plain SVG elements into a
//! string (no script, no external reference) and escapes every text it writes (`<`, `&`,
//! quotes), which matters because interface and node names come from recordings. Built
//! without its `ttf` feature it needs no font files: text is laid out by an estimate and the
//! viewer draws it with its own sans-serif font, so the page renders the same on any machine,
//! offline. Histograms use its chart builder (log axis, mesh, labels); the sequence diagram is
//! drawn with its primitive elements (text, circles, paths) at computed positions, since no
//! chart type fits it.
//!
//! - **Sequence diagram** ([`sequence`]): one lane per node in the order the packet met them,
//!   one row per event (hop or drop) in time order; rows are evenly spaced (a drop can come
//!   seconds after the last hop, microseconds apart hops would otherwise overlap) and the time
//!   since the first hop is written beside each row, with the clock bound for a hop on another
//!   machine. A lost packet ends in a dashed line to "not seen again".
//! - **Histogram** ([`histogram`]): the segment's values in log-spaced bins (`collect::bins`)
//!   on a log time axis, with the p50, p90 and p99 as vertical lines.

use plotters::{
    coord::Shift,
    element::DashedPathElement,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::model::{EventKind, SegmentRow, Timeline};
use super::{duration, offset};
use crate::model::Outcome;

const LEFT: i32 = 150;
const LANE_W: i32 = 250;
/// Room right of the last lane for its labels.
const RIGHT: i32 = 150;
const HEAD_H: i32 = 46;
const ROW_H: i32 = 34;
const FONT: &str = "sans-serif";

const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GREY: RGBColor = RGBColor(0x88, 0x88, 0x88);
const LIGHT: RGBColor = RGBColor(0xcc, 0xcc, 0xcc);
const BLUE: RGBColor = RGBColor(0x1f, 0x5f, 0xbf);
const GREEN: RGBColor = RGBColor(0x2e, 0x7d, 0x32);
const DROP: RGBColor = RGBColor(0xc6, 0x28, 0x28);

/// `text` cut to `max` characters (with an ellipsis), so that labels stay in their lane.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

fn style(size: u32, color: RGBColor, h: HPos) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(h, VPos::Center),
    }
}

/// The sequence diagram of one packet as an SVG document.
pub fn sequence(t: &Timeline) -> String {
    let lanes = t.lanes.len().max(1) as i32;
    let rows = t.events.len() as i32 + i32::from(t.outcome == Outcome::Lost);
    let (w, h) = (
        LEFT + lanes * LANE_W + RIGHT,
        HEAD_H + rows.max(1) * ROW_H + 16,
    );
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w as u32, h as u32)).into_drawing_area();
        // Drawing into a string cannot fail; an error would leave a partial chart, not panic.
        let _ = draw_sequence(&root, t, lanes, rows, h);
        let _ = root.present();
    }
    out
}

fn lane_x(i: usize) -> i32 {
    LEFT + i as i32 * LANE_W + LANE_W / 2
}

fn row_y(r: usize) -> i32 {
    HEAD_H + r as i32 * ROW_H + ROW_H / 2
}

fn draw_sequence(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    t: &Timeline,
    lanes: i32,
    rows: i32,
    h: i32,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        "time since the first hop",
        (8, HEAD_H / 2),
        style(11, GREY, HPos::Left),
    ))?;
    for (i, lane) in t.lanes.iter().enumerate() {
        let x = lane_x(i);
        root.draw(&Rectangle::new(
            [(x - LANE_W / 2 + 8, 6), (x + LANE_W / 2 - 8, HEAD_H - 10)],
            ShapeStyle::from(&RGBColor(0xee, 0xf2, 0xf8)).filled(),
        ))?;
        root.draw(&Rectangle::new(
            [(x - LANE_W / 2 + 8, 6), (x + LANE_W / 2 - 8, HEAD_H - 10)],
            ShapeStyle::from(&BLUE).stroke_width(1),
        ))?;
        root.draw(&Text::new(
            clip(lane, 30),
            (x, HEAD_H / 2 - 2),
            style(13, INK, HPos::Center),
        ))?;
        root.draw(&DashedPathElement::new(
            vec![(x, HEAD_H - 10), (x, h - 8)],
            4,
            4,
            ShapeStyle::from(&LIGHT).stroke_width(1),
        ))?;
    }
    let _ = lanes;
    let mut prev: Option<(i32, i32)> = None;
    for (r, e) in t.events.iter().enumerate() {
        let (x, y) = (lane_x(e.lane), row_y(r));
        let mut time = offset(e.t_ns);
        if let Some(err) = e.err_ns {
            time.push_str(&format!(" ±{}", duration(err)));
        }
        root.draw(&Text::new(time, (8, y), style(11, INK, HPos::Left)))?;
        root.draw(&PathElement::new(
            vec![(LEFT - 6, y), (LEFT + lanes * LANE_W, y)],
            ShapeStyle::from(&RGBColor(0xf2, 0xf2, 0xf2)).stroke_width(1),
        ))?;
        if let Some((px, py)) = prev {
            arrow(root, (px, py), (x, y), if px == x { GREY } else { BLUE })?;
        }
        let (color, label) = match e.kind {
            EventKind::Drop => (DROP, format!("DROP {}", e.ifname)),
            k => (
                if k == EventKind::Ingress { GREEN } else { BLUE },
                format!("{} {}", e.ifname, k.as_str()),
            ),
        };
        if e.kind == EventKind::Drop {
            for (a, b) in [((-6, -6), (6, 6)), ((-6, 6), (6, -6))] {
                root.draw(&PathElement::new(
                    vec![(x + a.0, y + a.1), (x + b.0, y + b.1)],
                    ShapeStyle::from(&DROP).stroke_width(3),
                ))?;
            }
        } else {
            root.draw(&Circle::new((x, y), 5, ShapeStyle::from(&color).filled()))?;
        }
        root.draw(&Text::new(
            clip(&label, 32),
            (x + 12, y - 6),
            style(12, color, HPos::Left),
        ))?;
        if !e.detail.is_empty() {
            root.draw(&Text::new(
                clip(&e.detail, 36),
                (x + 12, y + 8),
                style(10, GREY, HPos::Left),
            ))?;
        }
        prev = Some((x, y));
    }
    if let (Outcome::Lost, Some((x, y))) = (t.outcome, prev) {
        let end = row_y(rows as usize - 1);
        root.draw(&DashedPathElement::new(
            vec![(x, y + 6), (x, end)],
            3,
            3,
            ShapeStyle::from(&DROP).stroke_width(2),
        ))?;
        root.draw(&Text::new(
            "? not seen again (no kernel drop on a traced node)",
            (x + 12, end),
            style(11, DROP, HPos::Left),
        ))?;
    }
    Ok(())
}

/// A line from `a` to `b` with an arrow head at `b` (stopping short of its marker).
fn arrow(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    a: (i32, i32),
    b: (i32, i32),
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let (dx, dy) = (f64::from(b.0 - a.0), f64::from(b.1 - a.1));
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let (ux, uy) = (dx / len, dy / len);
    let at = |d: f64, side: f64| {
        (
            (f64::from(b.0) - ux * d - uy * side).round() as i32,
            (f64::from(b.1) - uy * d + ux * side).round() as i32,
        )
    };
    let start = (
        (f64::from(a.0) + ux * 8.0).round() as i32,
        (f64::from(a.1) + uy * 8.0).round() as i32,
    );
    let tip = at(8.0, 0.0);
    root.draw(&PathElement::new(
        vec![start, tip],
        ShapeStyle::from(&color).stroke_width(2),
    ))?;
    root.draw(&Polygon::new(
        vec![tip, at(16.0, 4.5), at(16.0, -4.5)],
        ShapeStyle::from(&color).filled(),
    ))?;
    Ok(())
}

/// One segment's distribution as an SVG histogram (`None` without values).
pub fn histogram(row: &SegmentRow, title: &str) -> Option<String> {
    let first = row.bins.first()?;
    let last = row.bins.last()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (420, 220)).into_drawing_area();
        let _ = draw_histogram(&root, row, title, (first.lo_ns, last.hi_ns));
        let _ = root.present();
    }
    Some(out)
}

fn draw_histogram(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    row: &SegmentRow,
    title: &str,
    (lo, hi): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.fill(&WHITE)?;
    // Counts on a log axis too: the tail (a few slow packets among thousands) stays visible.
    let top = row.bins.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let (ybase, ymax) = (0.5, top * 2.0);
    // Axis in µs: hop-to-hop segments are µs apart; the log axis spreads ns to seconds. At
    // least a decade, around the values, so that the axis has labels.
    let (mut lo_us, mut hi_us) = (lo / 1e3, hi / 1e3);
    if hi_us < lo_us * 10.0 {
        let mid = (lo_us * hi_us).sqrt();
        (lo_us, hi_us) = (mid / 10f64.sqrt(), mid * 10f64.sqrt());
    }
    let mut chart = ChartBuilder::on(root)
        .margin(8)
        .caption(clip(title, 60), (FONT, 14))
        .x_label_area_size(34)
        .y_label_area_size(54)
        .build_cartesian_2d(
            (lo_us..hi_us)
                .log_scale()
                .with_key_points(key_points(lo_us, hi_us)),
            (ybase..ymax).log_scale(),
        )?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .x_desc("µs (log scale)")
        .y_desc("packets (log scale)")
        .x_label_formatter(&|v| format_us(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 11))
        .draw()?;
    chart.draw_series(row.bins.iter().filter(|b| b.count > 0).map(|b| {
        Rectangle::new(
            [(b.lo_ns / 1e3, ybase), (b.hi_ns / 1e3, b.count as f64)],
            ShapeStyle::from(&BLUE.mix(0.75)).filled(),
        )
    }))?;
    let s = &row.summary;
    // Equal percentiles share one line and one label; close ones get labels at steps down.
    let mut marks: Vec<(String, u64, RGBColor)> = Vec::new();
    for (name, ns, color) in [
        ("p50", s.p50_ns, GREEN),
        ("p90", s.p90_ns, RGBColor(0xef, 0x6c, 0x00)),
        ("p99", s.p99_ns, DROP),
    ] {
        match marks.last_mut() {
            Some(last) if last.1 == ns => {
                last.0.push(' ');
                last.0.push_str(name);
                last.2 = color;
            }
            _ => marks.push((name.to_string(), ns, color)),
        }
    }
    for (i, (name, ns, color)) in marks.into_iter().enumerate() {
        let x = (ns as f64 / 1e3).clamp(lo_us, hi_us);
        chart.draw_series([PathElement::new(
            vec![(x, ybase), (x, ymax)],
            ShapeStyle::from(&color).stroke_width(1),
        )])?;
        let y = ymax / 1.6f64.powi(i as i32);
        chart.draw_series([Text::new(name, (x, y), style(10, color, HPos::Left))])?;
    }
    Ok(())
}

/// The 1-2-5 values of each decade within `[lo, hi]` (the axis' labels).
fn key_points(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a..=b)
        .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// An axis label: `0.5`, `12`, `2k` µs (at most 3 decimals, no trailing zeros).
fn format_us(v: f64) -> String {
    let short = |x: f64| {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if v >= 1e3 {
        format!("{}k", short(v / 1e3))
    } else {
        short(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels() {
        assert_eq!(key_points(1.772, 51.7), [2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(key_points(0.15, 0.6), [0.2, 0.5]);
        assert_eq!(format_us(2.0), "2");
        assert_eq!(format_us(0.5), "0.5");
        assert_eq!(format_us(2_000.0), "2k");
        assert_eq!(format_us(12.25), "12.25");
        assert_eq!(clip("calif60960ede74", 8), "calif60…");
    }
}
