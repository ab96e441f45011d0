//! Brand safety: a logistic-regression classifier on the model's embeddings that says when a
//! context is unsafe to place ads beside, trained on TweetEval's hate and offensive *train*
//! files, with its threshold chosen on their validation files; and the TF-IDF + logistic
//! regression baseline trained and scored on the same split.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use starling_embed::Embedder;
use std::collections::HashMap;
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
        let s: Self = serde_json::from_str(&text).map_err(|e| Error::Data {
            path: path.display().to_string(),
            line: e.line(),
            reason: e.to_string(),
        })?;
        if s.weights.is_empty() || s.weights.iter().any(|w| !w.is_finite()) {
            return Err(Error::Data {
                path: path.display().to_string(),
                line: 1,
                reason: "weights must be finite and non-empty".into(),
            });
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
    let tp = dir.join(task).join(format!("{split}_text.txt"));
    let lp = dir.join(task).join(format!("{split}_labels.txt"));
    let texts = std::fs::read_to_string(&tp).map_err(|e| Error::io(&tp, e))?;
    let labels = std::fs::read_to_string(&lp).map_err(|e| Error::io(&lp, e))?;
    let texts: Vec<&str> = texts.lines().collect();
    let labels: Vec<&str> = labels.lines().collect();
    if texts.len() != labels.len() {
        return Err(Error::Data {
            path: lp.display().to_string(),
            line: labels.len().min(texts.len()) + 1,
            reason: format!("{} labels for {} texts", labels.len(), texts.len()),
        });
    }
    texts
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (t, l))| match l.trim() {
            "0" => Ok(Labelled {
                text: t.to_string(),
                unsafe_: false,
            }),
            "1" => Ok(Labelled {
                text: t.to_string(),
                unsafe_: true,
            }),
            other => Err(Error::Data {
                path: lp.display().to_string(),
                line: i + 1,
                reason: format!("label {other:?} (0 or 1 expected)"),
            }),
        })
        .collect()
}

/// Macro-F1 of predictions against labels.
pub fn macro_f1(pred: &[bool], gold: &[bool]) -> f64 {
    let f1 = |cls: bool| {
        let tp = pred
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p == cls && **g == cls)
            .count() as f64;
        let fp = pred
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p == cls && **g != cls)
            .count() as f64;
        let fn_ = pred
            .iter()
            .zip(gold)
            .filter(|(p, g)| **p != cls && **g == cls)
            .count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        }
    };
    (f1(true) + f1(false)) / 2.0
}

/// Sparse rows: (index, value) pairs.
type SparseRow = Vec<(usize, f32)>;

/// Logistic regression trained by full-batch Adam with L2 and balanced class weights.
struct LogReg {
    w: Vec<f32>,
    b: f32,
}

impl LogReg {
    fn score(&self, row: &SparseRow) -> f64 {
        let z: f32 = row.iter().map(|(i, v)| self.w[*i] * v).sum::<f32>() + self.b;
        1.0 / (1.0 + (-(z as f64)).exp())
    }

    fn train(rows: &[SparseRow], y: &[bool], dim: usize, l2: f32, epochs: usize) -> Self {
        let pos = y.iter().filter(|v| **v).count().max(1) as f32;
        let neg = (y.len() as f32 - pos).max(1.0);
        let (wp, wn) = (y.len() as f32 / (2.0 * pos), y.len() as f32 / (2.0 * neg));
        let mut m = LogReg {
            w: vec![0.0; dim],
            b: 0.0,
        };
        let (mut mw, mut vw) = (vec![0f32; dim], vec![0f32; dim]);
        let (mut mb, mut vb) = (0f32, 0f32);
        let (lr, b1, b2, eps) = (0.05f32, 0.9f32, 0.999f32, 1e-8f32);
        let n = y.len() as f32;
        for t in 1..=epochs {
            let mut gw = vec![0f32; dim];
            let mut gb = 0f32;
            for (row, &label) in rows.iter().zip(y) {
                let p = m.score(row) as f32;
                let g = (p - if label { 1.0 } else { 0.0 }) * if label { wp } else { wn };
                for (i, v) in row {
                    gw[*i] += g * v;
                }
                gb += g;
            }
            let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for i in 0..dim {
                let g = gw[i] / n + l2 * m.w[i];
                mw[i] = b1 * mw[i] + (1.0 - b1) * g;
                vw[i] = b2 * vw[i] + (1.0 - b2) * g * g;
                m.w[i] -= lr * (mw[i] / c1) / ((vw[i] / c2).sqrt() + eps);
            }
            let g = gb / n;
            mb = b1 * mb + (1.0 - b1) * g;
            vb = b2 * vb + (1.0 - b2) * g * g;
            m.b -= lr * (mb / c1) / ((vb / c2).sqrt() + eps);
        }
        m
    }
}

