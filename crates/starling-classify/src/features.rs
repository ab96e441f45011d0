//! Feature rows: sparse `(index, value)` pairs, the TF-IDF vocabulary of the lexical baseline,
//! and dense embeddings standardised with the training split's statistics.

use std::collections::HashMap;

/// One example's features: `(index, value)` pairs, indices ascending.
pub type SparseRow = Vec<(usize, f32)>;

/// Lower-cased words of a text: letters, digits, `_`, `'` and a leading `#`; `@mentions` and
/// links are left out (they name accounts and pages, not content).
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| !w.starts_with('@') && !w.contains("://"))
        .flat_map(|w| w.split(|c: char| !(c.is_alphanumeric() || matches!(c, '#' | '_' | '\''))))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty() && w != "#")
        .collect()
}

/// A text's word unigrams and bigrams.
pub fn word_grams(text: &str) -> Vec<String> {
    let w = words(text);
    let mut out = w.clone();
    out.extend(w.windows(2).map(|p| format!("{} {}", p[0], p[1])));
    out
}

/// TF-IDF over the grams seen in at least two training texts: sublinear term frequency
/// (`1 + ln tf`), smoothed idf (`ln((1 + n) / (1 + df)) + 1`), unit-length rows.
#[derive(Debug, Clone)]
pub struct Tfidf {
    vocab: HashMap<String, usize>,
    idf: Vec<f32>,
    grams: fn(&str) -> Vec<String>,
}

impl Tfidf {
    /// Learns the vocabulary and idf of `texts`, split into grams by `grams`.
    pub fn fit(texts: &[&str], grams: fn(&str) -> Vec<String>) -> Self {
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
        Self { vocab, idf, grams }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.idf.len()
    }

    /// A text's row.
    pub fn row(&self, text: &str) -> SparseRow {
        let mut tf: HashMap<usize, f32> = HashMap::new();
        for g in (self.grams)(text) {
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

/// Dense vectors as rows, unchanged.
pub fn dense_rows(vectors: &[Vec<f32>]) -> Vec<SparseRow> {
    vectors
        .iter()
        .map(|v| v.iter().copied().enumerate().collect())
        .collect()
}

/// Per-dimension mean and standard deviation of training vectors, applied to every split
/// (a linear probe's L2 penalty then means the same on every dimension).
#[derive(Debug, Clone)]
pub struct Standardizer {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Standardizer {
    /// Statistics of `train`.
    pub fn fit(train: &[Vec<f32>]) -> Self {
        let dim = train.first().map_or(0, Vec::len);
        let n = train.len().max(1) as f64;
        let mut mean = vec![0f64; dim];
        for v in train {
            for (m, x) in mean.iter_mut().zip(v) {
                *m += f64::from(*x) / n;
            }
        }
        let mut var = vec![0f64; dim];
        for v in train {
            for ((s, x), m) in var.iter_mut().zip(v).zip(&mean) {
                *s += (f64::from(*x) - m).powi(2) / n;
            }
        }
        Self {
            mean: mean.iter().map(|m| *m as f32).collect(),
            inv_std: var
                .iter()
                .map(|s| {
                    if *s > 1e-12 {
                        (1.0 / s.sqrt()) as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
        }
    }

    /// `vectors` standardised, as rows.
    pub fn rows(&self, vectors: &[Vec<f32>]) -> Vec<SparseRow> {
        vectors
            .iter()
            .map(|v| {
                v.iter()
                    .zip(self.mean.iter().zip(&self.inv_std))
                    .map(|(x, (m, s))| (x - m) * s)
                    .enumerate()
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_drop_mentions_and_links_and_keep_tags() {
        assert_eq!(
            words("@bob Don't miss #NBA-finals https://t.co/x tonight!"),
            vec!["don't", "miss", "#nba", "finals", "tonight"]
        );
        assert_eq!(word_grams("a b c").len(), 5);
    }

    #[test]
    fn tfidf_rows_are_unit_length_over_shared_grams() {
        let t = Tfidf::fit(&["red apple", "red car", "blue sky"], word_grams);
        assert_eq!(t.dim(), 1); // only "red" is in two texts
        let r = t.row("red red fox");
        assert_eq!(r.len(), 1);
        assert!((r[0].1 - 1.0).abs() < 1e-6);
        assert!(t.row("fox").is_empty());
    }

    #[test]
    fn standardizer_centres_and_scales_by_train() {
        let s = Standardizer::fit(&[vec![1.0, 5.0], vec![3.0, 5.0]]);
        let r = s.rows(&[vec![3.0, 7.0]]);
        assert_eq!(r[0], vec![(0, 1.0), (1, 0.0)]);
    }
}
