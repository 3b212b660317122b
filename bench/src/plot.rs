//! A small SVG line-chart writer for the growth phase: one chart per file, labelled axes
//! (linear or logarithmic, each on its own), one polyline with markers per series, a legend.
//! No dependency: the SVG is written as text.

use std::fmt::Write as _;

/// One line of a chart: its name in the legend and its points `(x, y)`, in x order.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base 10; values <= 0 are left out.
    Log,
}

/// A chart: a title, two labelled axes and the series drawn on them.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
/// The plot area: left, top, right, bottom margins.
const MARGIN: (f64, f64, f64, f64) = (80.0, 40.0, 230.0, 60.0);
/// Line colours, one per series in turn (colour-blind-safe palette).
const COLOURS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

/// One axis: its value range after the scale is applied, and where its ticks go.
struct Axis {
    scale: Scale,
    low: f64,
    high: f64,
}

impl Axis {
    /// An axis covering `values` (at least one positive value for a log axis).
    fn covering(scale: Scale, values: impl Iterator<Item = f64>) -> Self {
        let values: Vec<f64> = values
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .collect();
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        if values.is_empty() {
            return Self {
                scale,
                low: 0.0,
                high: 1.0,
            };
        }
        match scale {
            Scale::Log => {
                let (low, high) = (min.log10().floor(), max.log10().ceil());
                Self {
                    scale,
                    low,
                    high: if high > low { high } else { low + 1.0 },
                }
            }
            Scale::Linear => {
                let low = if min >= 0.0 { 0.0 } else { min };
                let step = nice_step((max - low).max(f64::MIN_POSITIVE) / 5.0);
                let high = (max / step).ceil() * step;
                Self {
                    scale,
                    low,
                    high: if high > low { high } else { low + 1.0 },
                }
            }
        }
    }

    /// Where `value` falls, from 0 (low end) to 1 (high end); `None` off a log axis.
    fn fraction(&self, value: f64) -> Option<f64> {
        let v = match self.scale {
            Scale::Log if value > 0.0 => value.log10(),
            Scale::Log => return None,
            Scale::Linear => value,
        };
        Some((v - self.low) / (self.high - self.low))
    }

    /// The tick values: each power of ten (log), or about five round steps (linear).
    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Log => (self.low as i32..=self.high as i32)
                .map(|e| 10f64.powi(e))
                .collect(),
            Scale::Linear => {
                let step = nice_step((self.high - self.low) / 5.0);
                let mut ticks = Vec::new();
                let mut t = (self.low / step).ceil() * step;
                while t <= self.high + step * 1e-9 {
                    ticks.push(t);
                    t += step;
                }
                ticks
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

/// `value` for a tick label: 1k, 100k, 1M, or the plain number.
pub fn short(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let text = if scaled.fract().abs() < 1e-9 || scaled.abs() >= 10.0 {
        format!("{scaled:.0}")
    } else {
        format!("{scaled:.1}")
    };
    format!("{text}{suffix}")
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let (left, top, right, bottom) = MARGIN;
        let (plot_w, plot_h) = (WIDTH - left - right, HEIGHT - top - bottom);
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let x_axis = Axis::covering(self.x_scale, points().map(|p| p.0));
        let y_axis = Axis::covering(self.y_scale, points().map(|p| p.1));
        let at = |x: f64, y: f64| -> Option<(f64, f64)> {
            Some((
                left + x_axis.fraction(x)? * plot_w,
                top + (1.0 - y_axis.fraction(y)?) * plot_h,
            ))
        };
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            left + plot_w / 2.0,
            escape(&self.title)
        );
        // Grid and tick labels.
        for tick in x_axis.ticks() {
            if let Some(f) = x_axis.fraction(tick) {
                let x = left + f * plot_w;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                    top + plot_h,
                    top + plot_h + 16.0,
                    short(tick)
                );
            }
        }
        for tick in y_axis.ticks() {
            if let Some(f) = y_axis.fraction(tick) {
                let y = top + (1.0 - f) * plot_h;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                    left + plot_w,
                    left - 6.0,
                    y + 4.0,
                    short(tick)
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
        );
        let scale_note = |scale: Scale| if scale == Scale::Log { " (log)" } else { "" };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}{}</text>"#,
            left + plot_w / 2.0,
            HEIGHT - 18.0,
            escape(&self.x_label),
            scale_note(self.x_scale)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}{}</text>"#,
            top + plot_h / 2.0,
            escape(&self.y_label),
            scale_note(self.y_scale)
        );
        // Series and legend.
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let drawn: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .filter_map(|(x, y)| at(*x, *y))
                .collect();
            let line: Vec<String> = drawn
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                line.join(" ")
            );
            for (x, y) in &drawn {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"/>"#
                );
            }
            let ly = top + 10.0 + i as f64 * 20.0;
            let lx = left + plot_w + 16.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series becomes a polyline and a legend entry; log ticks are powers of ten.
    #[test]
    fn a_chart_draws_every_series_and_labels_its_axes() {
        let chart = Chart {
            title: "t".into(),
            x_label: "products".into(),
            y_label: "req/s".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1e3, 5.0), (1e5, 7.0), (1e6, 9.0)],
                },
                Series {
                    name: "b <x>".into(),
                    points: vec![(1e3, 1.0)],
                },
            ],
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">1M<") && svg.contains(">1k<") && svg.contains(">100k<"));
        assert!(svg.contains("b &lt;x&gt;"));
        assert!(svg.contains("products (log)"));
    }

    #[test]
    fn short_labels_read_as_counts() {
        assert_eq!(short(1000.0), "1k");
        assert_eq!(short(1_000_000.0), "1M");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(250_000.0), "250k");
    }
}
