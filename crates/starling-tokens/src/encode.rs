//! From a corpus directory to documents, a tokenizer and token shards with a manifest.

use crate::error::{Error, Result};
use crate::shard::{Dtype, ShardWriter};
use crate::template::{document, TEMPLATE_VERSION};
use crate::tokenizer;
use serde::{Deserialize, Serialize};
use starling_artifacts::sha256_file;
use starling_corpus::Corpus;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Version of the token directory format.
pub const FORMAT_VERSION: u32 = 1;

/// The documents of a corpus, split as the corpus says (a thread goes where its root goes).
#[derive(Debug, Default)]
pub struct Documents {
    /// Training documents.
    pub train: Vec<String>,
    /// Validation documents.
    pub val: Vec<String>,
    /// Kept posts in training documents.
    pub train_posts: u64,
    /// Kept posts in validation documents.
    pub val_posts: u64,
}

/// Reads the kept posts of a corpus and lays them out as documents: reply threads rebuilt from
/// reply references (parent first, replies by time), single posts otherwise.
pub fn corpus_documents(corpus_dir: &Path) -> Result<Documents> {
    let corpus = Corpus::open(corpus_dir)?;
    struct Kept {
        id: String,
        parent: Option<String>,
        time: i64,
        text: String,
        val: bool,
    }
    let split = corpus.manifest.split.clone();
    let mut kept = Vec::new();
    corpus.for_each_kept(&mut |p| {
        kept.push(Kept {
            val: split.is_val(&p),
            time: p.created_at.map(|t| t.timestamp_millis()).unwrap_or(0),
            id: p.id,
            parent: p.refs.reply_to,
            text: p.train_text,
        });
    })?;
    let index: HashMap<&str, usize> = kept
        .iter()
        .enumerate()
        .map(|(i, k)| (k.id.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); kept.len()];
    let mut is_root = vec![true; kept.len()];
    for (i, k) in kept.iter().enumerate() {
        if let Some(&p) = k.parent.as_deref().and_then(|p| index.get(p)) {
            if p != i {
                children[p].push(i);
                is_root[i] = false;
            }
        }
    }
    for c in &mut children {
        c.sort_by_key(|&i| (kept[i].time, i));
    }
    let mut docs = Documents::default();
    let mut seen = vec![false; kept.len()];
    for root in 0..kept.len() {
        if !is_root[root] {
            continue;
        }
        let mut order = Vec::new();
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            order.push(i);
            stack.extend(children[i].iter().rev());
        }
        let text = document(order.iter().map(|&i| kept[i].text.as_str()));
        if kept[root].val {
            docs.val.push(text);
            docs.val_posts += order.len() as u64;
        } else {
            docs.train.push(text);
            docs.train_posts += order.len() as u64;
        }
    }
    // Reply cycles (a corrupt dump) have no root: lay their posts out alone.
    for i in 0..kept.len() {
        if !seen[i] {
            docs.train.push(document([kept[i].text.as_str()]));
            docs.train_posts += 1;
        }
    }
    Ok(docs)
}

/// Trains a tokenizer on a corpus's training documents and saves it to `out`.
pub fn train_tokenizer(
    corpus_dir: &Path,
    vocab_size: usize,
    out: &Path,
) -> Result<tokenizers::Tokenizer> {
    let docs = corpus_documents(corpus_dir)?;
    if docs.train.is_empty() {
        return Err(Error::Format {
            path: corpus_dir.to_path_buf(),
            message: "no kept training posts to train a tokenizer on".into(),
        });
    }
    let t = tokenizer::train(docs.train.iter(), vocab_size)?;
    tokenizer::save(&t, out)?;
    Ok(t)
}

/// Settings of `encode_corpus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncodeConfig {
    /// Most tokens per shard file. By default 100M.
    pub shard_tokens: u64,
}

impl Default for EncodeConfig {
    fn default() -> Self {
        Self {
            shard_tokens: 100_000_000,
        }
    }
}

