//! pCTR: FTRL-Proximal logistic regression on hashed features (McMahan et al., KDD 2013),
//! learned online from logged events.
//!
//! Clicks arrive after their impressions, so the model learns the way Twitter's ads models did
//! (Ktena et al., RecSys 2019, "fake negative" training): every impression is learned at once as
//! a negative, and a click later adds the same features as a positive. The model then estimates
//! `q = p / (1 + p)`, and `p = q / (1 - q)` recovers the click probability. A new ad has no
//! weights of its own: its prediction is the prior (a fixed log-odds offset) moved by the shared
//! features (advertiser, placement, position, context terms, similarity).

use crate::types::Placement;
use serde::{Deserialize, Serialize};

/// Hyper-parameters (the paper's names).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FtrlConfig {
    /// Per-coordinate learning-rate scale.
    pub alpha: f64,
    /// Learning-rate smoothing.
    pub beta: f64,
    /// L1 strength (sparsity).
    pub l1: f64,
    /// L2 strength.
    pub l2: f64,
    /// log2 of the hashed weight table's size.
    pub bits: u32,
    /// Click probability assumed for an ad the model knows nothing about.
    pub prior_ctr: f64,
}

impl Default for FtrlConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            beta: 1.0,
            l1: 0.5,
            l2: 1.0,
            bits: 20,
            prior_ctr: 0.01,
        }
    }
}

/// What the model sees of one impression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdFeatures {
    /// Creative id.
    pub creative: String,
    /// Ad group id.
    pub group: String,
    /// Advertiser id.
    pub advertiser: String,
    /// Placement.
    pub placement: Placement,
    /// Slot, 0-based.
    pub position: usize,
    /// Context terms (lowercase words and hashtags), at most [`MAX_TERMS`] used.
    pub terms: Vec<String>,
    /// Similarity between context and ad, -1..1.
    pub similarity: f32,
    /// True when a keyword matched the context.
    pub keyword_match: bool,
}

/// Context terms used per impression.
pub const MAX_TERMS: usize = 24;

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x100000001b3);
        }
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The similarity's bucket (tenths).
pub fn similarity_bucket(s: f32) -> i32 {
    ((s.clamp(-1.0, 1.0) * 10.0).floor() as i32).clamp(-10, 9)
}

impl AdFeatures {
    /// Hashed feature indices (each of value 1) into a table of `2^bits`.
    pub fn hashed(&self, bits: u32) -> Vec<usize> {
        let mask = (1u64 << bits) - 1;
        let pos = self.position.min(9).to_string();
        let pl = self.placement.as_str();
        let sim = similarity_bucket(self.similarity).to_string();
        let kw = if self.keyword_match { "1" } else { "0" };
        let mut out = vec![
            fnv(&["bias"]),
            fnv(&["cre", &self.creative]),
            fnv(&["grp", &self.group]),
            fnv(&["adv", &self.advertiser]),
            fnv(&["pl", pl]),
            fnv(&["pos", pl, &pos]),
            fnv(&["sim", &sim]),
            fnv(&["kw", kw]),
            fnv(&["grp-sim", &self.group, &sim]),
            fnv(&["adv-pl", &self.advertiser, pl]),
            fnv(&["cre-pl", &self.creative, pl]),
        ];
        for t in self.terms.iter().take(MAX_TERMS) {
            out.push(fnv(&["t", t]));
            out.push(fnv(&["grp-t", &self.group, t]));
        }
        out.into_iter().map(|h| (h & mask) as usize).collect()
    }
}

