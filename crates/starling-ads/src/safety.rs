//! Brand safety: a logistic-regression classifier on the model's embeddings that says when a
//! context is unsafe to place ads beside, trained on TweetEval's hate and offensive *train*
//! files, with its threshold chosen on their validation files; and the TF-IDF + logistic
//! regression baseline trained and scored on the same split.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use starling_artifacts::Malformed;
use starling_classify::features::dense_rows;
use starling_classify::logreg::Schedule;
use starling_classify::{SparseRow, Tfidf};
use starling_embed::Embedder;
use std::path::Path;

/// The classifier a server loads (`brand-safety.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrandSafety {
    /// The embedder whose vectors it reads.
    pub embedder_id: String,
    /// One weight per dimension.
    pub weights: Vec<f32>,
    /// Bias.
    pub bias: f32,
    /// Unsafe at or above this probability.
    pub threshold: f64,
    /// How it scored when trained.
    pub report: Option<SafetyReport>,
}

impl BrandSafety {
    /// Probability that the context of `vector` is unsafe.
    pub fn unsafe_probability(&self, vector: &[f32]) -> f64 {
        let z: f32 = self
            .weights
            .iter()
            .zip(vector)
            .map(|(w, x)| w * x)
            .sum::<f32>()
            + self.bias;
        1.0 / (1.0 + (-(z as f64)).exp())
    }

    /// Reads a classifier file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let s: Self = serde_json::from_str(&text)
            .map_err(|e| Malformed::new(path, e.line() as u64, e.to_string()))?;
        if s.weights.is_empty() || s.weights.iter().any(|w| !w.is_finite()) {
            return Err(Malformed::new(path, 1, "weights must be finite and non-empty").into());
        }
        Ok(s)
    }
}

/// Macro-F1 of one classifier on one test file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SafetyScore {
    /// `hate`, `offensive`, or `both`.
    pub test: String,
    /// Examples.
    pub examples: usize,
    /// Macro-F1 (mean of the two classes' F1).
    pub macro_f1: f64,
}

/// Both classifiers' scores on every test file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SafetyReport {
    /// Classifier on the embeddings.
    pub embeddings: Vec<SafetyScore>,
    /// TF-IDF + logistic regression.
    pub tfidf: Vec<SafetyScore>,
    /// Training examples (hate + offensive train files).
    pub train_examples: usize,
    /// The model fine-tuned as a classifier (`ads train-safety --fine-tune`), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tuned: Option<Vec<SafetyScore>>,
}

/// A labelled text.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The tweet.
    pub text: String,
    /// Unsafe (hateful or offensive).
    pub unsafe_: bool,
}

/// Reads `<dir>/<task>/<split>_text.txt` and `_labels.txt` (label 1 = hateful / offensive).
pub fn read_split(dir: &Path, task: &str, split: &str) -> Result<Vec<Labelled>> {
    use starling_classify::Error as E;
    let found = starling_classify::tweeteval::read_split(&dir.join(task), split, 2).map_err(
        |e| match e {
            E::Io(io) => Error::Io(io),
            E::Data(m) => Error::Data(m),
            E::Embed(e) => Error::Embed(e),
        },
    )?;
    let s = found.ok_or_else(|| {
        let p = dir.join(task).join(format!("{split}_text.txt"));
        Error::io(
            &p,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        )
    })?;
    Ok(s.texts
        .into_iter()
        .zip(s.labels)
        .map(|(text, l)| Labelled {
            text,
            unsafe_: l == 1,
        })
        .collect())
}

/// Macro-F1 of predictions against labels.
pub fn macro_f1(pred: &[bool], gold: &[bool]) -> f64 {
    let idx = |v: &[bool]| v.iter().map(|b| usize::from(*b)).collect::<Vec<_>>();
    starling_classify::metrics::macro_f1(&idx(pred), &idx(gold), 2)
}

/// Logistic regression of the classifier and the baseline (two-class softmax as one sigmoid).
struct LogReg {
    w: Vec<f32>,
    b: f32,
}

impl LogReg {
    fn score(&self, row: &SparseRow) -> f64 {
        let z: f32 = row.iter().map(|(i, v)| self.w[*i] * v).sum::<f32>() + self.b;
        1.0 / (1.0 + (-(z as f64)).exp())
    }

    /// Full-batch Adam, balanced classes, L2 `l2`.
    fn train(rows: &[SparseRow], y: &[bool], dim: usize, l2: f32, epochs: usize) -> Self {
        let y: Vec<usize> = y.iter().map(|b| usize::from(*b)).collect();
        let schedule = Schedule {
            epochs,
            ..Schedule::SPARSE
        };
        let (w, b) = starling_classify::LogReg::train(rows, &y, 2, dim, l2, schedule).binary();
        Self { w, b }
    }
}

