//! A `tokenizer.json` as llama.cpp's `gpt2` BPE vocabulary: tokens, token types, merges, the
//! special ids and a chat template, refusing by name what llama.cpp cannot reproduce.

use crate::file::{GgufHeader, Value};
use crate::{Error, Result};
use serde_json::Value as Json;
use std::path::Path;

/// llama.cpp token type: an ordinary token.
pub const TOKEN_NORMAL: i32 = 1;
/// llama.cpp token type: a control token (not rendered in text unless asked for).
pub const TOKEN_CONTROL: i32 = 3;
/// llama.cpp token type: a user-defined token (always parsed and rendered whole).
pub const TOKEN_USER_DEFINED: i32 = 4;
/// llama.cpp token type: an unused id (padding of the embedding).
pub const TOKEN_UNUSED: i32 = 5;

/// Ends a document: BOS and EOS.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Ends a post: EOT, so llama.cpp stops at the end of a reply.
pub const END_OF_POST: &str = "<|endofpost|>";

/// The thread template the server uses for chat (`starling-serve`'s `ThreadLayout::thread`), as
/// Jinja: every message a post, then the reply's author prefix.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if message['content'] | trim %}\
{{ '<|user|>: ' + (message['content'] | trim) + '<|endofpost|>' }}{% endif %}{% endfor %}\
{% if add_generation_prompt %}{{ '<|user|>:' }}{% endif %}";

/// The vocabulary of a byte-level BPE `tokenizer.json` in GGUF's terms.
#[derive(Debug, Clone)]
pub struct GgufVocab {
    /// Token strings by id (byte-level alphabet, as in `tokenizer.json`).
    pub tokens: Vec<String>,
    /// llama.cpp token types by id.
    pub types: Vec<i32>,
    /// Merges, highest priority first, as `"left right"`.
    pub merges: Vec<String>,
    /// Id of `<|endoftext|>`.
    pub end_of_text: u32,
    /// Id of `<|endofpost|>`, when the vocabulary has it.
    pub end_of_post: Option<u32>,
}

fn refuse(path: &Path, field: &str, why: String) -> Error {
    Error::Tokenizer(format!(
        "{}: {field}: {why}; llama.cpp's gpt2 BPE cannot reproduce it, so no GGUF is written",
        path.display()
    ))
}

fn kind(v: &Json) -> &str {
    v.get("type").and_then(Json::as_str).unwrap_or("?")
}

/// Checks that a pre-tokenizer (or, `split` false, a decoder) is plain GPT-2 byte level: no
/// prefix space, GPT-2's split regex (a decoder's flags do not change what it decodes).
fn check_byte_level(path: &Path, field: &str, v: &Json, split: bool) -> Result<()> {
    if kind(v) != "ByteLevel" {
        return Err(refuse(
            path,
            field,
            format!("type {} is not ByteLevel", kind(v)),
        ));
    }
    if split && v.get("add_prefix_space").and_then(Json::as_bool) == Some(true) {
        return Err(refuse(path, field, "add_prefix_space is true".into()));
    }
    if split && v.get("use_regex").and_then(Json::as_bool) == Some(false) {
        return Err(refuse(path, field, "use_regex is false".into()));
    }
    Ok(())
}

/// The BPE model of tokenizer `j` (read from `path`) once its pipeline is one llama.cpp's gpt2
/// tokenizer reproduces: no normalizer, byte-level pre-tokenizer and decoder, no post-processor
/// that adds tokens, plain BPE; the first difference is refused by field.
fn check_pipeline<'j>(path: &Path, j: &'j Json) -> Result<&'j Json> {
    if !j["normalizer"].is_null() {
        return Err(refuse(
            path,
            "normalizer",
            format!("a {} normalizer is set", kind(&j["normalizer"])),
        ));
    }
    check_byte_level(path, "pre_tokenizer", &j["pre_tokenizer"], true)?;
    if !j["decoder"].is_null() {
        check_byte_level(path, "decoder", &j["decoder"], false)?;
    }
    let post = &j["post_processor"];
    if !post.is_null() && kind(post) != "ByteLevel" {
        return Err(refuse(
            path,
            "post_processor",
            format!("a {} post-processor adds tokens", kind(post)),
        ));
    }
    let model = &j["model"];
    if kind(model) != "BPE" {
        return Err(refuse(
            path,
            "model.type",
            format!("{} is not BPE", kind(model)),
        ));
    }
    for (field, ok) in [
        (
            "byte_fallback",
            model["byte_fallback"].as_bool() != Some(true),
        ),
        ("dropout", model["dropout"].is_null()),
        (
            "continuing_subword_prefix",
            model["continuing_subword_prefix"].is_null(),
        ),
        ("end_of_word_suffix", model["end_of_word_suffix"].is_null()),
    ] {
        if !ok {
            return Err(refuse(path, &format!("model.{field}"), "is set".into()));
        }
    }
    Ok(model)
}

/// The BPE merges of `model` as "a b" strings (written either way by the tokenizers library).
fn merges_of(path: &Path, model: &Json) -> Result<Vec<String>> {
    model["merges"]
        .as_array()
        .ok_or_else(|| refuse(path, "model.merges", "missing".into()))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(p) => match (
                p.first().and_then(Json::as_str),
                p.get(1).and_then(Json::as_str),
            ) {
                (Some(a), Some(b)) if p.len() == 2 => Some(format!("{a} {b}")),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| refuse(path, "model.merges", "an entry is not a pair".into()))
}

