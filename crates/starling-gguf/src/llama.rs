//! A Llama under llama.cpp's names: `llama.*` metadata from `config.json`, HF tensor names mapped
//! to GGUF's, Q and K rows permuted to llama.cpp's rotary layout, each tensor in the asked type.

use crate::file::{self, GgufHeader, Value};
use crate::quant::GgmlType;
use crate::vocab::GgufVocab;
use crate::{Error, Result};
use starling_arch::LlamaConfig;
use std::path::Path;

/// The storage type asked for at export (norms stay f32 in every case, as llama.cpp's converter
/// keeps them; a matrix whose rows do not fill q8_0 blocks falls back to f16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportDtype {
    /// Everything f32: the reference for exact agreement.
    F32,
    /// Matrices in IEEE half.
    F16,
    /// Matrices in bfloat16.
    BF16,
    /// Matrices in 8-bit blocks (`Q8_0`).
    Q8_0,
}

impl ExportDtype {
    /// Parses `f32`, `f16`, `bf16` or `q8_0`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Self::F32),
            "f16" => Some(Self::F16),
            "bf16" => Some(Self::BF16),
            "q8_0" => Some(Self::Q8_0),
            _ => None,
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::BF16 => 32,
        }
    }

    fn matrix_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::BF16 => GgmlType::BF16,
            Self::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// A source tensor: its HF name and torch shape.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    /// HF name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Torch shape (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the file.
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// llama.cpp's name for an HF Llama tensor, if it is one.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = match part {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}.weight"))
}

/// Reorders each head's rows from HF's rotate-half layout (first half, second half) to the
/// interleaved pairs llama.cpp rotates (convert_hf_to_gguf.py's `permute`).
pub fn permute_rotary(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let src = h * hd + i * half + j;
                let dst = h * hd + j * 2 + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The `general.*` and `llama.*` metadata of `config`.
fn add_config(h: &mut GgufHeader, c: &LlamaConfig, name: &str, dtype: ExportDtype) {
    let u = |v: usize| Value::U32(v as u32);
    h.set("general.architecture", Value::Str("llama".into()));
    h.set("general.name", Value::Str(name.into()));
    h.set("general.file_type", Value::U32(dtype.file_type()));
    h.set("general.quantization_version", Value::U32(2));
    h.set("llama.context_length", u(c.max_position_embeddings));
    h.set("llama.embedding_length", u(c.hidden_size));
    h.set("llama.block_count", u(c.num_hidden_layers));
    h.set("llama.feed_forward_length", u(c.intermediate_size));
    h.set("llama.attention.head_count", u(c.num_attention_heads));
    h.set("llama.attention.head_count_kv", u(c.num_key_value_heads));
    h.set(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(c.rms_norm_eps as f32),
    );
    h.set("llama.rope.freq_base", Value::F32(c.rope_theta as f32));
    h.set("llama.rope.dimension_count", u(c.head_dim()));
    h.set("llama.vocab_size", u(c.vocab_size));
}

/// Writes a Llama as a GGUF file at `path` (atomically): `tensors` names what there is,
/// `fetch(hf_name)` returns one tensor's values row-major. Refuses configurations llama.cpp
/// would run differently (RoPE scaling, biases).
pub fn write_llama(
    path: &Path,
    config: &LlamaConfig,
    vocab: &GgufVocab,
    dtype: ExportDtype,
    name: &str,
    tensors: &[SourceTensor],
    mut fetch: impl FnMut(&str) -> Result<Vec<f32>>,
) -> Result<ExportSummary> {
    config
        .validate()
        .map_err(|e| Error::Format(e.to_string()))?;
    if config.rope_scaling.is_some() || config.attention_bias || config.mlp_bias {
        return Err(Error::Format(
            "config.json: rope_scaling or biases are set; starling's Llama has neither".into(),
        ));
    }
    if vocab.tokens.len() != config.vocab_size {
        return Err(Error::Format(format!(
            "tokenizer.json has {} tokens, config.json's vocab_size is {}",
            vocab.tokens.len(),
            config.vocab_size
        )));
    }
    let mut h = GgufHeader::default();
    add_config(&mut h, config, name, dtype);
    vocab.add_to(&mut h);
    let mut plan: Vec<(&SourceTensor, GgmlType)> = Vec::new();
    for t in tensors {
        let gname = gguf_name(&t.name).ok_or_else(|| {
            Error::Format(format!(
                "tensor {}: not a Llama tensor llama.cpp knows",
                t.name
            ))
        })?;
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let ty = match (t.shape.len(), dtype.matrix_type()) {
            (1, _) => GgmlType::F32,
            (_, ty) if ty.fits(dims[0]) => ty,
            _ => GgmlType::F16,
        };
        h.push_tensor(&gname, dims, ty);
        plan.push((t, ty));
    }
    let (sha256, bytes) = file::write(path, &h, |i| {
        let (t, ty) = plan[i];
        let mut x = fetch(&t.name)?;
        let expected: usize = t.shape.iter().product();
        if x.len() != expected {
            return Err(Error::Format(format!(
                "tensor {}: {} values for shape {:?}",
                t.name,
                x.len(),
                t.shape
            )));
        }
        if t.name.ends_with("q_proj.weight") {
            x = permute_rotary(&x, t.shape[0], t.shape[1], config.num_attention_heads);
        } else if t.name.ends_with("k_proj.weight") {
            x = permute_rotary(&x, t.shape[0], t.shape[1], config.num_key_value_heads);
        }
        ty.encode(&x)
    })?;
    Ok(ExportSummary {
        tensors: plan.len(),
        bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_and_rotary_rows_interleave() {
        assert_eq!(
            gguf_name("model.layers.11.mlp.down_proj.weight").as_deref(),
            Some("blk.11.ffn_down.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.down_proj.weight"), None);
        assert_eq!(gguf_name("model.layers.0.self_attn.rotary.inv_freq"), None);
        // One head of 4 rows (2 columns): rows [a0 a1 | b0 b1] become [a0 b0 a1 b1].
        let w = [0., 0., 1., 1., 2., 2., 3., 3.];
        assert_eq!(
            permute_rotary(&w, 4, 2, 1),
            vec![0., 0., 2., 2., 1., 1., 3., 3.]
        );
        // Two heads permute independently.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_rotary(&w, 8, 1, 2),
            vec![0., 2., 1., 3., 4., 6., 5., 7.]
        );
    }
}