/// The first threshold `k / 100` (k in `percents`) with the best macro-F1 of `scores >= k / 100`
/// against `gold`, and that macro-F1.
fn best_threshold(
    scores: &[f64],
    gold: &[bool],
    percents: std::ops::RangeInclusive<u32>,
) -> (f64, f64) {
    let mut best = (0.5, f64::NEG_INFINITY);
    for k in percents {
        let th = f64::from(k) / 100.0;
        let pred: Vec<bool> = scores.iter().map(|s| *s >= th).collect();
        let f = macro_f1(&pred, gold);
        if f > best.1 {
            best = (th, f);
        }
    }
    best
}

/// Chooses the L2 strength and threshold with the best macro-F1 on `val`.
fn fit(
    train: &[SparseRow],
    ytrain: &[bool],
    val: &[SparseRow],
    yval: &[bool],
    dim: usize,
    epochs: usize,
) -> (LogReg, f64) {
    let mut best: Option<(LogReg, f64, f64)> = None;
    for l2 in [1e-2f32, 1e-3, 1e-4] {
        let m = LogReg::train(train, ytrain, dim, l2, epochs);
        let scores: Vec<f64> = val.iter().map(|r| m.score(r)).collect();
        let (th, f) = best_threshold(&scores, yval, 10..=90);
        if best.as_ref().is_none_or(|b| f > b.2) {
            best = Some((
                LogReg {
                    w: m.w.clone(),
                    b: m.b,
                },
                th,
                f,
            ));
        }
    }
    match best {
        Some((m, th, _)) => (m, th),
        None => (
            LogReg {
                w: vec![0.0; dim],
                b: 0.0,
            },
            0.5,
        ),
    }
}

/// The baseline's grams: the ad matcher's words (mentions left out), unigrams and bigrams.
fn grams(text: &str) -> Vec<String> {
    let words: Vec<String> = crate::decide::terms(text)
        .into_iter()
        .filter(|w| !w.starts_with("@"))
        .collect();
    let mut out = words.clone();
    out.extend(words.windows(2).map(|w| format!("{} {}", w[0], w[1])));
    out
}

fn embed_all(e: &dyn Embedder, texts: &[&str], progress: &dyn Fn(usize)) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        out.extend(e.embed(chunk)?);
        progress(out.len());
    }
    Ok(out)
}

/// The data of one training run: train, validation and the two test files.
pub struct SafetyData {
    /// Hate + offensive train files.
    pub train: Vec<Labelled>,
    /// Hate + offensive validation files.
    pub val: Vec<Labelled>,
    /// Test files by task.
    pub tests: Vec<(String, Vec<Labelled>)>,
}

impl SafetyData {
    /// Reads TweetEval's hate and offensive splits under `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let mut train = read_split(dir, "hate", "train")?;
        train.extend(read_split(dir, "offensive", "train")?);
        let mut val = read_split(dir, "hate", "val")?;
        val.extend(read_split(dir, "offensive", "val")?);
        let tests = vec![
            ("hate".to_string(), read_split(dir, "hate", "test")?),
            (
                "offensive".to_string(),
                read_split(dir, "offensive", "test")?,
            ),
        ];
        Ok(Self { train, val, tests })
    }
}

/// Each test file's macro-F1 and that of all of them pooled (`both`), from (file, predictions, gold).
fn score_all(scores: Vec<(String, Vec<bool>, Vec<bool>)>) -> Vec<SafetyScore> {
    let mut out: Vec<SafetyScore> = scores
        .iter()
        .map(|(t, p, g)| SafetyScore {
            test: t.clone(),
            examples: g.len(),
            macro_f1: macro_f1(p, g),
        })
        .collect();
    let (p, g): (Vec<bool>, Vec<bool>) = scores
        .iter()
        .flat_map(|(_, p, g)| p.iter().copied().zip(g.iter().copied()))
        .unzip();
    out.push(SafetyScore {
        test: "both".into(),
        examples: g.len(),
        macro_f1: macro_f1(&p, &g),
    });
    out
}

/// Scores any classifier of unsafe probability on the same split: the threshold with the best
/// macro-F1 on the validation files, then each test file at it. `probability` maps texts to
/// P(unsafe) in order. Returns (threshold, scores).
pub fn score_classifier<E, F>(
    data: &SafetyData,
    mut probability: F,
) -> std::result::Result<(f64, Vec<SafetyScore>), E>
where
    F: FnMut(&[&str]) -> std::result::Result<Vec<f64>, E>,
{
    fn texts(d: &[Labelled]) -> Vec<&str> {
        d.iter().map(|l| l.text.as_str()).collect()
    }
    let gold = |d: &[Labelled]| d.iter().map(|l| l.unsafe_).collect::<Vec<_>>();
    let val = probability(&texts(&data.val))?;
    let yval = gold(&data.val);
    let best = best_threshold(&val, &yval, 1..=99);
    let mut scored = Vec::new();
    for (t, d) in &data.tests {
        let p = probability(&texts(d))?;
        scored.push((t.clone(), p.iter().map(|p| *p >= best.0).collect(), gold(d)));
    }
    Ok((best.0, score_all(scored)))
}