/// One shard file in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name.
    pub file: String,
    /// "train" or "val".
    pub split: String,
    /// Tokens.
    pub tokens: u64,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// `manifest.json` of a token directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensManifest {
    /// Directory format version.
    pub format_version: u32,
    /// Document template version.
    pub template_version: u32,
    /// The tokenizer file (copied into the directory) and its checksum.
    pub tokenizer: String,
    /// SHA-256 of `tokenizer.json`.
    pub tokenizer_sha256: String,
    /// Vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Stored id width.
    pub dtype: Dtype,
    /// The corpus's manifest checksum.
    pub corpus_manifest_sha256: String,
    /// Whether the corpus was synthetic.
    pub synthetic: bool,
    /// Documents per split.
    pub documents: HashMap<String, u64>,
    /// Kept posts per split.
    pub posts: HashMap<String, u64>,
    /// Tokens per split.
    pub tokens: HashMap<String, u64>,
    /// Shard files.
    pub shards: Vec<ShardEntry>,
    /// Encoding throughput, tokens per second.
    pub tokens_per_s: f64,
    /// Settings.
    pub config: EncodeConfig,
}

/// Closes an open shard (if any) and records it in the manifest's list.
fn finish_shard(
    writer: Option<(ShardWriter, String)>,
    split: &str,
    shards: &mut Vec<ShardEntry>,
) -> Result<()> {
    if let Some((w, file)) = writer {
        let (tokens, sha256) = w.finish()?;
        shards.push(ShardEntry {
            file,
            split: split.into(),
            tokens,
            sha256,
        });
    }
    Ok(())
}

/// Encodes a corpus's documents with `tokenizer_json` into `out`: shards, a copy of the tokenizer and `manifest.json`.
pub fn encode_corpus(
    corpus_dir: &Path,
    tokenizer_json: &Path,
    out: &Path,
    config: &EncodeConfig,
) -> Result<TokensManifest> {
    let t = tokenizer::load(tokenizer_json)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let docs = corpus_documents(corpus_dir)?;
    let vocab_size = t.get_vocab_size(true);
    let dtype = Dtype::for_vocab(vocab_size);
    let start = Instant::now();
    let mut shards = Vec::new();
    let mut tokens = HashMap::new();
    for (split, list) in [("train", &docs.train), ("val", &docs.val)] {
        let mut n = 0u64;
        let mut writer: Option<(ShardWriter, String)> = None;
        for chunk in list.chunks(1024) {
            let encs = t
                .encode_batch(chunk.to_vec(), false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            for e in encs {
                let ids = e.get_ids();
                if writer.as_ref().is_some_and(|(w, _)| {
                    w.len() + ids.len() as u64 > config.shard_tokens && !w.is_empty()
                }) {
                    finish_shard(writer.take(), split, &mut shards)?;
                }
                if writer.is_none() {
                    let file = format!(
                        "{split}-{:05}.bin",
                        shards.iter().filter(|s| s.split == split).count()
                    );
                    writer = Some((ShardWriter::create(&out.join(&file), dtype)?, file));
                }
                if let Some((w, _)) = writer.as_mut() {
                    w.write(ids)?;
                }
                n += ids.len() as u64;
            }
        }
        finish_shard(writer.take(), split, &mut shards)?;
        tokens.insert(split.to_string(), n);
    }
    let secs = start.elapsed().as_secs_f64();
    let total: u64 = tokens.values().sum();
    let tok_out = out.join("tokenizer.json");
    if tokenizer_json.canonicalize().ok() != tok_out.canonicalize().ok() {
        std::fs::copy(tokenizer_json, &tok_out).map_err(|e| Error::io(&tok_out, e))?;
    }
    let corpus = Corpus::open(corpus_dir)?;
    let manifest = TokensManifest {
        format_version: FORMAT_VERSION,
        template_version: TEMPLATE_VERSION,
        tokenizer: "tokenizer.json".into(),
        tokenizer_sha256: sha256_file(&tok_out)?.0,
        vocab_size,
        dtype,
        corpus_manifest_sha256: sha256_file(&corpus_dir.join("manifest.json"))?.0,
        synthetic: corpus.manifest.synthetic,
        documents: [
            ("train".to_string(), docs.train.len() as u64),
            ("val".to_string(), docs.val.len() as u64),
        ]
        .into(),
        posts: [
            ("train".to_string(), docs.train_posts),
            ("val".to_string(), docs.val_posts),
        ]
        .into(),
        tokens,
        shards,
        tokens_per_s: total as f64 / secs.max(1e-9),
        config: config.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let path = out.join("manifest.json");
    starling_artifacts::write_atomic(&path, &json)?;
    Ok(manifest)
}
