//! `loss.png`: training loss (raw and smoothed) and validation loss against tokens seen.

use crate::StepMetrics;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

/// Makes the bundled DejaVu Sans the plots' "sans-serif" (once per process).
fn register_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws a chart's series labels in its upper right, as every plot here does (`$e` names the
/// file in an error).
macro_rules! legend {
    ($chart:expr, $e:expr) => {
        $chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|x| $e(&x))?
    };
}

/// Draws the curves of `history` into `path` (written to a temp file, then renamed).
pub fn loss_png(history: &[StepMetrics], title: &str, path: &Path) -> Result<(), String> {
    register_font();
    let train: Vec<(f64, f64)> = history
        .iter()
        .filter(|m| m.loss.is_finite())
        .map(|m| (m.tokens as f64 / 1e6, m.loss))
        .collect();
    let val: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|m| m.val_loss.map(|v| (m.tokens as f64 / 1e6, v)))
        .collect();
    if train.is_empty() {
        return Ok(());
    }
    // Exponential moving average, as TensorBoard smooths (0.9).
    let mut ema = Vec::with_capacity(train.len());
    let mut acc = train[0].1;
    for &(x, y) in &train {
        acc = 0.9 * acc + 0.1 * y;
        ema.push((x, acc));
    }
    let x_max = train.last().map(|p| p.0).unwrap_or(1.0).max(1e-6);
    let ys = train.iter().chain(val.iter()).map(|p| p.1);
    let y_max = ys.clone().fold(f64::MIN, f64::max);
    let y_min = ys.fold(f64::MAX, f64::min);
    let pad = ((y_max - y_min) * 0.05).max(0.01);

    // The encoder picks the format from the extension: keep `.png` last.
    let tmp = starling_artifacts::temp_path_keeping_extension(path);
    {
        let root = BitMapBackend::new(&tmp, (960, 600)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("tokens seen (millions)")
            .y_desc("cross-entropy (nats/token)")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
        let light = RGBColor(160, 190, 230);
        chart
            .draw_series(LineSeries::new(
                train.iter().copied(),
                light.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label("train (per step)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], light));
        chart
            .draw_series(LineSeries::new(ema, BLUE.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("train (EMA 0.9)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label("validation")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
            chart
                .draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))
                .map_err(|x| e(&x))?;
        }
        legend!(chart, e);
        root.present().map_err(|x| e(&x))?;
    }
    starling_artifacts::commit(&tmp, path).map_err(|x| x.to_string())
}

/// The title of a run's `loss.png`: name, size and tokens per step.
pub fn run_title(
    run: &std::path::Path,
    params: usize,
    batch: usize,
    accum: usize,
    ctx: usize,
    world: usize,
) -> String {
    format!(
        "{} · {:.1}M params · batch {}x{}x{}{} tokens",
        run.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        params as f64 / 1e6,
        batch,
        accum,
        ctx,
        if world > 1 {
            format!(" x {world} ranks")
        } else {
            String::new()
        }
    )
}

/// A named line of (x, y) points.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// Draws a fine-tuning curve into `path`: losses on the left (training and held-out), a held-out
/// metric (top-1, macro-F1) on the right, both against steps. Written to a temp file, then renamed.
pub fn curve_png(
    path: &Path,
    title: &str,
    losses: &[Series<'_>],
    metric: &Series<'_>,
) -> Result<(), String> {
    register_font();
    let e = |x: &dyn std::fmt::Display| format!("{}: {x}", path.display());
    let all = losses.iter().chain([metric]).flat_map(|s| s.1.iter());
    let x_max = all.map(|p| p.0).fold(1.0, f64::max);
    let range = |pts: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = pts.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        if lo > hi {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.05).max(0.01);
        (lo - pad, hi + pad)
    };
    let (l_lo, l_hi) = range(&mut losses.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let (m_lo, m_hi) = range(&mut metric.1.iter().map(|p| p.1));
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let tmp = starling_artifacts::temp_path_keeping_extension(path);
    {
        let root = BitMapBackend::new(&tmp, (1200, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(|x| e(&x))?;
        let (left, right) = root.split_horizontally(600);
        let panels: [(&_, &str, (f64, f64), Vec<&Series<'_>>); 2] = [
            (&left, "loss", (l_lo, l_hi), losses.iter().collect()),
            (&right, metric.0, (m_lo, m_hi), vec![metric]),
        ];
        for (k, (area, y_desc, (lo, hi), series)) in panels.into_iter().enumerate() {
            let mut chart = ChartBuilder::on(area)
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..x_max, lo..hi)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc("steps")
                .y_desc(y_desc)
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(|x| e(&x))?;
            for (i, (name, pts)) in series.into_iter().enumerate() {
                let c = colors[(i + 2 * k) % colors.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|x| e(&x))?;
            }
            legend!(chart, e);
        }
        root.present().map_err(|x| e(&x))?;
    }
    starling_artifacts::commit(&tmp, path).map_err(|x| x.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_curve_is_drawn_as_a_png() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("curve.png");
        let losses = [
            ("train", vec![(10.0, 3.0), (20.0, 2.5)]),
            ("held-out", vec![(0.0, 3.5), (10.0, 3.1), (20.0, 2.9)]),
        ];
        super::curve_png(
            &path,
            "t",
            &losses,
            &("top-1", vec![(0.0, 0.1), (20.0, 0.3)]),
        )
        .expect("drawn");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[1..4], b"PNG");
        // Empty series draw an empty chart rather than fail.
        super::curve_png(&path, "t", &[], &("top-1", vec![])).expect("empty");
    }
}
