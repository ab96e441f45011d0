//! The model's shape as a plain struct, read and written as Hugging Face's Llama `config.json`.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Llama hyper-parameters with Hugging Face's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Output head shares the input embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Id that starts a sequence (HF field).
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// Id that ends a sequence (HF field).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Always "llama".
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Always ["LlamaForCausalLM"].
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    /// Always "silu".
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Stored weight dtype.
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
    /// Explicit head dimension (HF field); must equal hidden_size / heads here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Biases in attention projections (HF field); starling's Llama has none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention_bias: bool,
    /// Biases in the MLP (HF field); starling's Llama has none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mlp_bias: bool,
    /// RoPE scaling (HF field); only plain RoPE (null) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_model_type() -> String {
    "llama".into()
}
fn default_architectures() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn default_act() -> String {
    "silu".into()
}
fn default_dtype() -> String {
    "float32".into()
}

/// Bytes of activations one transformer layer keeps for backward, 16-bit, without recomputation
/// or tensor parallelism (Korthikanti et al. 2022): s·b·h·(34 + 5·a·s/h).
pub fn activation_bytes_16bit(batch: f64, seq: f64, hidden: f64, heads: f64) -> f64 {
    seq * batch * hidden * (34.0 + 5.0 * heads * seq / hidden)
}

impl LlamaConfig {
    /// A shape from (hidden, ffn, layers, heads, kv heads, context).
    fn shape(vocab: usize, [d, ff, layers, heads, kv, ctx]: [usize; 6], tied: bool) -> Self {
        Self {
            vocab_size: vocab,
            hidden_size: d,
            intermediate_size: ff,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            max_position_embeddings: ctx,
            rms_norm_eps: default_eps(),
            rope_theta: default_theta(),
            tie_word_embeddings: tied,
            bos_token_id: None,
            eos_token_id: Some(0),
            model_type: default_model_type(),
            architectures: default_architectures(),
            hidden_act: default_act(),
            torch_dtype: default_dtype(),
            head_dim: None,
            attention_bias: false,
            mlp_bias: false,
            rope_scaling: None,
        }
    }

