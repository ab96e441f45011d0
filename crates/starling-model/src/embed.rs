//! Post embeddings from the language model: the final hidden states (after the last RMSNorm) of a
//! post laid out with the training template, pooled over the post's tokens and scaled to unit length.

use crate::head::EmbeddingHead;
use crate::{Error, Llama, LlamaConfig, Result};
use starling_embed::{EmbedError, Embedder};
use starling_text::{extract_entities, NormalizeConfig, Normalizer};
use std::path::Path;
use std::sync::Mutex;
use tch::{Kind, Tensor};
use tokenizers::Tokenizer;

/// How a post's hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Plain mean over the post's tokens.
    Mean,
    /// Mean weighted by position (1, 2, 3, ...), as SGPT does for causal models: later tokens
    /// have read more of the post, so they say more about it.
    WeightedMean,
    /// The end-of-post token's state alone (it has read the whole post).
    Last,
}

impl Pooling {
    /// Parses `mean`, `weighted-mean` or `last`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Self::Mean),
            "weighted-mean" => Some(Self::WeightedMean),
            "last" => Some(Self::Last),
            _ => None,
        }
    }

    /// The name [`Pooling::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::WeightedMean => "weighted-mean",
            Self::Last => "last",
        }
    }
}

/// Longest post, in tokens, that is embedded whole (longer ones are cut).
pub const MAX_EMBED_TOKENS: usize = 256;
/// Posts per forward pass.
const BATCH: usize = 64;

struct Loaded {
    model: Llama,
    head: Option<EmbeddingHead>,
    _vs: tch::nn::VarStore,
}

/// How a post becomes token ids and pooling weights: the training template, the corpus
/// stage's normalisation, the embedding length; shared by embedding and its training.
pub(crate) struct PostEncoding {
    tokenizer: Tokenizer,
    normalizer: Normalizer,
    pub(crate) pooling: Pooling,
    prefix_tokens: usize,
    max_tokens: usize,
}

