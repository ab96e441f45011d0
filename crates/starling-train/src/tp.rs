//! Tensor parallelism's split of the parameters (Megatron-LM, Shoeybi et al. 2019): inside a
//! block Q, K, V, gate and up are split by rows (each rank its 1/n of the heads, KV heads and MLP
//! columns; HF stores heads row-major, so a head's rows are contiguous) and O and down by columns;
//! the embedding and the head by rows (each rank 1/n of the vocabulary); the norms are
//! replicated and, with sequence parallelism, run on each rank's share of the tokens
//! (`starling_model::TensorParallel`).

use crate::{Error, Result};
use starling_arch::LlamaConfig;
use tch::Tensor;

/// How one parameter is split over a tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Dimension 0 in equal parts (Q, K, V, gate, up; the embedding and the head by vocabulary).
    Rows,
    /// Dimension 1 in equal parts (O, down).
    Cols,
    /// Every rank holds all of it.
    Replicated,
}

impl Split {
    /// The split of the parameter named `name` (HF names).
    pub fn of(name: &str) -> Self {
        const ROWS: [&str; 7] = [
            "q_proj",
            "k_proj",
            "v_proj",
            "gate_proj",
            "up_proj",
            "embed_tokens",
            "lm_head",
        ];
        const COLS: [&str; 2] = ["o_proj", "down_proj"];
        let module = name
            .strip_suffix(".weight")
            .and_then(|n| n.rsplit('.').next())
            .unwrap_or("");
        if ROWS.contains(&module) {
            Split::Rows
        } else if COLS.contains(&module) {
            Split::Cols
        } else {
            Split::Replicated
        }
    }

    fn dim(self) -> Option<usize> {
        match self {
            Split::Rows => Some(0),
            Split::Cols => Some(1),
            Split::Replicated => None,
        }
    }
}

/// One rank's place in a tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpRank {
    /// This rank in the group.
    pub rank: usize,
    /// Ranks in the group.
    pub ranks: usize,
}

impl TpRank {
    /// The shape this rank holds of a parameter of shape `full`. A split the ranks do not
    /// divide (only the vocabulary may be: [`check`] refuses the others) is padded with zero
    /// rows up to the next multiple.
    pub fn local_shape(&self, name: &str, full: &[i64]) -> Vec<i64> {
        let mut s = full.to_vec();
        if let Some(d) = Split::of(name).dim() {
            s[d] = (s[d] + self.ranks as i64 - 1) / self.ranks as i64;
        }
        s
    }

    /// This rank's part of the whole parameter `full` (a copy; zero rows past its end).
    pub fn local(&self, name: &str, full: &Tensor) -> Tensor {
        match Split::of(name).dim() {
            Some(d) => {
                let len = self.local_shape(name, &full.size())[d];
                let start = (self.rank as i64 * len).min(full.size()[d]);
                let have = (full.size()[d] - start).min(len);
                let part = full.narrow(d as i64, start, have).copy();
                if have == len {
                    return part;
                }
                let mut pad = part.size();
                pad[d] = len - have;
                Tensor::cat(
                    &[part, Tensor::zeros(pad, (full.kind(), full.device()))],
                    d as i64,
                )
            }
            None => full.shallow_clone(),
        }
    }

    /// The whole parameter, `full_len` along its split dimension, from every rank's part in
    /// rank order (the padding dropped).
    pub fn join(name: &str, parts: &[Tensor], full_len: i64) -> Tensor {
        match Split::of(name).dim() {
            Some(d) => Tensor::cat(parts, d as i64).narrow(d as i64, 0, full_len),
            None => parts[0].shallow_clone(),
        }
    }
}

