//! TweetEval's seven tasks (Barbieri et al., 2020) with their official metrics, and linear probes:
//! a logistic regression on an embedder's vectors beside TF-IDF + logistic regression, on the
//! same splits (trained on train, L2 chosen on val by the task's metric, scored once on test).
//!
//! Stance is five targets, each probed on its own; their test predictions are pooled before
//! scoring, as the official script does. TweetEval's sentiment folder may lack `train_text.txt`
//! (as `../shared/data` does): its probes are then trained on the validation split, with L2
//! chosen by 5-fold cross-validation on it, and [`ProbeRow::trained_on`] says so.

use crate::features::{word_grams, SparseRow, Standardizer, Tfidf};
use crate::logreg::{LogReg, Schedule};
use crate::metrics::{f1_of, macro_f1, macro_recall};
use crate::Result;
use starling_artifacts::{IoError, Malformed};
use starling_embed::Embedder;
use std::path::Path;

/// One of TweetEval's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// 20 emoji, macro-F1.
    Emoji,
    /// anger, joy, optimism, sadness; macro-F1.
    Emotion,
    /// Hateful or not, macro-F1.
    Hate,
    /// Ironic or not; F1 of the ironic class.
    Irony,
    /// Offensive or not, macro-F1.
    Offensive,
    /// Negative, neutral, positive; macro-recall.
    Sentiment,
    /// None, against, favor over five targets; mean F1 of against and favor.
    Stance,
}

/// The five targets of the stance task.
pub const STANCE_TARGETS: [&str; 5] = ["abortion", "atheism", "climate", "feminist", "hillary"];

impl Task {
    /// Every task, in the paper's order.
    pub const ALL: [Task; 7] = [
        Task::Emoji,
        Task::Emotion,
        Task::Hate,
        Task::Irony,
        Task::Offensive,
        Task::Sentiment,
        Task::Stance,
    ];

    /// Its folder name.
    pub fn name(self) -> &'static str {
        match self {
            Task::Emoji => "emoji",
            Task::Emotion => "emotion",
            Task::Hate => "hate",
            Task::Irony => "irony",
            Task::Offensive => "offensive",
            Task::Sentiment => "sentiment",
            Task::Stance => "stance",
        }
    }

    /// Parses a folder name.
    pub fn parse(s: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Its official metric, in words.
    pub fn metric(self) -> &'static str {
        match self {
            Task::Irony => "F1 (ironic)",
            Task::Sentiment => "macro-recall",
            Task::Stance => "F1 (against, favor)",
            _ => "macro-F1",
        }
    }

    /// Its official metric of `pred` against `gold` (class indices of its mapping).
    pub fn score(self, pred: &[usize], gold: &[usize], classes: usize) -> f64 {
        match self {
            Task::Irony => f1_of(pred, gold, 1),
            Task::Sentiment => macro_recall(pred, gold, classes),
            Task::Stance => (f1_of(pred, gold, 1) + f1_of(pred, gold, 2)) / 2.0,
            _ => macro_f1(pred, gold, classes),
        }
    }

    /// The paper's SVM row (percent).
    pub fn svm(self) -> f64 {
        [29.3, 64.7, 36.7, 61.7, 52.3, 62.9, 67.3][self as usize]
    }

    /// The paper's FastText row (percent).
    pub fn fasttext(self) -> f64 {
        [25.8, 65.2, 50.6, 63.1, 73.4, 62.9, 65.4][self as usize]
    }
}

/// Texts and their class indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// The tweets.
    pub texts: Vec<String>,
    /// One class index each.
    pub labels: Vec<usize>,
}

impl Split {
    fn take(&self, idx: &[usize]) -> Split {
        Split {
            texts: idx.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// One probed unit: a task, or one stance target.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The task, or `stance/<target>`.
    pub name: String,
    /// Absent when the folder has no `train_text.txt`.
    pub train: Option<Split>,
    /// Validation split.
    pub val: Split,
    /// Test split.
    pub test: Split,
    /// Classes in the mapping.
    pub classes: usize,
}

fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IoError::new(path, e).into()),
    }
}

