//! `starling ads train-safety`: the brand-safety classifier on TweetEval's hate and offensive
//! tasks (logistic regression on the model's embeddings beside TF-IDF, and optionally the model
//! fine-tuned as the classifier).

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// `starling ads train-safety`.
#[derive(Args)]
pub struct TrainSafetyArgs {
    /// Model whose embeddings the classifier reads.
    #[arg(long)]
    model: PathBuf,
    /// TweetEval directory (holding hate/ and offensive/).
    #[arg(long, default_value = "../shared/data/tweeteval")]
    data: PathBuf,
    /// Output classifier file.
    #[arg(long, default_value = "out/brand-safety.json")]
    out: PathBuf,
    /// Training epochs (full batch).
    #[arg(long, default_value_t = 150)]
    epochs: usize,
    /// Also fine-tune the language model as the classifier (a head on its pooled states, trained
    /// with its weights) and score it on the same split.
    #[arg(long)]
    fine_tune: bool,
    /// Fine-tuning steps (batches of 32 tweets; the step best on validation is kept).
    #[arg(long, default_value_t = 600)]
    fine_tune_steps: usize,
    /// Fine-tune only this many top blocks (and the final norm); all weights when absent.
    #[arg(long)]
    train_blocks: Option<usize>,
    /// Fine-tuning learning rate of the model's weights.
    #[arg(long, default_value_t = 1e-4)]
    fine_tune_lr: f64,
}

/// Runs `starling ads train-safety`.
pub fn train_safety(a: &TrainSafetyArgs) -> Result<()> {
    let started = Instant::now();
    let data = starling_ads::safety::SafetyData::read(&a.data)
        .with_context(|| format!("reading TweetEval under {}", a.data.display()))?;
    let embedder = crate::search_cmd::load_embedder(&a.model, crate::search_cmd::DEFAULT_POOLING)?;
    let total =
        data.train.len() + data.val.len() + data.tests.iter().map(|t| t.1.len()).sum::<usize>();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "embedding [{bar:30}] {pos}/{len} tweets ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden: a line every tenth of the way instead.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let step = (total / 10).max(1);
    let t = Instant::now();
    let s = starling_ads::safety::train(&embedder, &data, a.epochs, &|n| {
        if plain && n / step != n.saturating_sub(64) / step {
            eprintln!(
                "train-safety: embedded {n}/{total} tweets in {:.0}s",
                t.elapsed().as_secs_f64()
            );
        }
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    let mut s = s;
    if a.fine_tune {
        let scores = fine_tune_safety(a, &data)?;
        if let Some(r) = s.report.as_mut() {
            r.fine_tuned = Some(scores);
        }
    }
    if let Some(r) = &s.report {
        println!(
            "brand safety: trained on {} TweetEval hate + offensive train tweets (threshold {:.2} chosen on val); macro-F1 on the test files:",
            r.train_examples, s.threshold
        );
        let ft = r.fine_tuned.as_deref().unwrap_or_default();
        let ft_head = if ft.is_empty() {
            ""
        } else {
            " fine-tuned model |"
        };
        println!(
            "| test file | tweets | starling embeddings + LR | TF-IDF + LR |{ft_head}\n|---|---|---|---|{}",
            if ft.is_empty() { "" } else { "---|" }
        );
        for (i, (e, t)) in r.embeddings.iter().zip(&r.tfidf).enumerate() {
            let f = ft
                .get(i)
                .map_or(String::new(), |f| format!(" {:.3} |", f.macro_f1));
            println!(
                "| {} | {} | {:.3} | {:.3} |{f}",
                e.test, e.examples, e.macro_f1, t.macro_f1
            );
        }
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    starling_artifacts::write_atomic(&a.out, &serde_json::to_vec_pretty(&s)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "brand safety: {} in {:.0}s",
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fine-tunes the language model of `--model` as the brand-safety classifier on the same train
/// files, keeps the step best on validation, and scores it on the test files.
fn fine_tune_safety(
    a: &TrainSafetyArgs,
    data: &starling_ads::safety::SafetyData,
) -> Result<Vec<starling_ads::safety::SafetyScore>> {
    let md = starling_train::ModelDir::open(&a.model)?;
    fn pairs(d: &[starling_ads::safety::Labelled]) -> Vec<(&str, usize)> {
        d.iter()
            .map(|l| (l.text.as_str(), usize::from(l.unsafe_)))
            .collect()
    }
    let cfg = starling_model::ClassifyConfig {
        steps: a.fine_tune_steps,
        lr: a.fine_tune_lr,
        train_blocks: a.train_blocks,
        eval_every: (a.fine_tune_steps / 6).max(1),
        ..Default::default()
    };
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("fine-tuning [{bar:30}] {pos}/{len} steps {msg} (eta {eta})")?
            .progress_chars("=> "),
    );
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let t = Instant::now();
    let (clf, report) = starling_model::fine_tune(
        &md.dir,
        &md.weights,
        &pairs(&data.train),
        &pairs(&data.val),
        2,
        &cfg,
        &mut |step, loss| {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.3}"));
            if plain && step % cfg.eval_every.max(1) == 0 {
                eprintln!(
                    "fine-tune: step {step}/{} loss {loss:.3} ({:.0}s)",
                    cfg.steps,
                    t.elapsed().as_secs_f64()
                );
            }
        },
    )
    .with_context(|| format!("fine-tuning {}", md.dir.display()))?;
    bar.finish_and_clear();
    let png = a.out.with_extension("fine-tune.png");
    let points = |f: &dyn Fn(&starling_model::classifier::ClassifyPoint) -> Option<f64>| {
        report
            .curve
            .iter()
            .filter_map(|c| f(c).map(|y| (c.step as f64, y)))
            .collect::<Vec<_>>()
    };
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    starling_train::plot::curve_png(
        &png,
        &format!("brand safety fine-tune · {}", md.dir.display()),
        &[("train cross-entropy", points(&|c| c.train_loss))],
        &("validation macro-F1", points(&|c| Some(c.val_macro_f1))),
    )
    .map_err(anyhow::Error::msg)?;
    println!("fine-tune: curve → {}", png.display());
    let curve: Vec<String> = report
        .curve
        .iter()
        .map(|p| format!("{}: {:.3}", p.step, p.val_macro_f1))
        .collect();
    println!(
        "fine-tune: {} blocks of {} trained ({}), {} steps in {:.0}s; validation macro-F1 by step {}; kept step {}",
        report.trained_blocks,
        if report.all_weights { "all weights" } else { "top blocks + final norm" },
        md.dir.display(),
        report.steps,
        t.elapsed().as_secs_f64(),
        curve.join(", "),
        report.best_step
    );
    let (threshold, scores) = starling_ads::safety::score_classifier(data, |texts: &[&str]| {
        clf.probabilities(texts)
            .map(|p| p.iter().map(|r| f64::from(r[1])).collect::<Vec<f64>>())
    })?;
    println!("fine-tune: threshold {threshold:.2} chosen on val");
    Ok(scores)
}