/// Refuses a tensor-parallel degree that does not divide the model's heads, KV heads and MLP
/// width, or the context (the tokens are split between blocks), or the ranks of a node; a
/// vocabulary it does not divide is padded (a warning says so).
pub fn check(mc: &LlamaConfig, n: usize, ctx: usize, local_world: Option<usize>) -> Result<()> {
    let bad = |what: &str, v: usize| {
        Err(Error::Format(format!(
            "--tp {n}: the model's {what} ({v}) is not divisible by {n}"
        )))
    };
    if n == 0 {
        return Err(Error::Format("--tp must be at least 1".into()));
    }
    if let Some(local) = local_world.filter(|&l| n > l) {
        return Err(Error::Format(format!(
            "--tp {n} is larger than the {local} ranks of a node (LOCAL_WORLD_SIZE): tensor \
             parallelism stays inside a node"
        )));
    }
    if !mc.num_attention_heads.is_multiple_of(n) {
        return bad("attention heads", mc.num_attention_heads);
    }
    if !mc.num_key_value_heads.is_multiple_of(n) {
        return bad("KV heads", mc.num_key_value_heads);
    }
    if !mc.intermediate_size.is_multiple_of(n) {
        return bad("MLP width", mc.intermediate_size);
    }
    if !mc.vocab_size.is_multiple_of(n) {
        let padded = mc.vocab_size.div_ceil(n) * n;
        tracing::warn!(
            "--tp {n}: the vocabulary ({}) is padded to {padded} to split it over {n} ranks; \
             the padding is never predicted and is not saved",
            mc.vocab_size
        );
    }
    if !ctx.is_multiple_of(n) {
        return Err(Error::Format(format!(
            "--tp {n}: the context ({ctx}) is not divisible by {n} (each rank holds 1/{n} of the \
             tokens between blocks)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn parts_join_back_into_the_whole() {
        assert_eq!(
            Split::of("model.layers.3.self_attn.q_proj.weight"),
            Split::Rows
        );
        assert_eq!(
            Split::of("model.layers.3.mlp.down_proj.weight"),
            Split::Cols
        );
        assert_eq!(
            Split::of("model.layers.3.input_layernorm.weight"),
            Split::Replicated
        );
        assert_eq!(Split::of("lm_head.weight"), Split::Rows);
        assert_eq!(Split::of("model.embed_tokens.weight"), Split::Rows);
        assert_eq!(Split::of("model.norm.weight"), Split::Replicated);
        let w = Tensor::arange(24, (Kind::Float, tch::Device::Cpu)).view([4, 6]);
        for (name, len) in [
            ("a.o_proj.weight", 6),
            ("a.up_proj.weight", 4),
            ("a.norm.weight", 4),
        ] {
            let parts: Vec<Tensor> = (0..2)
                .map(|rank| TpRank { rank, ranks: 2 }.local(name, &w))
                .collect();
            let want = TpRank { rank: 0, ranks: 2 }.local_shape(name, &[4, 6]);
            assert_eq!(parts[0].size(), want, "{name}");
            assert!(TpRank::join(name, &parts, len).equal(&w), "{name}");
        }
        // A vocabulary of 5 rows over 2 ranks: 3 each, the last row of rank 1 zero.
        let v = Tensor::arange(10, (Kind::Float, tch::Device::Cpu)).view([5, 2]) + 1.0;
        let name = "lm_head.weight";
        let parts: Vec<Tensor> = (0..2)
            .map(|rank| TpRank { rank, ranks: 2 }.local(name, &v))
            .collect();
        assert_eq!(parts[1].size(), [3, 2]);
        assert_eq!(
            parts[1].get(2).abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
        assert!(TpRank::join(name, &parts, 5).equal(&v));
        let c = LlamaConfig::preset("small", 300).expect("small");
        assert!(check(&c, 2, 64, Some(2)).is_ok());
        let e = check(&c, 3, 64, None).unwrap_err().to_string();
        assert!(
            e.contains("attention heads (8) is not divisible by 3"),
            "{e}"
        );
        let e = check(&c, 8, 64, Some(8)).unwrap_err().to_string();
        assert!(e.contains("KV heads (4)"), "{e}");
        let e = check(&c, 4, 64, Some(2)).unwrap_err().to_string();
        assert!(e.contains("larger than the 2 ranks of a node"), "{e}");
        let e = check(&c, 2, 63, None).unwrap_err().to_string();
        assert!(e.contains("context (63) is not divisible by 2"), "{e}");
        let odd = LlamaConfig::preset("small", 301).expect("small");
        assert!(
            check(&odd, 2, 64, None).is_ok(),
            "an odd vocabulary is padded"
        );
    }
}