/// Reads `<dir>/<split>_text.txt` and `_labels.txt`; None when the text file is absent.
pub fn read_split(dir: &Path, split: &str, classes: usize) -> Result<Option<Split>> {
    let tp = dir.join(format!("{split}_text.txt"));
    let lp = dir.join(format!("{split}_labels.txt"));
    let Some(texts) = read_text(&tp)? else {
        return Ok(None);
    };
    let labels = read_text(&lp)?.ok_or_else(|| {
        IoError::new(
            &lp,
            std::io::Error::new(std::io::ErrorKind::NotFound, "labels of the text file"),
        )
    })?;
    let texts: Vec<&str> = texts.lines().collect();
    let labels: Vec<&str> = labels.lines().collect();
    if texts.len() != labels.len() {
        return Err(Malformed::new(
            &lp,
            labels.len().min(texts.len()) as u64 + 1,
            format!("{} labels for {} texts", labels.len(), texts.len()),
        )
        .into());
    }
    let mut out = Split::default();
    for (i, (t, l)) in texts.iter().zip(&labels).enumerate() {
        let c = l
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|c| *c < classes)
            .ok_or_else(|| {
                Malformed::new(
                    &lp,
                    i as u64 + 1,
                    format!(
                        "label {:?}: a class index below {classes} expected",
                        l.trim()
                    ),
                )
            })?;
        out.texts.push(t.to_string());
        out.labels.push(c);
    }
    Ok(Some(out))
}

fn classes_of(mapping: &Path) -> Result<usize> {
    let text = read_text(mapping)?.ok_or_else(|| {
        IoError::new(
            mapping,
            std::io::Error::new(std::io::ErrorKind::NotFound, "the task's class mapping"),
        )
    })?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The parts of `task` under TweetEval's root folder.
pub fn read_task(root: &Path, task: Task) -> Result<Vec<Part>> {
    let dir = root.join(task.name());
    let classes = classes_of(&dir.join("mapping.txt"))?;
    let dirs: Vec<(String, std::path::PathBuf)> = if task == Task::Stance {
        STANCE_TARGETS
            .iter()
            .map(|t| (format!("stance/{t}"), dir.join(t)))
            .collect()
    } else {
        vec![(task.name().to_string(), dir)]
    };
    let mut parts = Vec::new();
    for (name, d) in dirs {
        let need = |split: &str| -> Result<Split> {
            read_split(&d, split, classes)?.ok_or_else(|| {
                let p = d.join(format!("{split}_text.txt"));
                IoError::new(
                    &p,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "a required split"),
                )
                .into()
            })
        };
        parts.push(Part {
            name,
            train: read_split(&d, "train", classes)?,
            val: need("val")?,
            test: need("test")?,
            classes,
        });
    }
    Ok(parts)
}

/// How a probe turns texts into rows.
pub enum Features<'a> {
    /// TF-IDF of word unigrams and bigrams, fitted on the training texts.
    Tfidf,
    /// An embedder's vectors, standardised by the training split.
    Embeddings(&'a dyn Embedder),
}

/// The scores of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// The task.
    pub task: Task,
    /// Official metric on the test split, embeddings probe (0..1).
    pub embeddings: f64,
    /// Official metric on the test split, TF-IDF + logistic regression (0..1).
    pub tfidf: f64,
    /// Training examples (summed over stance targets).
    pub train_examples: usize,
    /// Test examples.
    pub test_examples: usize,
    /// `train`, or `val (5-fold)` when the task has no training texts.
    pub trained_on: String,
}

/// L2 strengths tried; the one with the best validation metric is kept.
pub const L2_GRID: [f32; 3] = [1e-2, 1e-3, 1e-4];

/// A probe's rows: the fitting split's, each other split's, the feature count and the schedule.
struct Rows {
    fit: Vec<SparseRow>,
    others: Vec<Vec<SparseRow>>,
    dim: usize,
    schedule: Schedule,
}

/// Rows of `fit` and `others` for `features`, fitted on `fit` (the training texts).
fn rows_for(
    features: &Features,
    fit: &Split,
    others: &[&Split],
    progress: &mut dyn FnMut(usize),
) -> Result<Rows> {
    match features {
        Features::Tfidf => {
            let texts: Vec<&str> = fit.texts.iter().map(String::as_str).collect();
            let t = Tfidf::fit(&texts, word_grams);
            let rows = |s: &Split| s.texts.iter().map(|x| t.row(x)).collect::<Vec<_>>();
            Ok(Rows {
                fit: rows(fit),
                others: others.iter().map(|s| rows(s)).collect(),
                dim: t.dim(),
                schedule: Schedule::SPARSE,
            })
        }
        Features::Embeddings(e) => {
            let mut embed = |s: &Split| -> Result<Vec<Vec<f32>>> {
                let mut out = Vec::with_capacity(s.texts.len());
                for chunk in s.texts.chunks(64) {
                    let c: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    out.extend(e.embed(&c)?);
                    progress(c.len());
                }
                Ok(out)
            };
            let base = embed(fit)?;
            let st = Standardizer::fit(&base);
            let mut rest = Vec::new();
            for s in others {
                rest.push(st.rows(&embed(s)?));
            }
            Ok(Rows {
                fit: st.rows(&base),
                others: rest,
                dim: e.dim(),
                schedule: Schedule::DENSE,
            })
        }
    }
}

