//! KV-cache generation with temperature, top-k, top-p, repetition penalty, stop strings,
//! a token limit and a seed.

use crate::cache::KvCache;
use crate::model::Llama;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Kind, Tensor};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 is greedy. By default 0.8.
    pub temperature: f64,
    /// Keep only the k most likely tokens; 0 keeps all. By default 50.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 keeps all. By default 0.95.
    pub top_p: f64,
    /// Divide (positive) or multiply (negative) logits of tokens already present; 1 is off. By default 1.1.
    pub repetition_penalty: f64,
    /// Most new tokens. By default 128.
    pub max_tokens: usize,
    /// Strings that end generation (not included in the text). By default none.
    pub stop: Vec<String>,
    /// Seed of the sampler. By default 0.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            repetition_penalty: 1.1,
            max_tokens: 128,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The end token or a stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// New token ids.
    pub ids: Vec<i64>,
    /// New text (stop string removed).
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Decoding speed, new tokens per second (prompt excluded).
    pub tokens_per_s: f64,
    /// At each step, the gap between the two largest logits (how close greedy was to a tie).
    pub margins: Vec<f32>,
}

/// The gap between the largest and second-largest value of `row` (0 when it has fewer than two).
pub fn top2_margin(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in row {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    if b.is_finite() {
        a - b
    } else {
        0.0
    }
}

/// Picks the next token from `logits` (one row over the vocabulary) given the ids so far.
pub fn sample(logits: &[f32], history: &[i64], cfg: &SamplingConfig, rng: &mut impl Rng) -> i64 {
    let mut l: Vec<f32> = logits.to_vec();
    if cfg.repetition_penalty != 1.0 {
        let p = cfg.repetition_penalty as f32;
        let mut seen = std::collections::HashSet::new();
        for &t in history {
            if let Some(v) = l.get_mut(t as usize).filter(|_| seen.insert(t)) {
                *v = if *v > 0.0 { *v / p } else { *v * p };
            }
        }
    }
    let argmax = || {
        l.iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                if v > b.1 {
                    (i, v)
                } else {
                    b
                }
            })
            .0 as i64
    };
    if cfg.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..l.len()).collect();
    let by_logit = |a: &usize, b: &usize| l[*b].total_cmp(&l[*a]);
    if cfg.top_k > 0 && cfg.top_k < idx.len() {
        // Partition first: sorting the whole vocabulary for every token is the slow part.
        idx.select_nth_unstable_by(cfg.top_k - 1, by_logit);
        idx.truncate(cfg.top_k);
    }
    idx.sort_unstable_by(by_logit);
    let max = l[idx[0]];
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (f64::from(l[i] - max) / cfg.temperature).exp())
        .collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if cfg.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs.iter().position(|p| {
            acc += p;
            acc >= cfg.top_p
        });
        let keep = keep.map(|k| k + 1).unwrap_or(probs.len());
        probs.truncate(keep);
        idx.truncate(keep);
        let s: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= s);
    }
    let mut u: f64 = rng.gen();
    for (p, &i) in probs.iter().zip(&idx) {
        if u < *p {
            return i as i64;
        }
        u -= p;
    }
    idx[idx.len() - 1] as i64
}

/// Generates after `prompt` with the KV cache, calling `on_text` with each new piece of text.
/// `decode` turns ids into text (the tokenizer's decode).
pub fn generate(
    model: &Llama,
    prompt: &[i64],
    cfg: &SamplingConfig,
    decode: &dyn Fn(&[i64]) -> String,
    on_text: &mut dyn FnMut(&str),
) -> Generation {
    let _guard = tch::no_grad_guard();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let ctx = model.config.max_position_embeddings;
    let eos = model.config.eos_token_id.map(i64::from);
    let device = model.device();
    let prompt: Vec<i64> = if prompt.len() >= ctx {
        prompt[prompt.len() - (ctx - 1)..].to_vec()
    } else {
        prompt.to_vec()
    };
    let mut cache = KvCache::default();
    let mut history = prompt.clone();
    let mut ids = Vec::new();
    let mut margins = Vec::new();
    let mut text = String::new();
    let mut finish = FinishReason::Length;
    let mut input = Tensor::from_slice(&prompt).view([1, -1]).to_device(device);
    let start = Instant::now();
    while ids.len() < cfg.max_tokens && history.len() < ctx {
        let logits = model.forward_cached(&input, &mut cache);
        let last = logits
            .select(1, -1)
            .squeeze_dim(0)
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu);
        let row: Vec<f32> = Vec::<f32>::try_from(&last).unwrap_or_default();
        margins.push(top2_margin(&row));
        let next = sample(&row, &history, cfg, &mut rng);
        if Some(next) == eos {
            finish = FinishReason::Stop;
            break;
        }
        ids.push(next);
        history.push(next);
        let full = decode(&ids);
        if let Some(cut) = cfg.stop.iter().filter_map(|s| full.find(s.as_str())).min() {
            if cut > text.len() {
                on_text(&full[text.len()..cut]);
            }
            text = full[..cut].to_string();
            finish = FinishReason::Stop;
            break;
        }
        // Emit only whole characters: byte-level tokens can split a UTF-8 sequence.
        if !full.ends_with('\u{FFFD}') && full.len() > text.len() && full.starts_with(&text) {
            on_text(&full[text.len()..]);
            text = full;
        }
        input = Tensor::from_slice(&[next]).view([1, 1]).to_device(device);
    }
    let secs = start.elapsed().as_secs_f64();
    if finish == FinishReason::Length {
        let full = decode(&ids);
        if full.len() > text.len() && full.starts_with(&text) {
            on_text(&full[text.len()..]);
        }
        text = full;
    }
    Generation {
        tokens_per_s: ids.len() as f64 / secs.max(1e-9),
        ids,
        text,
        finish,
        margins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_penalty() {
        let logits = [0.0f32, 3.0, 2.9, -1.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let greedy = SamplingConfig {
            temperature: 0.0,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        assert_eq!(sample(&logits, &[], &greedy, &mut rng), 1);
        assert!((top2_margin(&logits) - 0.1).abs() < 1e-6);
        assert_eq!(top2_margin(&[1.0]), 0.0);
        // A strong repetition penalty moves greedy off the repeated token.
        let pen = SamplingConfig {
            repetition_penalty: 2.0,
            ..greedy.clone()
        };
        assert_eq!(sample(&logits, &[1], &pen, &mut rng), 2);
        // top_k = 1 is greedy at any temperature.
        let k1 = SamplingConfig {
            temperature: 5.0,
            top_k: 1,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        assert!((0..50).all(|_| sample(&logits, &[], &k1, &mut rng) == 1));
        // top_p small keeps only the head; top_k 2 never yields token 0 or 3.
        let k2 = SamplingConfig {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let draws: Vec<i64> = (0..200)
            .map(|_| sample(&logits, &[], &k2, &mut rng))
            .collect();
        assert!(
            draws.iter().all(|&d| d == 1 || d == 2) && draws.contains(&1) && draws.contains(&2)
        );
        // Same seed, same draws.
        let mut a = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = rand::rngs::StdRng::seed_from_u64(7);
        let cfg = SamplingConfig::default();
        let da: Vec<i64> = (0..20)
            .map(|_| sample(&logits, &[], &cfg, &mut a))
            .collect();
        let db: Vec<i64> = (0..20)
            .map(|_| sample(&logits, &[], &cfg, &mut b))
            .collect();
        assert_eq!(da, db);
    }
}
