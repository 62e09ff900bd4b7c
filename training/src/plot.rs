//! Learning curves (a PNG of loss and accuracy per epoch, written next to each bundle) and the
//! line charts of benchmarks.
//!
//! Text needs a font, and a training machine may have none installed, so DejaVu Sans (Bitstream
//! Vera licence, `training/assets/DEJAVU-LICENSE.txt`) is embedded in the binary.

use std::path::Path;
use std::sync::OnceLock;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use plotters::prelude::*;

use crate::report::EpochRecord;
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;

/// Line colours, in the order series are added.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidData { file: "DejaVuSans.ttf".into(), reason: "the embedded font does not parse".into() })
    }
}

/// One line of a panel.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Draws train/validation loss (left) and accuracy (right) per epoch into a PNG at `path`.
/// Accuracies in a record's `extra` (e.g. the auxiliary head's) are drawn as further lines.
pub fn learning_curve(history: &[EpochRecord], title: &str, path: &Path) -> Result<()> {
    write_png(path, WIDTH, |rgb| draw(history, title, rgb))
}

/// Renders `draw` into an RGB buffer `width` × [`HEIGHT`] and writes it atomically as a PNG.
fn write_png(path: &Path, width: u32, draw: impl FnOnce(&mut [u8]) -> std::result::Result<(), String>) -> Result<()> {
    register_font()?;
    let bad = |e: String| Error::InvalidData { file: path.display().to_string(), reason: e };
    let mut rgb = vec![0u8; (width * HEIGHT * 3) as usize];
    draw(&mut rgb).map_err(bad)?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&rgb, width, HEIGHT, ExtendedColorType::Rgb8)
        .map_err(|e| bad(e.to_string()))?;
    tandem_runtime::fs::atomic_write(path, &png).map_err(|e| Error::io(path, e))
}

