//! SVG plots (plotters, SVG backend): percentile curves, values against the connection count,
//! CDFs and the failover timeline.

use std::path::Path;

use plotters::prelude::*;

use super::ReportError;

/// One named line of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// A fixed colour per target name, so every plot uses the same one.
fn colour(name: &str, index: usize) -> RGBColor {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("switchboard") {
        RGBColor(31, 119, 180)
    } else if lower.starts_with("centrifugo") {
        RGBColor(214, 39, 40)
    } else if lower.starts_with("baseline") {
        RGBColor(255, 127, 14)
    } else if lower.starts_with("tcp") {
        RGBColor(110, 110, 110)
    } else {
        [
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
        ][index % 3]
    }
}

fn plot_err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Plot {
        name: path.display().to_string(),
        reason,
    }
}

/// Bounds of all points (x, y), padded; `None` without points.
fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in pts {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        any = true;
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    any.then_some(((x0, x1), (y0, y1)))
}

/// Maps a quantile to "nines" (0.5 → 0.3, 0.9 → 1, 0.99 → 2, 0.999 → 3); 1.0 (the max) → 4.
pub fn nines(q: f64) -> f64 {
    if q >= 1.0 { 4.0 } else { -(1.0 - q).log10() }
}

/// Latency percentile curves: x = latency (ms, log scale), y = percentile on a "nines" axis.
/// `series` points are (quantile, ms).
pub fn percentiles(path: &Path, title: &str, series: &[Series]) -> Result<(), ReportError> {
    let err = plot_err(path);
    let mapped: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: s
                .points
                .iter()
                .filter(|(_, ms)| *ms > 0.0)
                .map(|&(q, ms)| (ms, nines(q)))
                .collect(),
        })
        .collect();
    let ((x0, x1), _) = bounds(&mapped).unwrap_or(((0.01, 1.0), (0.0, 4.0)));
    let root = SVGBackend::new(path, (800, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(((x0 / 1.5).max(1e-3)..x1 * 1.5).log_scale(), 0.0..4.2)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percentile")
        .y_labels(10)
        .y_label_formatter(&|y: &f64| match (*y * 10.0).round() as i64 {
            3 => "P50".into(),
            10 => "P90".into(),
            20 => "P99".into(),
            30 => "P99.9".into(),
            40 => "max".into(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, s) in mapped.iter().enumerate() {
        let c = colour(&s.name, i);
        chart
            .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    legend_and_present(chart, &root, &err)
}

/// Lines of y against x (linear axes, y from 0), e.g. a value against the connection count.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<(), ReportError> {
    let err = plot_err(path);
    let ((x0, x1), (_, y1)) = bounds(series).unwrap_or(((0.0, 1.0), (0.0, 1.0)));
    let pad = ((x1 - x0) * 0.05).max(1.0);
    let root = SVGBackend::new(path, (800, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - pad).max(0.0)..x1 + pad, 0.0..(y1 * 1.15).max(1e-6))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let c = colour(&s.name, i);
        chart
            .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    legend_and_present(chart, &root, &err)
}

/// Empirical CDFs: points are (value, cumulative fraction).
pub fn cdf(path: &Path, title: &str, x_desc: &str, series: &[Series]) -> Result<(), ReportError> {
    let err = plot_err(path);
    let ((x0, x1), _) = bounds(series).unwrap_or(((0.0, 1.0), (0.0, 1.0)));
    let pad = ((x1 - x0) * 0.05).max(1.0);
    let root = SVGBackend::new(path, (800, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - pad).max(0.0)..x1 + pad, 0.0..1.05)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("fraction of kills")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let c = colour(&s.name, i);
        // A step function: each sample raises the curve at its value.
        let mut steps = Vec::with_capacity(s.points.len() * 2 + 1);
        let mut prev = 0.0;
        if let Some(&(x, _)) = s.points.first() {
            steps.push((x, 0.0));
        }
        for &(x, y) in &s.points {
            steps.push((x, prev));
            steps.push((x, y));
            prev = y;
        }
        chart
            .draw_series(LineSeries::new(steps, c.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend_and_present(chart, &root, &err)
}

/// The events of one failover on a time axis, one row per event.
pub fn timeline(path: &Path, title: &str, events: &[(f64, String)]) -> Result<(), ReportError> {
    let err = plot_err(path);
    let t1 = events.iter().map(|(t, _)| *t).fold(1.0, f64::max);
    let rows = events.len().max(1) as f64;
    let root = SVGBackend::new(path, (800, 120 + 32 * events.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(-t1 * 0.02..t1 * 1.45, -0.5..rows)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("ms since the kill")
        .disable_y_mesh()
        .disable_y_axis()
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let blue = RGBColor(31, 119, 180);
    for (i, (t, name)) in events.iter().enumerate() {
        let y = rows - 1.0 - i as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, y), (*t, y)],
                blue.mix(0.4).stroke_width(2),
            )))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(std::iter::once(Circle::new((*t, y), 5, blue.filled())))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{name} ({t:.0} ms)"),
                (*t + t1 * 0.02, y + 0.15),
                ("sans-serif", 14),
            )))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn legend_and_present<'a, DB, CT>(
    mut chart: ChartContext<'a, DB, CT>,
    root: &DrawingArea<DB, plotters::coord::Shift>,
    err: &dyn Fn(String) -> ReportError,
) -> Result<(), ReportError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_kind_of_plot() {
        let dir = std::env::temp_dir().join(format!("bench-report-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = |name: &str, pts: &[(f64, f64)]| Series {
            name: name.into(),
            points: pts.to_vec(),
        };
        let pct = [
            s("switchboard", &[(0.5, 0.2), (0.99, 1.5), (1.0, 4.0)]),
            s("centrifugo", &[(0.5, 0.9), (0.99, 6.0), (1.0, 9.0)]),
        ];
        percentiles(&dir.join("p.svg"), "join", &pct).unwrap();
        lines(
            &dir.join("l.svg"),
            "rss",
            "connections",
            "KiB",
            &[s("tcp", &[(1000.0, 5.0), (5000.0, 5.5)])],
        )
        .unwrap();
        cdf(
            &dir.join("c.svg"),
            "failover",
            "ms",
            &[s("process exit", &[(290.0, 0.5), (400.0, 1.0)])],
        )
        .unwrap();
        timeline(
            &dir.join("t.svg"),
            "one kill",
            &[(0.0, "kill".into()), (290.0, "resumed".into())],
        )
        .unwrap();
        // An empty plot still renders (a figure with no data yet).
        lines(&dir.join("e.svg"), "empty", "x", "y", &[]).unwrap();
        let svg = std::fs::read_to_string(dir.join("p.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("centrifugo"), "{svg}");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