impl PostEncoding {
    /// The encoding of the model in `dir` (its `tokenizer.json`).
    pub(crate) fn new(dir: &Path, config: &LlamaConfig, pooling: Pooling) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = starling_tokens::tokenizer::load(&tok_path)
            .map_err(|e| Error::Format(format!("{}: {e}", tok_path.display())))?;
        let prefix = format!("{}:", starling_text::USER_PLACEHOLDER);
        let prefix_tokens = starling_tokens::tokenizer::encode(&tokenizer, &prefix)
            .map_err(|e| Error::Format(e.to_string()))?
            .len();
        Ok(Self {
            tokenizer,
            normalizer: Normalizer::new(NormalizeConfig::default()),
            pooling,
            prefix_tokens,
            max_tokens: MAX_EMBED_TOKENS.min(config.max_position_embeddings),
        })
    }

    /// Token ids of a post as the template lays it out, cut to the embedding length.
    pub(crate) fn ids(&self, text: &str) -> std::result::Result<Vec<i64>, EmbedError> {
        let n = self
            .normalizer
            .normalize_display(text, &extract_entities(text));
        let doc = starling_tokens::template::post(&n.text);
        let mut ids: Vec<i64> = starling_tokens::tokenizer::encode(&self.tokenizer, &doc)
            .map_err(|e| EmbedError(e.to_string()))?
            .into_iter()
            .map(i64::from)
            .collect();
        if ids.len() > self.max_tokens {
            // Keep the end-of-post token: it is where the model has read everything kept.
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    /// Pooling weights over `len` tokens: zero on the template prefix.
    pub(crate) fn weights(&self, len: usize, width: usize) -> Vec<f32> {
        let mut w = vec![0f32; width];
        let start = if len > self.prefix_tokens + 1 {
            self.prefix_tokens
        } else {
            0
        };
        match self.pooling {
            Pooling::Mean => w[start..len].iter_mut().for_each(|x| *x = 1.0),
            Pooling::WeightedMean => w[start..len]
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i + 1) as f32),
            Pooling::Last => w[len - 1] = 1.0,
        }
        w
    }

    /// [`PostEncoding::batch`] of `texts`, each cut to `max_tokens` (its last token kept last).
    pub(crate) fn truncated_batch(
        &self,
        texts: &[&str],
        max_tokens: usize,
    ) -> crate::Result<(Tensor, Tensor)> {
        let max_tokens = max_tokens.max(2);
        let ids = texts
            .iter()
            .map(|t| {
                let mut ids = self.ids(t).map_err(|e| crate::Error::Format(e.0))?;
                if ids.len() > max_tokens {
                    let last = ids[ids.len() - 1];
                    ids.truncate(max_tokens - 1);
                    ids.push(last);
                }
                Ok(ids)
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let rows: Vec<&[i64]> = ids.iter().map(Vec::as_slice).collect();
        Ok(self.batch(&rows))
    }

    /// Right-padded ids [b, width] and pooling weights [b, width, 1] of encoded posts (a causal
    /// model's states at real tokens never see the pads).
    pub(crate) fn batch(&self, rows: &[&[i64]]) -> (Tensor, Tensor) {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut w = Vec::with_capacity(rows.len() * width);
        for e in rows {
            ids.extend_from_slice(e);
            ids.extend(std::iter::repeat_n(0i64, width - e.len()));
            w.extend(self.weights(e.len(), width));
        }
        let b = rows.len() as i64;
        (
            Tensor::from_slice(&ids).view([b, width as i64]),
            Tensor::from_slice(&w).view([b, width as i64, 1]),
        )
    }
}

/// Hidden states [b, t, d] pooled by weights [b, t, 1] into unit vectors [b, d].
pub(crate) fn pool(h: &Tensor, w: &Tensor) -> Tensor {
    let h = h.to_kind(Kind::Float);
    let pooled =
        (h * w).sum_dim_intlist(1, false, Kind::Float) / w.sum_dim_intlist(1, false, Kind::Float);
    &pooled / pooled.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}

/// A model as an [`Embedder`]: `starling-model`'s implementation of the contract.
pub struct PostEmbedder {
    loaded: Vec<Mutex<Loaded>>,
    next: std::sync::atomic::AtomicUsize,
    enc: PostEncoding,
    dim: usize,
    hidden: usize,
    id: String,
    has_head: bool,
}

impl PostEmbedder {
    /// Loads `config.json` and `tokenizer.json` from `dir` and the weights from `weights` (CPU),
    /// and the embedding head of `dir` when there is one ([`crate::head::HEAD_FILE`]).
    pub fn load(dir: &Path, weights: &Path, pooling: Pooling) -> Result<Self> {
        Self::load_replicated(dir, weights, pooling, 1)
    }

    /// [`PostEmbedder::load`] with `replicas` copies of the model, so that as many threads embed
    /// at once (a model copy serves one call at a time).
    pub fn load_replicated(
        dir: &Path,
        weights: &Path,
        pooling: Pooling,
        replicas: usize,
    ) -> Result<Self> {
        let config = LlamaConfig::load(&dir.join("config.json"))?;
        let enc = PostEncoding::new(dir, &config, pooling)?;
        let (sha, _) = starling_artifacts::sha256_file(weights)?;
        let (head, head_sha) = match EmbeddingHead::load(dir)? {
            Some((h, sha)) => (Some(h), Some(sha)),
            None => (None, None),
        };
        if let Some(h) = &head {
            if h.in_dim() != config.hidden_size as i64 {
                return Err(Error::Format(format!(
                    "{}: the embedding head takes {}-d vectors, the model gives {}",
                    dir.join(crate::head::HEAD_FILE).display(),
                    h.in_dim(),
                    config.hidden_size
                )));
            }
        }
        let id = match &head_sha {
            Some(h) => format!("{}+head-{h}/{}", &sha[..16], pooling.name()),
            None => format!("{}/{}", &sha[..16], pooling.name()),
        };
        let dim = head
            .as_ref()
            .map_or(config.hidden_size, |h| h.out_dim() as usize);
        let mut loaded = Vec::new();
        for _ in 0..replicas.max(1) {
            let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let model = Llama::new(&vs.root(), &config);
            crate::load_weights(&mut vs, weights)?;
            let head = head.as_ref().map(EmbeddingHead::copy);
            loaded.push(Mutex::new(Loaded {
                model,
                head,
                _vs: vs,
            }));
        }
        Ok(Self {
            has_head: head.is_some(),
            loaded,
            next: std::sync::atomic::AtomicUsize::new(0),
            enc,
            dim,
            hidden: config.hidden_size,
            id,
        })
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.enc.pooling
    }

    /// A free model copy, or (all busy) the next one in turn.
    fn replica(&self) -> std::result::Result<std::sync::MutexGuard<'_, Loaded>, EmbedError> {
        for m in &self.loaded {
            if let Ok(g) = m.try_lock() {
                return Ok(g);
            }
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.loaded.len();
        self.loaded[i]
            .lock()
            .map_err(|_| EmbedError("the model lock is poisoned".into()))
    }

    /// The model's pooled unit vectors [n, hidden] of `texts`, in order, before any head.
    pub fn pooled(&self, texts: &[&str]) -> std::result::Result<Tensor, EmbedError> {
        self.vectors(texts, false)
    }

    /// Pooled vectors of `texts` in order, through the head when `head` (one model copy held throughout).
    fn vectors(&self, texts: &[&str], head: bool) -> std::result::Result<Tensor, EmbedError> {
        let encoded = texts
            .iter()
            .map(|t| self.enc.ids(t))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if encoded.is_empty() {
            let width = if head { self.dim } else { self.hidden };
            return Ok(Tensor::zeros(
                [0, width as i64],
                (Kind::Float, tch::Device::Cpu),
            ));
        }
        // Similar lengths share a batch, so little is spent on padding.
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let loaded = self.replica()?;
        let _guard = tch::no_grad_guard();
        let mut parts = Vec::new();
        for chunk in order.chunks(BATCH) {
            let rows: Vec<&[i64]> = chunk.iter().map(|&i| encoded[i].as_slice()).collect();
            let (ids, w) = self.enc.batch(&rows);
            parts.push(pool(&loaded.model.hidden(&ids), &w));
        }
        // Back to the callers' order.
        let sorted = Tensor::cat(&parts, 0);
        let mut inverse = vec![0i64; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i] = pos as i64;
        }
        let pooled = sorted.index_select(0, &Tensor::from_slice(&inverse));
        Ok(match (&loaded.head, head) {
            (Some(h), true) => h.apply(&pooled),
            _ => pooled,
        })
    }

    /// Width of the model's hidden states (the pooled vectors' dimension).
    pub fn hidden_size(&self) -> i64 {
        self.hidden as i64
    }

    /// True when an embedding head maps the pooled vectors.
    pub fn has_head(&self) -> bool {
        self.has_head
    }
}

impl Embedder for PostEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, EmbedError> {
        let out = self.vectors(texts, true)?;
        let dim = self.dim;
        let flat: Vec<f32> =
            Vec::<f32>::try_from(out.reshape([-1])).map_err(|e| EmbedError(e.to_string()))?;
        Ok(flat.chunks(dim.max(1)).map(<[f32]>::to_vec).collect())
    }
}