/// A benchmark figure: named lines over one x axis, logarithmic on request (powers of two such
/// as client counts, or latencies spanning decades).
pub struct LineChart {
    /// The title above the plot.
    pub title: String,
    /// What x measures.
    pub x_desc: String,
    /// What y measures.
    pub y_desc: String,
    /// Space x logarithmically (every x must be positive).
    pub log_x: bool,
    /// Space y logarithmically (for figures that span decades; every y must be positive).
    pub log_y: bool,
    /// The lines: a label and its points, drawn in order.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws `chart` into a PNG at `path`.
pub fn line_chart(chart: &LineChart, path: &Path) -> Result<()> {
    write_png(path, WIDTH * 3 / 4, |rgb| draw_chart(chart, rgb))
}

fn draw_chart(chart: &LineChart, rgb: &mut [u8]) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH * 3 / 4, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(&chart.title, (FAMILY, 18)).map_err(|e| e.to_string())?;
    let log = |on: bool| move |v: f64| if on { v.max(f64::MIN_POSITIVE).log10() } else { v };
    let (to_x, to_y) = (log(chart.log_x), log(chart.log_y));
    let points = || chart.lines.iter().flat_map(|(_, p)| p.iter().map(|&(x, y)| (to_x(x), to_y(y))));
    let span = |values: Vec<f64>| {
        let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else if lo == hi {
            (lo - 0.5, hi + 0.5)
        } else {
            (0.0, 1.0)
        };
        let pad = (hi - lo) * 0.04;
        (lo - pad, hi + pad)
    };
    let (x_lo, x_hi) = span(points().map(|p| p.0).collect());
    let (y_lo, y_hi) = span(points().map(|p| p.1).collect());
    // A linear y axis starts at zero, so that heights compare.
    let y_lo = if chart.log_y { y_lo } else { y_lo.min(0.0) };
    let mut plot = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(|e| e.to_string())?;
    let label = |on: bool| {
        move |v: &f64| {
            let v = if on { 10f64.powf(*v) } else { *v };
            if v.abs() >= 100.0 || (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
    };
    let (x_label, y_label) = (label(chart.log_x), label(chart.log_y));
    plot.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for ((label, line), color) in chart.lines.iter().zip(PALETTE.iter().cycle()) {
        let style = color.stroke_width(2);
        let line: Vec<(f64, f64)> = line.iter().map(|&(x, y)| (to_x(x), to_y(y))).collect();
        plot.draw_series(LineSeries::new(line.iter().copied(), style))
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    plot.configure_series_labels()
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn series(history: &[EpochRecord], label: &str, value: impl Fn(&EpochRecord) -> Option<f64>) -> Series {
    let points =
        history.iter().filter_map(|r| value(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v))).collect();
    Series { label: label.to_owned(), points }
}

fn draw(history: &[EpochRecord], title: &str, rgb: &mut [u8]) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, (FAMILY, 20)).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(WIDTH / 2);

    let losses =
        vec![series(history, "train", |r| Some(r.train_loss)), series(history, "validation", |r| Some(r.val_loss))];
    let mut accuracies = vec![
        series(history, "train", |r| Some(r.train_accuracy)),
        series(history, "validation", |r| Some(r.val_accuracy)),
    ];
    let mut extra_keys: Vec<&String> =
        history.iter().flat_map(|r| r.extra.keys()).filter(|k| k.ends_with("accuracy")).collect();
    extra_keys.sort();
    extra_keys.dedup();
    for key in extra_keys {
        let label = key.trim_end_matches("_accuracy").replace('_', " ");
        accuracies.push(series(history, &label, |r| r.extra.get(key).copied()));
    }
    let epochs = history.iter().map(|r| r.epoch).max().unwrap_or(1) as f64;
    // Multi-stage methods get a grey line where a stage begins.
    let boundaries: Vec<f64> =
        history.windows(2).filter(|w| w[0].stage != w[1].stage).map(|w| w[1].epoch as f64 - 0.5).collect();
    panel(&left, "loss", &losses, epochs, None, &boundaries, SeriesLabelPosition::UpperRight)?;
    panel(&right, "accuracy", &accuracies, epochs, Some(1.0), &boundaries, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    y_desc: &str,
    lines: &[Series],
    epochs: f64,
    y_max: Option<f64>,
    boundaries: &[f64],
    legend: SeriesLabelPosition,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let values = lines.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    // Losses start at zero; accuracies zoom in on the range they span.
    let y_lo = if y_max.is_some() { (lo - pad).max(0.0) } else { 0.0 };
    let y_hi = y_max.map_or(hi + pad, |m| (hi + pad).min(m));
    let y_hi = if y_hi > y_lo { y_hi } else { y_lo + 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..epochs + 0.5, y_lo..y_hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(epochs.min(12.0) as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for &x in boundaries {
        let grey = RGBColor(90, 90, 90).stroke_width(1);
        chart.draw_series(LineSeries::new([(x, y_lo), (x, y_hi)], grey)).map_err(|e| e.to_string())?;
    }
    for (s, color) in lines.iter().zip(PALETTE.iter().cycle()) {
        if s.points.is_empty() {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|e| e.to_string())?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart
            .draw_series(PointSeries::of_element(s.points.iter().copied(), 3, color.filled(), &|c, size, st| {
                Circle::new(c, size, st)
            }))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn record(epoch: usize, loss: f64, acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: loss,
            train_accuracy: acc,
            val_loss: loss * 1.1,
            val_accuracy: acc - 0.05,
            images_per_second: 1000.0,
            lr: 1e-3,
            stage: None,
            extra: BTreeMap::from([("val_aux_accuracy".into(), acc - 0.02)]),
        }
    }

    #[test]
    fn writes_a_png_with_curves_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.curve.png");
        let history: Vec<EpochRecord> = (1..=5).map(|e| record(e, 2.0 / e as f64, 0.5 + 0.08 * e as f64)).collect();
        learning_curve(&history, "run", &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // Coloured line pixels and dark text pixels are both present.
        let has = |want: [u8; 3]| img.pixels().any(|p| p.0 == want);
        assert!(has([31, 119, 180]) && has([255, 127, 14]) && has([44, 160, 44]));
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
        assert!(dark > 500, "{dark}");
        // One epoch and an empty history still draw.
        learning_curve(&history[..1], "one", &path).unwrap();
        learning_curve(&[], "none", &path).unwrap();
    }

    #[test]
    fn line_charts_draw_on_linear_and_log_axes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let lines = vec![
            ("a".to_string(), vec![(1.0, 10.0), (4.0, 30.0), (64.0, 35.0)]),
            ("b".to_string(), vec![(1.0, 5.0), (4.0, 12.0), (64.0, 20.0)]),
        ];
        for log_x in [false, true] {
            let chart = LineChart {
                title: "t".into(),
                x_desc: "x".into(),
                y_desc: "y".into(),
                log_x,
                log_y: log_x,
                lines: lines.clone(),
            };
            line_chart(&chart, &path).unwrap();
            let img = image::open(&path).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH * 3 / 4, HEIGHT));
            let has = |want: [u8; 3]| img.pixels().any(|p| p.0 == want);
            assert!(has([31, 119, 180]) && has([255, 127, 14]), "log_x {log_x}");
        }
        let empty = LineChart {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            log_x: true,
            log_y: false,
            lines: vec![],
        };
        line_chart(&empty, &path).unwrap();
    }
}
