//! Fitting and measuring the bot rule on labelled authors (PAN 2019 "bots and gender"): a
//! stratified 80/20 split of authors by label and language, the content model fitted on the 80%,
//! and the corpus stage's own `bot` verdicts scored on the other 20%.

use crate::bots::{AuthorFeatures, AuthorProfiles, BotModel};
use crate::corpus::{CorpusBuilder, CorpusConfig};
use crate::curate::Preparer;
use crate::error::{Error, Result};
use crate::hash::fx64;
use crate::post::Verdict;
use crate::read::{read_file, Item};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One labelled author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Labelled a bot.
    pub bot: bool,
    /// In the held-out 20% (stratified by label).
    pub held_out: bool,
}

/// Reads a truth file (`author<TAB>bot|human<TAB>...`, header allowed) and splits its authors:
/// within each label, authors sorted by a hash of their name; the last 20% are held out.
pub fn read_truth(path: &Path) -> Result<HashMap<String, Label>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut by_label: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split('\t');
        let (Some(author), Some(kind)) = (f.next(), f.next()) else {
            continue;
        };
        match kind.trim() {
            "bot" => by_label[1].push(author.trim().to_string()),
            "human" => by_label[0].push(author.trim().to_string()),
            "type" if i == 0 => {}
            other => {
                return Err(Error::Format {
                    path: path.into(),
                    line: i as u64 + 1,
                    message: format!("label {other:?} is neither bot nor human"),
                })
            }
        }
    }
    let mut out = HashMap::new();
    for (bot, mut authors) in by_label.into_iter().enumerate() {
        authors.sort_by_key(|a| (fx64(a.as_bytes()), a.clone()));
        let cut = authors.len() - authors.len() / 5;
        for (i, a) in authors.into_iter().enumerate() {
            out.insert(
                a,
                Label {
                    bot: bot == 1,
                    held_out: i >= cut,
                },
            );
        }
    }
    Ok(out)
}

/// Profiles every author of `files` the way the corpus stage does.
pub fn profile_files(files: &[PathBuf], config: &CorpusConfig) -> Result<AuthorProfiles> {
    let preparer = Preparer::new(config.curate.clone());
    let mut profiles = AuthorProfiles::default();
    for file in files {
        read_file(file, &config.read, &mut |item| {
            if let Item::Post(mut post) = item {
                if let Ok(mut prep) = preparer.try_prepare(&mut post) {
                    if let (Some(a), Some(s)) =
                        (AuthorProfiles::author_of(&post), prep.signal.take())
                    {
                        profiles.observe(a, &s, post.created_at.map(|t| t.timestamp_millis()));
                    }
                }
            }
        })?;
    }
    Ok(profiles)
}

/// Scores of the bot verdict on one language's held-out authors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotScores {
    /// Language (file) evaluated.
    pub lang: String,
    /// Held-out bot authors.
    pub bots: u64,
    /// Held-out human authors.
    pub humans: u64,
    /// Authors flagged (at least half of their non-repost posts `bot`) that are bots / all flagged.
    pub precision: f64,
    /// Bots flagged / bots.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Authors classified right / authors.
    pub accuracy: f64,
    /// Share of the human authors' posts that got `bot`.
    pub human_posts_removed: f64,
    /// Posts read / quarantined in the whole file (both splits).
    pub read: u64,
    /// Records quarantined in the whole file.
    pub quarantined: u64,
}

/// The scores as a markdown table, one row per file.
pub fn scores_table(scores: &[BotScores]) -> String {
    let mut out = String::from(
        "| file | held-out bots / humans | precision | recall | F1 | accuracy | human posts removed | read | quarantined |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in scores {
        out.push_str(&format!(
            "| {} | {} / {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2}% | {} | {} |\n",
            s.lang,
            s.bots,
            s.humans,
            s.precision,
            s.recall,
            s.f1,
            s.accuracy,
            100.0 * s.human_posts_removed,
            s.read,
            s.quarantined
        ));
    }
    out
}

