//! What is trained: parameters (dense or mixture-of-experts), shape and FLOPs per token.

use crate::error::{Error, Result};
use serde::Serialize;

/// A model as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// All parameters (every expert of a MoE).
    pub params: f64,
    /// Parameters used per token (`params` for a dense model).
    pub active_params: f64,
    /// Transformer layers, when known.
    pub layers: Option<u32>,
    /// Hidden width, when known.
    pub d_model: Option<u32>,
    /// Query heads × head dimension (the attention width), when known; `d_model` otherwise.
    pub attn_width: Option<u32>,
    /// Vocabulary size, when known (its input embedding does no matrix work).
    pub vocab: Option<u32>,
    /// Training context length in tokens.
    pub context: u32,
}

impl ModelSpec {
    /// A dense model known only by its parameter count.
    pub fn dense(params: f64, context: u32) -> Self {
        Self {
            params,
            active_params: params,
            layers: None,
            d_model: None,
            attn_width: None,
            vocab: None,
            context,
        }
    }

    /// A dense GPT/Llama-shaped model from its architecture: 12·L·d² + 2·V·d parameters (untied head).
    pub fn from_arch(layers: u32, d_model: u32, vocab: u32, context: u32) -> Self {
        let (l, d, v) = (f64::from(layers), f64::from(d_model), f64::from(vocab));
        let params = 12.0 * l * d * d + 2.0 * v * d;
        Self {
            params,
            active_params: params,
            layers: Some(layers),
            d_model: Some(d_model),
            attn_width: Some(d_model),
            vocab: Some(vocab),
            context,
        }
    }

    /// The model a starling `config.json` describes, trained at `context`: its exact parameter
    /// count and shape (attention width = query heads × head dimension).
    pub fn from_llama(c: &starling_arch::LlamaConfig, context: u32) -> Self {
        let params = c.num_params() as f64;
        Self {
            params,
            active_params: params,
            layers: Some(c.num_hidden_layers as u32),
            d_model: Some(c.hidden_size as u32),
            attn_width: Some((c.num_attention_heads * c.head_dim()) as u32),
            // A tied head does matrix work with the embedding, so only an untied one's input
            // embedding is left out.
            vocab: (!c.tie_word_embeddings).then_some(c.vocab_size as u32),
            context,
        }
    }

    /// A mixture-of-experts model: `active` of `params` are used per token.
    pub fn with_active(mut self, active: f64) -> Self {
        self.active_params = active;
        self
    }

    /// Checks that counts are positive and consistent.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f64, field: &'static str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::Invalid {
                    field,
                    message: format!("must be a positive number, got {v}"),
                })
            }
        };
        pos(self.params, "params")?;
        pos(self.active_params, "active_params")?;
        pos(f64::from(self.context), "context")?;
        if self.active_params > self.params {
            return Err(Error::Invalid {
                field: "active_params",
                message: format!("{} exceeds params {}", self.active_params, self.params),
            });
        }
        for (v, f) in [
            (self.layers, "layers"),
            (self.d_model, "d_model"),
            (self.vocab, "vocab"),
            (self.attn_width, "attn_width"),
        ] {
            if v == Some(0) {
                return Err(Error::Invalid {
                    field: f,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }

    /// Parameters doing matrix work per token: active parameters less the input embedding.
    pub fn matmul_params(&self) -> f64 {
        match (self.vocab, self.d_model) {
            (Some(v), Some(d)) => (self.active_params - f64::from(v) * f64::from(d)).max(0.0),
            _ => self.active_params,
        }
    }

    /// Training FLOPs per token: 6·N (matrix parameters) + 12·L·w·T attention (when the shape is known).
    pub fn flops_per_token(&self) -> f64 {
        6.0 * self.matmul_params() + self.attention_flops_per_token()
    }

    /// The attention term 12·L·w·T of training FLOPs per token (0 when the shape is unknown).
    pub fn attention_flops_per_token(&self) -> f64 {
        match (self.layers, self.attn_width.or(self.d_model)) {
            (Some(l), Some(w)) => 12.0 * f64::from(l) * f64::from(w) * f64::from(self.context),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starling_config_costs_what_the_trainer_counts() {
        for (preset, tied) in [("small", true), ("llama-1b", false)] {
            let c = starling_arch::LlamaConfig::preset(preset, 8192).expect("preset");
            assert_eq!(c.tie_word_embeddings, tied);
            let spec = ModelSpec::from_llama(&c, 512);
            let (plan, train) = (spec.flops_per_token(), c.flops_per_token(512));
            assert!(
                (plan - train).abs() / train < 1e-12,
                "{preset}: {plan} vs {train}"
            );
        }
    }

    #[test]
    fn gpt3_flops_per_token_by_hand() {
        // 175B, 96 layers, width 12288, context 2048, vocab 50257.
        let mut m = ModelSpec::dense(175e9, 2048);
        m.layers = Some(96);
        m.d_model = Some(12288);
        m.vocab = Some(50257);
        let embed = 50257.0 * 12288.0;
        let attn = 12.0 * 96.0 * 12288.0 * 2048.0;
        assert!((m.flops_per_token() - (6.0 * (175e9 - embed) + attn)).abs() < 1.0);
        assert!(
            (attn / (6.0 * 175e9) - 0.0276).abs() < 0.001,
            "attention adds ~2.8% for GPT-3"
        );
    }

    #[test]
    fn arch_params() {
        // GPT-2 small shape: 12 layers, 768 wide, 50257 vocab: 12·12·768² + 2·50257·768 = 162.1M (untied).
        let m = ModelSpec::from_arch(12, 768, 50257, 1024);
        assert!((m.params - 162.1e6).abs() < 0.1e6);
    }

    #[test]
    fn rejects_bad_counts() {
        assert!(ModelSpec::dense(0.0, 2048).validate().is_err());
        assert!(ModelSpec::dense(-1.0, 2048).validate().is_err());
        assert!(ModelSpec::dense(f64::NAN, 2048).validate().is_err());
        assert!(ModelSpec::dense(1e9, 2048)
            .with_active(2e9)
            .validate()
            .is_err());
    }
}
