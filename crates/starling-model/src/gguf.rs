//! The model as a GGUF file for llama.cpp: the variables handed to `starling-gguf` in llama.cpp's
//! order, with the model directory's tokenizer embedded.

use crate::{LlamaConfig, Result};
use starling_gguf::{ExportDtype, ExportSummary, GgufVocab, SourceTensor};
use std::path::Path;

/// Writes `vs` (a Llama of `config`) and the `tokenizer.json` at `tokenizer` as one GGUF file at
/// `out` (atomically) in `dtype`; `progress` is called once per tensor written.
pub fn export_gguf(
    vs: &tch::nn::VarStore,
    config: &LlamaConfig,
    tokenizer: &Path,
    out: &Path,
    dtype: ExportDtype,
    mut progress: impl FnMut(),
) -> Result<ExportSummary> {
    let vocab = GgufVocab::from_tokenizer_json(tokenizer, config.vocab_size)?;
    let vars = vs.variables();
    // llama.cpp's order: embedding, blocks in order, final norm, head.
    let rank = |n: &str| -> (usize, usize, String) {
        match n
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
        {
            Some((l, rest)) => (1, l.parse().unwrap_or(usize::MAX), rest.to_string()),
            None if n.starts_with("model.embed") => (0, 0, n.to_string()),
            None => (2, 0, n.to_string()),
        }
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| rank(n));
    let tensors: Vec<SourceTensor> = names
        .iter()
        .map(|n| SourceTensor {
            name: n.to_string(),
            shape: vars[*n].size().iter().map(|&d| d as usize).collect(),
        })
        .collect();
    let name = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "starling".into());
    let summary = starling_gguf::write_llama(out, config, &vocab, dtype, &name, &tensors, |n| {
        progress();
        let t = vars[n]
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .view([-1]);
        Vec::<f32>::try_from(&t)
            .map_err(|e| starling_gguf::Error::Format(format!("tensor {n}: {e}")))
    })?;
    Ok(summary)
}