/// Fits the content model on the 80% of every language's authors and returns it with its
/// training-set threshold: the most F1 with at most `max_human_fpr` of training humans flagged.
pub fn fit(
    sets: &[(PathBuf, HashMap<String, Label>)],
    config: &CorpusConfig,
    degree: u8,
    l2: f64,
    max_human_fpr: f64,
) -> Result<BotModel> {
    let (mut x, mut y): (Vec<AuthorFeatures>, Vec<bool>) = (Vec::new(), Vec::new());
    let mut names = Vec::new();
    for (file, truth) in sets {
        let profiles = profile_files(std::slice::from_ref(file), config)?;
        for (author, _, f) in profiles.features(1) {
            if let Some(l) = truth.get(&author).filter(|l| !l.held_out) {
                x.push(f);
                y.push(l.bot);
            }
        }
        names.push(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    let mut model = BotModel::fit(
        &x,
        &y,
        degree,
        l2,
        &format!(
            "PAN 2019 bots-and-gender training authors, stratified 80% ({} authors: {})",
            x.len(),
            names.join(", ")
        ),
    );
    let mut scored: Vec<(f64, bool)> = x.iter().map(|f| model.score(f)).zip(y).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let humans = scored.iter().filter(|s| !s.1).count().max(1) as f64;
    let bots = scored.iter().filter(|s| s.1).count().max(1) as f64;
    let (mut tp, mut fp, mut best) = (0.0, 0.0, (0.0, 1.0));
    for (score, bot) in &scored {
        if *bot {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if fp / humans > max_human_fpr {
            break;
        }
        let f1 = 2.0 * tp / (tp + fp + bots);
        if f1 > best.0 {
            best = (f1, *score);
        }
    }
    model.threshold = best.1;
    Ok(model)
}

/// Builds a corpus of `file` with `config` (its bot model set) in `out` and scores the verdicts on
/// the held-out authors of `truth`.
pub fn evaluate(
    file: &Path,
    truth: &HashMap<String, Label>,
    config: &CorpusConfig,
    out: &Path,
) -> Result<BotScores> {
    let m = CorpusBuilder::new(config.clone(), vec![file.to_path_buf()]).build(out, &mut |_| {})?;
    let corpus = crate::Corpus::open(out)?;
    // author → (non-repost posts, bot posts, all posts)
    let mut per: HashMap<String, (u64, u64, u64)> = HashMap::new();
    corpus.for_each_post(&mut |p| {
        if let Some(a) = AuthorProfiles::author_of(&p) {
            let e = per.entry(a.to_string()).or_default();
            e.2 += 1;
            if p.verdict != Verdict::Repost {
                e.0 += 1;
                e.1 += u64::from(p.verdict == Verdict::Bot);
            }
        }
    })?;
    let (mut tp, mut fp, mut fneg, mut tn) = (0u64, 0u64, 0u64, 0u64);
    let (mut human_posts, mut human_bot_posts) = (0u64, 0u64);
    for (author, (own, bot_posts, all)) in &per {
        let Some(l) = truth.get(author).filter(|l| l.held_out) else {
            continue;
        };
        let flagged = *own > 0 && 2 * bot_posts >= *own;
        match (l.bot, flagged) {
            (true, true) => tp += 1,
            (true, false) => fneg += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
        if !l.bot {
            human_posts += all;
            human_bot_posts += bot_posts;
        }
    }
    let div = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (div(tp, tp + fp), div(tp, tp + fneg));
    Ok(BotScores {
        lang: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bots: tp + fneg,
        humans: fp + tn,
        precision,
        recall,
        f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
        accuracy: div(tp + tn, tp + fp + fneg + tn),
        human_posts_removed: div(human_bot_posts, human_posts),
        read: m.counts.read,
        quarantined: m.counts.quarantined,
    })
}

/// How [`pan_2019`] fits the content model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSettings {
    /// 1: linear; 2: with squares and pairwise products.
    pub degree: u8,
    /// L2 penalty on the weights.
    pub l2: f64,
    /// Most share of training humans the threshold may flag.
    pub max_human_fpr: f64,
}

impl Default for FitSettings {
    /// The settings of the shipped `bot_model.json`.
    fn default() -> Self {
        Self {
            degree: 2,
            l2: 30.0,
            max_human_fpr: 0.002,
        }
    }
}

/// The PAN 2019 protocol on `dir` (`train-{en,es}.csv.gz`, `truth-train-{en,es}.tsv`): fit on the
/// stratified 80% of both languages' authors, build each language's corpus with that model in
/// `work` and score it on the held-out 20%.
pub fn pan_2019(
    dir: &Path,
    settings: &FitSettings,
    work: &Path,
) -> Result<(BotModel, Vec<BotScores>)> {
    let mut sets = Vec::new();
    for lang in ["en", "es"] {
        let truth = read_truth(&dir.join(format!("truth-train-{lang}.tsv")))?;
        sets.push((dir.join(format!("train-{lang}.csv.gz")), truth));
    }
    let mut config = CorpusConfig::default();
    let model = fit(
        &sets,
        &config,
        settings.degree,
        settings.l2,
        settings.max_human_fpr,
    )?;
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let model_path = work.join("bot-model.json");
    let json = serde_json::to_vec_pretty(&model).map_err(|e| Error::io(&model_path, e.into()))?;
    starling_artifacts::write_atomic(&model_path, &json)?;
    config.curate.bots.model = Some(model_path.display().to_string());
    let mut scores = Vec::new();
    for (file, truth) in &sets {
        scores.push(evaluate(file, truth, &config, &work.join("corpus"))?);
    }
    Ok((model, scores))
}