/// Trains both classifiers; returns the embedding classifier (with both scores in its report).
/// `progress` hears how many texts have been embedded so far.
pub fn train(
    e: &dyn Embedder,
    data: &SafetyData,
    epochs: usize,
    progress: &dyn Fn(usize),
) -> Result<BrandSafety> {
    let labels = |d: &[Labelled]| d.iter().map(|l| l.unsafe_).collect::<Vec<_>>();
    fn texts(d: &[Labelled]) -> Vec<&str> {
        d.iter().map(|l| l.text.as_str()).collect()
    }
    let (ytr, yval) = (labels(&data.train), labels(&data.val));

    // Baseline: TF-IDF + logistic regression.
    let tf = Tfidf::fit(&texts(&data.train), grams);
    let rows = |d: &[Labelled]| d.iter().map(|l| tf.row(&l.text)).collect::<Vec<_>>();
    let (m, th) = fit(
        &rows(&data.train),
        &ytr,
        &rows(&data.val),
        &yval,
        tf.dim(),
        epochs,
    );
    let tfidf = score_all(
        data.tests
            .iter()
            .map(|(t, d)| {
                let p = rows(d).iter().map(|r| m.score(r) >= th).collect();
                (t.clone(), p, labels(d))
            })
            .collect(),
    );

    // The embedding classifier.
    let mut done = 0usize;
    let mut embed = |d: &[Labelled]| -> Result<Vec<Vec<f32>>> {
        let base = done;
        let v = embed_all(e, &texts(d), &|n| progress(base + n))?;
        done += d.len();
        Ok(v)
    };
    let xtr = dense_rows(&embed(&data.train)?);
    let xval = dense_rows(&embed(&data.val)?);
    let mut tests = Vec::new();
    for (t, d) in &data.tests {
        tests.push((t.clone(), dense_rows(&embed(d)?), labels(d)));
    }
    let (m, th) = fit(&xtr, &ytr, &xval, &yval, e.dim(), epochs);
    let embeddings = score_all(
        tests
            .iter()
            .map(|(t, x, g)| {
                (
                    t.clone(),
                    x.iter().map(|r| m.score(r) >= th).collect(),
                    g.clone(),
                )
            })
            .collect(),
    );
    Ok(BrandSafety {
        embedder_id: e.id().to_string(),
        weights: m.w,
        bias: m.b,
        threshold: th,
        report: Some(SafetyReport {
            embeddings,
            tfidf,
            train_examples: data.train.len(),
            fine_tuned: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_by_hand() {
        // class true: tp 1, fp 1, fn 1 -> 0.5; class false: tp 1, fp 1, fn 1 -> 0.5.
        let p = [true, true, false, false];
        let g = [true, false, true, false];
        assert!((macro_f1(&p, &g) - 0.5).abs() < 1e-12);
        assert!((macro_f1(&g, &g) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn any_classifier_is_scored_at_its_validation_threshold() {
        let l = |text: &str, u: bool| Labelled {
            text: text.into(),
            unsafe_: u,
        };
        let data = SafetyData {
            train: vec![],
            val: vec![l("bad a", true), l("ok a", false), l("bad b", true)],
            tests: vec![
                ("hate".into(), vec![l("bad c", true), l("ok c", false)]),
                ("offensive".into(), vec![l("ok d", false), l("ok e", true)]),
            ],
        };
        // P(unsafe) 0.7 for texts starting "bad", 0.2 otherwise: any threshold in (0.2, 0.7]
        // is perfect on validation, and the first such is taken.
        let mut p = |t: &[&str]| -> std::result::Result<Vec<f64>, ()> {
            Ok(t.iter()
                .map(|t| if t.starts_with("bad") { 0.7 } else { 0.2 })
                .collect())
        };
        let (th, scores) = score_classifier(&data, &mut p).unwrap();
        assert!((th - 0.21).abs() < 1e-9, "{th}");
        let f: Vec<(&str, usize, f64)> = scores
            .iter()
            .map(|s| (s.test.as_str(), s.examples, s.macro_f1))
            .collect();
        // offensive: "ok e" is unsafe but scored safe → class true F1 0, class false F1 2/3.
        assert_eq!(f[0], ("hate", 2, 1.0));
        assert_eq!((f[1].0, f[1].1), ("offensive", 2));
        assert!((f[1].2 - 1.0 / 3.0).abs() < 1e-12, "{f:?}");
        assert_eq!((f[2].0, f[2].1), ("both", 4));
    }

    #[test]
    fn logistic_regression_separates_a_separable_set() {
        let rows: Vec<SparseRow> = (0..200)
            .map(|i| vec![(0, if i % 2 == 0 { 1.0 } else { -1.0 }), (1, 0.3)])
            .collect();
        let y: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
        let m = LogReg::train(&rows, &y, 2, 1e-4, 200);
        let pred: Vec<bool> = rows.iter().map(|r| m.score(r) >= 0.5).collect();
        assert_eq!(macro_f1(&pred, &y), 1.0);
    }
}