    /// A named preset for a vocabulary: `tiny` (< 1M params, tests), `llama-7m` (DESIGN.md's Llama,
    /// ~7M at 8,192 tokens, ctx 128), `small` (~10M, ctx 512, the CPU default), `gpt2-124m` (GPT-2
    /// small sized), `llama-1b` (GPU).
    pub fn preset(name: &str, vocab: usize) -> Result<Self> {
        Ok(match name {
            "tiny" => Self::shape(vocab, [64, 176, 2, 4, 2, 128], true),
            "llama-7m" => Self::shape(vocab, [256, 688, 4, 4, 4, 128], false),
            "small" => Self::shape(vocab, [288, 768, 8, 8, 4, 512], true),
            "gpt2-124m" => Self::shape(vocab, [768, 2048, 12, 12, 12, 1024], true),
            "llama-1b" => Self::shape(vocab, [2048, 5632, 22, 32, 4, 2048], false),
            other => {
                return Err(Error::Config(format!(
                    "unknown preset `{other}`; known: tiny, llama-7m, small, gpt2-124m, llama-1b"
                )))
            }
        })
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks divisibility and positivity.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if [
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.max_position_embeddings,
        ]
        .contains(&0)
        {
            return Err(Error::Config("every size must be at least 1".into()));
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) || !c.head_dim().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "hidden_size {} must split into an even head dimension over {} heads",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if c.head_dim.is_some_and(|h| h != c.head_dim()) {
            return Err(Error::Config(format!(
                "head_dim {:?} differs from hidden_size / heads = {}; not supported",
                c.head_dim,
                c.head_dim()
            )));
        }
        if c.attention_bias || c.mlp_bias {
            return Err(Error::Config(
                "attention_bias / mlp_bias: starling's Llama has no biases".into(),
            ));
        }
        if c.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Error::Config(format!(
                "rope_scaling {} is not supported (plain RoPE only)",
                c.rope_scaling
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            )));
        }
        if c.model_type != "llama" || c.hidden_act != "silu" {
            return Err(Error::Config(format!(
                "model_type `{}` with hidden_act `{}`: only Llama (silu) is supported",
                c.model_type, c.hidden_act
            )));
        }
        if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
            return Err(Error::Config(format!(
                "{} query heads do not group over {} key/value heads",
                c.num_attention_heads, c.num_key_value_heads
            )));
        }
        Ok(())
    }

    /// Parameters, counting a tied head once.
    pub fn num_params(&self) -> usize {
        let (d, v, l, ff) = (
            self.hidden_size,
            self.vocab_size,
            self.num_hidden_layers,
            self.intermediate_size,
        );
        let kv = self.num_key_value_heads * self.head_dim();
        let attn = d * d * 2 + d * kv * 2;
        let mlp = 3 * d * ff;
        let norms = 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + l * (attn + mlp + norms) + d + head
    }

    /// Training FLOPs per token at context `ctx`: 6 per matrix weight (forward and backward;
    /// the input embedding does no matrix work unless tied to the output head) plus attention's
    /// 12·layers·d·ctx.
    pub fn flops_per_token(&self, ctx: usize) -> f64 {
        let embedding = self.vocab_size * self.hidden_size;
        let matmul = self.num_params() - embedding
            + if self.tie_word_embeddings {
                embedding
            } else {
                0
            };
        6.0 * matmul as f64 + 12.0 * (self.num_hidden_layers * self.hidden_size * ctx) as f64
    }

    /// Values one layer keeps for backward per token in starling's training forward: the two
    /// norms' outputs, Q|K|V and the rotated Q and K, the attention output and its transposed
    /// copy, the residual, gate|up, SiLU(gate) and the product: 8·d + 4·kv + 4·ff. SDPA keeps no
    /// t×t attention scores (the 5·a·t² term of Korthikanti et al. 2022 is not there).
    pub fn activation_values_per_token(&self) -> f64 {
        let kv = self.num_key_value_heads * self.head_dim();
        (8 * self.hidden_size + 4 * kv + 4 * self.intermediate_size) as f64
    }

    /// Peak bytes of a CPU process training this model in fp32 with `batch` x `ctx` micro-batches:
    /// weights, gradients and two AdamW moments (16 per parameter), the activations kept for
    /// backward ([`Self::activation_values_per_token`] per layer, or with `recompute` each layer's
    /// input and one layer's activations during its backward), the logits with their log-softmax
    /// and gradient (3·b·t·vocab), times the allocator's slack, plus the process itself.
    /// Calibrated on `small` at 16 x 512 (peak RSS 3.70 GB without recomputation, 2.13 GB with;
    /// a 1-step `tiny` process peaks at 0.52 GB): the estimate is within 5% of both.
    /// With `shards` > 1 (FSDP, tensor parallel) each rank keeps 16/shards bytes of state per
    /// parameter, plus the whole fp32 model once while it is set up (4 bytes per parameter).
    /// With tensor parallelism over `tp` ranks (sequence parallel between blocks, vocabulary
    /// split) each rank keeps 1/tp of the activations and of the logits.
    pub fn step_memory_bytes(
        &self,
        batch: usize,
        ctx: usize,
        recompute: bool,
        shards: usize,
        tp: usize,
    ) -> f64 {
        /// Measured peak over the sum of the tensors counted (glibc arenas, temporaries).
        const SLACK: f64 = 1.3;
        /// RSS of the process before any model (libtorch, the loader).
        const PROCESS: f64 = 0.5e9;
        let tokens = (batch * ctx) as f64;
        let p = self.num_params() as f64;
        let states = if shards > 1 {
            16.0 * p / shards as f64 + 4.0 * p
        } else {
            16.0 * p
        };
        let layers = self.num_hidden_layers as f64;
        let layer = 4.0 * tokens * self.activation_values_per_token();
        let acts = if recompute {
            4.0 * tokens * self.hidden_size as f64 * layers + layer
        } else {
            layer * layers
        };
        let logits = 3.0 * 4.0 * tokens * self.vocab_size as f64;
        SLACK * (states + (acts + logits) / tp.max(1) as f64) + PROCESS
    }

    /// Reads `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let c: Self = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        c.validate()
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Writes `config.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Format(e.to_string()))?;
        Ok(starling_artifacts::write_atomic(path, &json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_sizes_they_promise() {
        let tiny = LlamaConfig::preset("tiny", 2048).expect("tiny");
        assert!(tiny.num_params() < 1_000_000);
        let small = LlamaConfig::preset("small", 8192).expect("small");
        assert!(
            (8_000_000..12_000_000).contains(&small.num_params()),
            "{}",
            small.num_params()
        );
        assert!(small.max_position_embeddings >= 512);
        let g = LlamaConfig::preset("gpt2-124m", 50257).expect("gpt2");
        assert!(
            (110_000_000..140_000_000).contains(&g.num_params()),
            "{}",
            g.num_params()
        );
        assert!(LlamaConfig::preset("huge", 10).is_err());
    }

    #[test]
    fn step_memory_matches_the_measured_peaks() {
        // Peak RSS of `starling train --preset small --batch 16 --ctx 512` on the real-tweet
        // tokens (vocabulary 8192), measured with /usr/bin/time -v.
        let small = LlamaConfig::preset("small", 8192).expect("small");
        for (recompute, measured) in [(false, 3.70e9), (true, 2.13e9)] {
            let est = small.step_memory_bytes(16, 512, recompute, 1, 1);
            assert!(
                (est / measured - 1.0).abs() < 0.05,
                "recompute {recompute}: estimate {est:.3e} vs measured {measured:.3e}"
            );
        }
        // Sharded over 4 ranks the state shrinks to 4 + 16/4 bytes per parameter.
        let g = LlamaConfig::preset("gpt2-124m", 8192).expect("gpt2");
        let saved = g.step_memory_bytes(1, 64, true, 1, 1) - g.step_memory_bytes(1, 64, true, 4, 1);
        assert!(
            (saved / 1.3 - 8.0 * g.num_params() as f64).abs() < 1.0,
            "{saved}"
        );
        // Tensor parallel over 2 ranks halves the activations and the logits, not the state.
        let whole = small.step_memory_bytes(16, 512, false, 2, 1);
        let split = small.step_memory_bytes(16, 512, false, 2, 2);
        let states = 1.3 * (8.0 + 4.0) * small.num_params() as f64 + 0.5e9;
        assert!(((whole - states) / (split - states) - 2.0).abs() < 1e-9);
    }
}