fn dense_rows(vectors: &[Vec<f32>]) -> Vec<SparseRow> {
    vectors
        .iter()
        .map(|v| v.iter().enumerate().map(|(i, x)| (i, *x)).collect())
        .collect()
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
        for k in 10..=90 {
            let th = k as f64 / 100.0;
            let pred: Vec<bool> = scores.iter().map(|s| *s >= th).collect();
            let f = macro_f1(&pred, yval);
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

/// The TF-IDF vocabulary of the baseline: word unigrams and bigrams seen in at least two training
/// texts, sublinear term frequency, unit-length rows.
struct Tfidf {
    vocab: HashMap<String, usize>,
    idf: Vec<f32>,
}

fn grams(text: &str) -> Vec<String> {
    let words: Vec<String> = crate::decide::terms(text)
        .into_iter()
        .filter(|w| !w.starts_with("@"))
        .collect();
    let mut out = words.clone();
    out.extend(words.windows(2).map(|w| format!("{} {}", w[0], w[1])));
    out
}

impl Tfidf {
    fn fit(texts: &[&str]) -> Self {
        let mut df: HashMap<String, usize> = HashMap::new();
        for t in texts {
            let mut g = grams(t);
            g.sort();
            g.dedup();
            for x in g {
                *df.entry(x).or_default() += 1;
            }
        }
        let mut keys: Vec<(String, usize)> = df.into_iter().filter(|(_, d)| *d >= 2).collect();
        keys.sort();
        let n = texts.len() as f32;
        let idf = keys
            .iter()
            .map(|(_, d)| ((1.0 + n) / (1.0 + *d as f32)).ln() + 1.0)
            .collect();
        let vocab = keys
            .into_iter()
            .enumerate()
            .map(|(i, (k, _))| (k, i))
            .collect();
        Self { vocab, idf }
    }

    fn row(&self, text: &str) -> SparseRow {
        let mut tf: HashMap<usize, f32> = HashMap::new();
        for g in grams(text) {
            if let Some(&i) = self.vocab.get(&g) {
                *tf.entry(i).or_default() += 1.0;
            }
        }
        let mut row: SparseRow = tf
            .into_iter()
            .map(|(i, c)| (i, (1.0 + c.ln()) * self.idf[i]))
            .collect();
        row.sort_by_key(|(i, _)| *i);
        let norm = row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        row
    }
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
    let score_all = |name: &str, scores: Vec<(String, Vec<bool>, Vec<bool>)>| -> Vec<SafetyScore> {
        let _ = name;
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
    };

    // Baseline: TF-IDF + logistic regression.
    let tf = Tfidf::fit(&texts(&data.train));
    let rows = |d: &[Labelled]| d.iter().map(|l| tf.row(&l.text)).collect::<Vec<_>>();
    let (m, th) = fit(
        &rows(&data.train),
        &ytr,
        &rows(&data.val),
        &yval,
        tf.idf.len(),
        epochs,
    );
    let tfidf = score_all(
        "tfidf",
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
        "embeddings",
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
