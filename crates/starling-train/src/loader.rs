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
        for s in manifest.shards.iter().filter(|s| s.split == split) {
            shards.push(
                TokenShard::open(&dir.join(&s.file)).map_err(|e| Error::Format(e.to_string()))?,
            );
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
        Ok((Self { shards, seed, salt }, manifest))
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
        let eligible: Vec<&TokenShard> = self.shards.iter().filter(|s| s.len() > ctx + 1).collect();
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
            let s = eligible[rng.gen_range(0..eligible.len())];
            let start = rng.gen_range(0..s.len() - ctx - 1);
            s.read_into(start, &mut buf);
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