impl GgufVocab {
    /// Reads `tokenizer.json` at `path`, padded with unused ids to `vocab_size` rows.
    pub fn from_tokenizer_json(path: &Path, vocab_size: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(starling_artifacts::IoError::new(path, e)))?;
        let j: Json = serde_json::from_str(&text)
            .map_err(|e| refuse(path, "(file)", format!("not JSON: {e}")))?;
        let model = check_pipeline(path, &j)?;
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| refuse(path, "model.vocab", "missing".into()))?;
        let mut tokens: Vec<Option<String>> = vec![None; vocab.len().max(vocab_size)];
        for (tok, id) in vocab {
            let id = id
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < tokens.len());
            let id =
                id.ok_or_else(|| refuse(path, "model.vocab", format!("{tok:?} has a bad id")))?;
            tokens[id] = Some(tok.clone());
        }
        let mut types = vec![TOKEN_NORMAL; tokens.len()];
        for t in j["added_tokens"].as_array().into_iter().flatten() {
            let content = t["content"].as_str().unwrap_or_default();
            let id = t["id"]
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < tokens.len());
            let id = id.ok_or_else(|| {
                refuse(
                    path,
                    "added_tokens",
                    format!("{content:?} has no id in the vocabulary"),
                )
            })?;
            for flag in ["lstrip", "rstrip", "single_word"] {
                if t[flag].as_bool() == Some(true) {
                    return Err(refuse(
                        path,
                        "added_tokens",
                        format!("{content:?} has {flag}"),
                    ));
                }
            }
            tokens[id] = Some(content.to_string());
            // The two ends are control tokens; placeholders (<|url|>, <|user|>, ...) stand for
            // text and are rendered like it.
            types[id] = if content == END_OF_TEXT || content == END_OF_POST {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.unwrap_or_else(|| {
                    types[i] = TOKEN_UNUSED;
                    format!("[PAD{i}]")
                })
            })
            .collect();
        let merges = merges_of(path, model)?;
        let id_of = |s: &str| tokens.iter().position(|t| t == s).map(|i| i as u32);
        let end_of_text = id_of(END_OF_TEXT)
            .ok_or_else(|| refuse(path, "added_tokens", format!("no {END_OF_TEXT}")))?;
        Ok(Self {
            end_of_post: id_of(END_OF_POST),
            end_of_text,
            tokens,
            types,
            merges,
        })
    }

    /// Adds the `tokenizer.*` metadata llama.cpp reads.
    pub fn add_to(&self, h: &mut GgufHeader) {
        h.set("tokenizer.ggml.model", Value::Str("gpt2".into()));
        // GPT-2's split regex, the one HF's ByteLevel pre-tokenizer uses.
        h.set("tokenizer.ggml.pre", Value::Str("gpt-2".into()));
        h.set(
            "tokenizer.ggml.tokens",
            Value::StrArray(self.tokens.clone()),
        );
        h.set(
            "tokenizer.ggml.token_type",
            Value::I32Array(self.types.clone()),
        );
        h.set(
            "tokenizer.ggml.merges",
            Value::StrArray(self.merges.clone()),
        );
        h.set("tokenizer.ggml.bos_token_id", Value::U32(self.end_of_text));
        h.set("tokenizer.ggml.eos_token_id", Value::U32(self.end_of_text));
        if let Some(eot) = self.end_of_post {
            h.set("tokenizer.ggml.eot_token_id", Value::U32(eot));
        }
        h.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
        h.set("tokenizer.ggml.add_eos_token", Value::Bool(false));
        h.set("tokenizer.chat_template", Value::Str(CHAT_TEMPLATE.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(normalizer: Json, merges: Json) -> Json {
        serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<|endofpost|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "<|url|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": normalizer,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": {"<|endoftext|>": 0, "<|endofpost|>": 1, "<|url|>": 2, "a": 3, "b": 4, "ab": 5},
                      "merges": merges}
        })
    }

    #[test]
    fn reads_both_merge_forms_pads_and_refuses_a_normalizer_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("tokenizer.json");
        for merges in [serde_json::json!(["a b"]), serde_json::json!([["a", "b"]])] {
            std::fs::write(&p, tokenizer(Json::Null, merges).to_string()).expect("write");
            let v = GgufVocab::from_tokenizer_json(&p, 8).expect("vocab");
            assert_eq!(v.merges, vec!["a b"]);
            assert_eq!(v.tokens.len(), 8);
            assert_eq!(v.tokens[7], "[PAD7]");
            assert_eq!(
                v.types[..7],
                [
                    TOKEN_CONTROL,
                    TOKEN_CONTROL,
                    TOKEN_USER_DEFINED,
                    1,
                    1,
                    1,
                    TOKEN_UNUSED
                ]
            );
            assert_eq!((v.end_of_text, v.end_of_post), (0, Some(1)));
        }
        let nfkc = serde_json::json!({"type": "NFKC"});
        std::fs::write(&p, tokenizer(nfkc, serde_json::json!(["a b"])).to_string()).expect("write");
        let e = GgufVocab::from_tokenizer_json(&p, 6)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("tokenizer.json: normalizer: a NFKC normalizer"),
            "{e}"
        );
    }
}
