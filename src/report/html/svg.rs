//! The few shapes the report's charts are made of, written as inline SVG. The report needs
//! bars, a line, axes and ticks, and a file that opens anywhere with nothing to load, so it
//! writes those elements itself rather than take a plotting crate with its font machinery.

use std::fmt::Write as _;

use super::text::esc;

/// An SVG drawing in its own coordinates: the page scales it to its width.
pub(super) struct Svg {
    width: f64,
    height: f64,
    body: String,
}

/// Where a text sits against its x.
#[derive(Clone, Copy)]
pub(super) enum Anchor {
    Start,
    Middle,
    End,
}

impl Svg {
    pub(super) fn new(width: f64, height: f64) -> Svg {
        Svg {
            width,
            height,
            body: String::new(),
        }
    }

    /// A rectangle; `title` is what a pointer resting on it shows.
    pub(super) fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, class: &str, title: &str) {
        let _ = write!(
            self.body,
            r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}">"#
        );
        self.title_and_close(title, "rect");
    }

    pub(super) fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), class: &str) {
        let _ = write!(
            self.body,
            r#"<line class="{class}" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"/>"#
        );
    }

    pub(super) fn text(&mut self, (x, y): (f64, f64), anchor: Anchor, class: &str, text: &str) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = write!(
            self.body,
            r#"<text class="{class}" x="{x:.1}" y="{y:.1}" text-anchor="{anchor}">{}</text>"#,
            esc(text)
        );
    }

    pub(super) fn polyline(&mut self, points: &[(f64, f64)], class: &str) {
        let _ = write!(self.body, r#"<polyline class="{class}" points=""#);
        for (i, (x, y)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(self.body, "{sep}{x:.1},{y:.1}");
        }
        self.body.push_str(r#""/>"#);
    }

    fn title_and_close(&mut self, title: &str, element: &str) {
        if !title.is_empty() {
            let _ = write!(self.body, "<title>{}</title>", esc(title));
        }
        let _ = write!(self.body, "</{element}>");
    }

    /// The drawing as an element, named for screen readers by `label`.
    pub(super) fn finish(self, class: &str, label: &str) -> String {
        format!(
            r#"<svg class="{class}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">{body}</svg>"#,
            w = self.width,
            h = self.height,
            label = esc(label),
            body = self.body
        )
    }
}

/// An axis from 0 that reaches `v`: its top, the first round number at or above `v`, and
/// three to five ticks that divide it into round steps, each written as the axis shows it.
pub(super) fn value_axis(v: f64) -> (f64, Vec<(f64, String)>) {
    let v = if v.is_finite() && v > 0.0 { v } else { 1.0 };
    let power = 10f64.powf(v.log10().floor());
    let (m, steps) = [
        (1.0, 5),
        (1.5, 3),
        (2.0, 4),
        (2.5, 5),
        (3.0, 3),
        (4.0, 4),
        (5.0, 5),
        (6.0, 3),
        (8.0, 4),
        (10.0, 5),
    ]
    .into_iter()
    .find(|(m, _)| m * power >= v * (1.0 - 1e-9))
    .unwrap_or((10.0, 5));
    let top = m * power;
    let ticks = (0..=steps)
        .map(|i| {
            let t = top * f64::from(i) / f64::from(steps);
            (t, number(t))
        })
        .collect();
    (top, ticks)
}

/// A tick's value with no more decimals than it needs (at most three).
fn number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        for (v, top) in [
            (0.0, 1.0),
            (0.3, 0.3),
            (1.0, 1.0),
            (1.2, 1.5),
            (2.2, 2.5),
            (4.0, 4.0),
            (25.0, 25.0),
            (26.0, 30.0),
            (61.0, 80.0),
            (999.0, 1000.0),
        ] {
            assert!(
                (value_axis(v).0 - top).abs() < 1e-9,
                "{v}: {}",
                value_axis(v).0
            );
        }
        let labels =
            |v: f64| -> Vec<String> { value_axis(v).1.into_iter().map(|(_, l)| l).collect() };
        assert_eq!(labels(2.2), ["0", "0.5", "1", "1.5", "2", "2.5"]);
        assert_eq!(labels(1.5), ["0", "0.5", "1", "1.5"]);
        assert_eq!(labels(0.07), ["0", "0.02", "0.04", "0.06", "0.08"]);
        assert_eq!(labels(40.0), ["0", "10", "20", "30", "40"]);
    }

    #[test]
    fn text_and_titles_are_escaped() {
        let mut s = Svg::new(10.0, 10.0);
        s.text((1.0, 1.0), Anchor::Start, "t", "<b>&");
        s.rect(0.0, 0.0, 1.0, 1.0, "r", "a\"b");
        let out = s.finish("c", "x<y");
        assert!(out.contains("&lt;b&gt;&amp;"), "{out}");
        assert!(out.contains("<title>a&quot;b</title>"), "{out}");
        assert!(out.contains(r#"aria-label="x&lt;y""#), "{out}");
    }
}
