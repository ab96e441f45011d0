//! `loss.png`: training loss (raw and smoothed) and validation loss against tokens seen.

use crate::StepMetrics;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

/// Draws the curves of `history` into `path` (written to a temp file, then renamed).
pub fn loss_png(history: &[StepMetrics], title: &str, path: &Path) -> Result<(), String> {
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
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