fn predict(m: &LogReg, rows: &[SparseRow]) -> Vec<usize> {
    rows.iter().map(|r| m.predict(r)).collect()
}

/// Probes one task with `features`: test predictions pooled over its parts, scored by the
/// task's metric. `progress` hears how many texts were embedded since the last call.
pub fn probe(
    task: Task,
    parts: &[Part],
    features: &Features,
    max_train: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(f64, usize, String)> {
    let (mut pred, mut gold) = (Vec::new(), Vec::new());
    let (mut trained, mut how) = (0usize, "train".to_string());
    let mut classes = 2;
    for part in parts {
        classes = part.classes;
        let score = |m: &LogReg, rows: &[SparseRow], s: &Split| {
            task.score(&predict(m, rows), &s.labels, part.classes)
        };
        let best_of = |models: Vec<(LogReg, f64)>| {
            models
                .into_iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(m, _)| m)
        };
        let model = match &part.train {
            Some(train) => {
                let idx: Vec<usize> = (0..train.texts.len().min(max_train)).collect();
                let train = train.take(&idx);
                trained += train.texts.len();
                let r = rows_for(features, &train, &[&part.val, &part.test], progress)?;
                let models: Vec<(LogReg, f64)> = L2_GRID
                    .iter()
                    .map(|&l2| {
                        let m = LogReg::train(
                            &r.fit,
                            &train.labels,
                            part.classes,
                            r.dim,
                            l2,
                            r.schedule,
                        );
                        let v = score(&m, &r.others[0], &part.val);
                        (m, v)
                    })
                    .collect();
                best_of(models).map(|m| (m, r.others[1].clone()))
            }
            None => {
                // No training texts: L2 by 5-fold cross-validation on val, then all of val.
                how = "val (5-fold)".into();
                trained += part.val.texts.len();
                let n = part.val.texts.len();
                let mut cv = [0f64; L2_GRID.len()];
                for fold in 0..5 {
                    let (held, kept): (Vec<usize>, Vec<usize>) =
                        (0..n).partition(|i| i % 5 == fold);
                    let (fit, held) = (part.val.take(&kept), part.val.take(&held));
                    let r = rows_for(features, &fit, &[&held], progress)?;
                    for (k, &l2) in L2_GRID.iter().enumerate() {
                        let m =
                            LogReg::train(&r.fit, &fit.labels, part.classes, r.dim, l2, r.schedule);
                        cv[k] += score(&m, &r.others[0], &held);
                    }
                }
                let k = (0..cv.len())
                    .max_by(|a, b| cv[*a].total_cmp(&cv[*b]))
                    .unwrap_or(0);
                let r = rows_for(features, &part.val, &[&part.test], progress)?;
                let l2 = L2_GRID[k];
                let m = LogReg::train(
                    &r.fit,
                    &part.val.labels,
                    part.classes,
                    r.dim,
                    l2,
                    r.schedule,
                );
                best_of(vec![(m, 0.0)]).map(|m| (m, r.others[0].clone()))
            }
        };
        if let Some((m, xtest)) = model {
            pred.extend(predict(&m, &xtest));
            gold.extend(part.test.labels.iter().copied());
        }
    }
    Ok((task.score(&pred, &gold, classes), trained, how))
}