/// The online pCTR model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ftrl {
    /// Hyper-parameters.
    pub config: FtrlConfig,
    z: Vec<f32>,
    n: Vec<f32>,
    /// Examples learned.
    pub examples: u64,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Ftrl {
    /// A model that knows nothing yet: every prediction is the prior.
    pub fn new(config: FtrlConfig) -> Self {
        let size = 1usize << config.bits;
        Self {
            config,
            z: vec![0.0; size],
            n: vec![0.0; size],
            examples: 0,
        }
    }

    fn weight(&self, i: usize) -> f64 {
        let c = &self.config;
        let z = self.z[i] as f64;
        if z.abs() <= c.l1 {
            0.0
        } else {
            let n = self.n[i] as f64;
            -(z - z.signum() * c.l1) / ((c.beta + n.sqrt()) / c.alpha + c.l2)
        }
    }

    fn prior_logit(&self) -> f64 {
        // The prior is on the fake-negative scale: q = p / (1 + p).
        let p = self.config.prior_ctr.clamp(1e-6, 0.5);
        let q = p / (1.0 + p);
        (q / (1.0 - q)).ln()
    }

    fn raw(&self, idx: &[usize]) -> f64 {
        let s: f64 = idx.iter().map(|&i| self.weight(i)).sum();
        sigmoid((self.prior_logit() + s).clamp(-35.0, 35.0))
    }

    /// Predicted click probability.
    pub fn predict(&self, f: &AdFeatures) -> f64 {
        let q = self.raw(&f.hashed(self.config.bits));
        (q / (1.0 - q)).clamp(1e-6, 0.99)
    }

    fn learn(&mut self, idx: &[usize], label: f64) {
        let q = self.raw(idx);
        let g = q - label;
        let alpha = self.config.alpha;
        for &i in idx {
            let n = self.n[i] as f64;
            let sigma = ((n + g * g).sqrt() - n.sqrt()) / alpha;
            let w = self.weight(i);
            self.z[i] += (g - sigma * w) as f32;
            self.n[i] += (g * g) as f32;
        }
        self.examples += 1;
    }

    /// Learns an impression (a fake negative until its click, if any, arrives).
    pub fn learn_impression(&mut self, f: &AdFeatures) {
        let idx = f.hashed(self.config.bits);
        self.learn(&idx, 0.0);
    }

    /// Learns a click of an impression already learned.
    pub fn learn_click(&mut self, f: &AdFeatures) {
        let idx = f.hashed(self.config.bits);
        self.learn(&idx, 1.0);
    }

    /// Non-zero weights (the model's size after L1).
    pub fn nonzero(&self) -> usize {
        (0..self.z.len()).filter(|&i| self.weight(i) != 0.0).count()
    }
}

/// Area under the ROC curve of `scores` against `labels` (ties count half).
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos, mut i) = (0.0, 0usize, 0usize);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += avg_rank;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn feat(creative: &str, term: &str) -> AdFeatures {
        AdFeatures {
            creative: creative.into(),
            group: format!("g{creative}"),
            advertiser: "a".into(),
            placement: Placement::Search,
            position: 0,
            terms: vec![term.into()],
            similarity: 0.5,
            keyword_match: false,
        }
    }

    #[test]
    fn new_ads_get_the_prior_and_learning_separates_good_from_bad() {
        let mut m = Ftrl::new(FtrlConfig::default());
        assert!((m.predict(&feat("new", "x")) - 0.01).abs() < 1e-9);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // Ad "good" is clicked 8% of the time, "bad" 1%; fake-negative training must recover both.
        for _ in 0..60_000 {
            for (c, p) in [("good", 0.08), ("bad", 0.01)] {
                let f = feat(c, "run");
                m.learn_impression(&f);
                if rng.gen::<f64>() < p {
                    m.learn_click(&f);
                }
            }
        }
        let good = m.predict(&feat("good", "run"));
        let bad = m.predict(&feat("bad", "run"));
        assert!((good - 0.08).abs() < 0.015, "good {good}");
        assert!((bad - 0.01).abs() < 0.005, "bad {bad}");
        assert!(m.nonzero() > 0);
    }

    #[test]
    fn auc_by_hand() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert_eq!(auc(&[0.9, 0.1], &[true, false]), 1.0);
    }
}
