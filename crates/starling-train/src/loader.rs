//! Random windows over memory-mapped token shards: batch `k` of a run is a pure function of
//! (seed, split, k), so a resumed run sees exactly the batches an uninterrupted one would.

use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use starling_tokens::{TokenShard, TokensManifest};
use std::path::Path;
use tch::Tensor;

/// The shards of one split.
#[derive(Debug)]
pub struct TokenLoader {
    shards: Vec<TokenShard>,
    names: Vec<String>,
    vocab: u32,
    seed: u64,
    salt: u64,
}

impl TokenLoader {
    /// Opens the `split` ("train" or "val") shards of a token directory.
    pub fn open(dir: &Path, split: &str, seed: u64) -> Result<(Self, TokensManifest)> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: TokensManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        let mut shards = Vec::new();
        let mut names = Vec::new();
        for s in manifest.shards.iter().filter(|s| s.split == split) {
            let p = dir.join(&s.file);
            let shard = TokenShard::open(&p).map_err(|e| Error::Format(e.to_string()))?;
            if shard.dtype() != manifest.dtype {
                return Err(Error::Format(format!(
                    "{}: stores {:?} ids but {} says {:?}",
                    p.display(),
                    shard.dtype(),
                    path.display(),
                    manifest.dtype
                )));
            }
            shards.push(shard);
            names.push(p.display().to_string());
        }
        if manifest.dtype.bytes() < 4 && manifest.vocab_size > 1 << 16 {
            return Err(Error::Format(format!(
                "{}: {:?} ids cannot hold a vocabulary of {}",
                path.display(),
                manifest.dtype,
                manifest.vocab_size
            )));
        }
        if shards.is_empty() {
            return Err(Error::Format(format!(
                "{}: no {split} shards",
                dir.display()
            )));
        }
        let salt = if split == "train" {
            0
        } else {
            0x0005_eed0_f7a1
        };
        let vocab = u32::try_from(manifest.vocab_size).unwrap_or(u32::MAX);
        Ok((
            Self {
                shards,
                names,
                vocab,
                seed,
                salt,
            },
            manifest,
        ))
    }

    /// Tokens in the split.
    pub fn tokens(&self) -> usize {
        self.shards.iter().map(TokenShard::len).sum()
    }

    /// Batch `k`: inputs and targets [batch, ctx] (targets shifted by one).
    pub fn batch(&self, k: u64, batch: usize, ctx: usize) -> Result<(Tensor, Tensor)> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ self.salt ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let eligible: Vec<usize> = (0..self.shards.len())
            .filter(|&i| self.shards[i].len() > ctx + 1)
            .collect();
        if eligible.is_empty() {
            return Err(Error::Format(format!(
                "no shard holds more than {} tokens (the context + 1)",
                ctx + 1
            )));
        }
        let mut buf = vec![0u32; ctx + 1];
        let mut xs = Vec::with_capacity(batch * ctx);
        let mut ys = Vec::with_capacity(batch * ctx);
        for _ in 0..batch {
            let i = eligible[rng.gen_range(0..eligible.len())];
            let s = &self.shards[i];
            let start = rng.gen_range(0..s.len() - ctx - 1);
            s.read_into(start, &mut buf);
            if let Some(at) = buf.iter().position(|&t| t >= self.vocab) {
                return Err(Error::Format(format!(
                    "{}: token {} at position {} is outside the vocabulary of {}",
                    self.names[i],
                    buf[at],
                    start + at,
                    self.vocab
                )));
            }
            xs.extend(buf[..ctx].iter().map(|&t| i64::from(t)));
            ys.extend(buf[1..].iter().map(|&t| i64::from(t)));
        }
        let shape = [batch as i64, ctx as i64];
        Ok((
            Tensor::from_slice(&xs).view(shape),
            Tensor::from_slice(&ys).view(shape),
        ))
    }
}