/// Probes `task` with both feature kinds.
pub fn probe_task(
    root: &Path,
    task: Task,
    embedder: &dyn Embedder,
    max_train: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<ProbeRow> {
    let parts = read_task(root, task)?;
    let (tfidf, _, _) = probe(task, &parts, &Features::Tfidf, max_train, &mut |_| {})?;
    let (embeddings, train_examples, trained_on) = probe(
        task,
        &parts,
        &Features::Embeddings(embedder),
        max_train,
        progress,
    )?;
    Ok(ProbeRow {
        task,
        embeddings,
        tfidf,
        train_examples,
        test_examples: parts.iter().map(|p| p.test.texts.len()).sum(),
        trained_on,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_metrics_by_task() {
        let gold = [0, 1, 2, 1, 0, 2];
        let pred = [0, 1, 1, 1, 2, 2];
        // against (1): tp 2, fp 1 → 0.8; favor (2): tp 1, fp 1, fn 1 → 0.5.
        assert!((Task::Stance.score(&pred, &gold, 3) - 0.65).abs() < 1e-12);
        // Irony scores the ironic class only.
        assert!((Task::Irony.score(&[1, 0, 1], &[1, 1, 0], 2) - 0.5).abs() < 1e-12);
        // Sentiment: recalls 0.5, 1.0, 0.5.
        assert!((Task::Sentiment.score(&pred, &gold, 3) - 2.0 / 3.0).abs() < 1e-12);
        let avg_svm: f64 = Task::ALL.iter().map(|t| t.svm()).sum::<f64>() / 7.0;
        assert!((avg_svm - 53.5).abs() < 0.1, "{avg_svm}"); // 53.56: the paper rounds down
        let avg_ft: f64 = Task::ALL.iter().map(|t| t.fasttext()).sum::<f64>() / 7.0;
        assert!((avg_ft - 58.1).abs() < 0.1, "{avg_ft}");
    }

    #[test]
    fn probes_score_a_toy_split_as_computed_by_hand() {
        // A toy irony task: "sure" marks irony in train and val; the test holds one ironic and
        // one plain post per word, so a probe that learnt the word gets every test post right
        // and an unlucky one is caught by the hand-computed F1.
        let root = tempfile::tempdir().expect("tmp");
        let d = root.path().join("irony");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("mapping.txt"), "0\tnon_irony\n1\tirony\n").expect("w");
        let split = |n: usize| -> (String, String) {
            let (mut t, mut l) = (String::new(), String::new());
            for i in 0..n {
                let ironic = i % 2 == 0;
                let word = ["rain", "traffic", "monday"][i % 3];
                t.push_str(&format!(
                    "{} {word} again\n",
                    if ironic {
                        "oh sure, love"
                    } else {
                        "ugh i hate"
                    }
                ));
                l.push_str(if ironic { "1\n" } else { "0\n" });
            }
            (t, l)
        };
        for (name, n) in [("train", 60), ("val", 12), ("test", 6)] {
            let (t, l) = split(n);
            std::fs::write(d.join(format!("{name}_text.txt")), t).expect("w");
            std::fs::write(d.join(format!("{name}_labels.txt")), l).expect("w");
        }
        let parts = read_task(root.path(), Task::Irony).expect("read");
        assert_eq!(parts[0].test.labels, vec![1, 0, 1, 0, 1, 0]);
        let e = starling_embed::HashingEmbedder::new(64);
        for f in [Features::Tfidf, Features::Embeddings(&e)] {
            let (score, trained, how) =
                probe(Task::Irony, &parts, &f, usize::MAX, &mut |_| {}).expect("probe");
            assert_eq!((score, trained, how.as_str()), (1.0, 60, "train"));
        }
        // Capped at 10 training posts, still by the same metric; without a train file, 5-fold on val.
        let (_, trained, _) =
            probe(Task::Irony, &parts, &Features::Tfidf, 10, &mut |_| {}).expect("cap");
        assert_eq!(trained, 10);
        std::fs::remove_file(d.join("train_text.txt")).expect("rm");
        let parts = read_task(root.path(), Task::Irony).expect("read");
        let (score, trained, how) = probe(
            Task::Irony,
            &parts,
            &Features::Tfidf,
            usize::MAX,
            &mut |_| {},
        )
        .expect("cv");
        assert_eq!((score, trained, how.as_str()), (1.0, 12, "val (5-fold)"));
    }

    #[test]
    fn splits_are_read_and_bad_labels_named() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(d.path().join("val_text.txt"), "a\nb\n").expect("w");
        std::fs::write(d.path().join("val_labels.txt"), "0\n7\n").expect("w");
        let e = read_split(d.path(), "val", 3).expect_err("label 7");
        assert!(e.to_string().contains("val_labels.txt:2"), "{e}");
        assert!(read_split(d.path(), "train", 3).expect("absent").is_none());
    }
}
