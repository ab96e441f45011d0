//! The model's seams for training across ranks: a [`Runner`] supplies the weights and runs the
//! blocks (recomputation, FSDP), and a [`TensorParallel`] group splits the model (Megatron-LM,
//! Shoeybi et al. 2019, with the sequence parallelism of Korthikanti et al. 2022): each block's
//! heads and MLP columns, the vocabulary (embedding rows, head rows) and, between the blocks,
//! the tokens. The collectives come from the trainer; the vocabulary-parallel embedding and
//! cross-entropy are here.

use crate::model::BlockTemplate;
use tch::{Kind, Tensor};

/// A block's weights, by their HF names relative to `model.layers.N.`.
pub const BLOCK_WEIGHTS: [&str; 9] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// How a training forward reaches its weights and runs its blocks: activation recomputation,
/// parameters sharded across ranks (FSDP). The model calls it on every forward once set
/// ([`crate::Llama::set_runner`]); a failure inside (a collective) panics, as a failing tensor op does.
pub trait Runner: Send + std::fmt::Debug {
    /// Stand-ins, by HF name, for the weights outside the blocks (`model.embed_tokens.weight`,
    /// `model.norm.weight`, `lm_head.weight`) for one forward; `None` uses the model's own.
    fn outer_weights(&self) -> Option<std::collections::HashMap<String, Tensor>> {
        None
    }

    /// Block `block.layer`'s output for `x`.
    fn run(&self, x: &Tensor, block: BlockTemplate) -> Tensor;

    /// The tensor-parallel group the model runs split over, if any: the vocabulary and the
    /// tokens between blocks are split over it, and [`Runner::run`] is given a block's share
    /// of the tokens ([`BlockTemplate::forward_split`]).
    fn tensor_parallel(&self) -> Option<&dyn TensorParallel> {
        None
    }
}

/// A tensor-parallel group as the model sees it: its size, this rank's place and the four
/// collectives with autograd (every rank calls them in the same order).
pub trait TensorParallel {
    /// This rank in the group.
    fn rank(&self) -> usize;
    /// Ranks in the group (it divides the heads, the KV heads, the MLP width, the vocabulary
    /// and the tokens of a batch).
    fn ranks(&self) -> usize;
    /// Every rank's `x` concatenated along dim 0 in rank order; backward sums the gradient and
    /// hands each rank its share.
    fn gather_tokens(&self, x: &Tensor) -> Tensor;
    /// The sum over the group of `x`, this rank's 1/n share along dim 0; backward gathers.
    fn scatter_tokens(&self, x: &Tensor) -> Tensor;
    /// The sum over the group of `x`; backward passes the gradient unchanged (Megatron's g).
    fn sum(&self, x: &Tensor) -> Tensor;
    /// `w` unchanged; backward sums its gradient over the group (a replicated weight applied to
    /// this rank's share of the tokens: a norm under sequence parallelism).
    fn shared(&self, w: &Tensor) -> Tensor;
}

/// `logits` [tokens, cols] of ids `start..start + cols` with the ids from `vocab` on (padding)
/// set to −∞, so they take no probability.
fn padding_masked(logits: &Tensor, start: i64, vocab: i64) -> Tensor {
    let cols = logits.size()[1];
    if start + cols <= vocab {
        return logits.shallow_clone();
    }
    let ids = Tensor::arange_start(start, start + cols, (Kind::Int64, logits.device()));
    logits.masked_fill(&ids.ge(vocab).unsqueeze(0), f64::NEG_INFINITY)
}

/// This rank's slice of the vocabulary: the first id it holds and how many.
fn slice(part: &Tensor, tp: &dyn TensorParallel) -> (i64, i64) {
    let rows = part.size()[0];
    (tp.rank() as i64 * rows, rows)
}

/// Embeddings of `ids` [batch, time] from this rank's rows of the table (`part`, [vocab / n,
/// hidden]): each rank looks up the ids it holds (zeros for the others) and the sum over the
/// group is scattered by tokens, so each rank returns its share [batch · time / n, hidden].
pub(crate) fn embedding(part: &Tensor, ids: &Tensor, tp: &dyn TensorParallel) -> Tensor {
    let (start, rows) = slice(part, tp);
    let local = ids.reshape([-1]) - start;
    let mine = local.ge(0).logical_and(&local.lt(rows));
    let e = Tensor::embedding(part, &local.clamp(0, rows - 1), -1, false, false);
    tp.scatter_tokens(&(e * mine.unsqueeze(-1).to_kind(part.kind())))
}

/// This rank's slice of the logits [tokens, vocab / n] of every token: its share of the final
/// hidden states `h` gathered, times its rows of the head `w`, in precision `k`.
pub(crate) fn vocab_slice(h: &Tensor, w: &Tensor, k: Kind, tp: &dyn TensorParallel) -> Tensor {
    crate::model::head_logits(&tp.gather_tokens(h), w, k)
}

/// Mean cross-entropy of `targets` [tokens] given this rank's slice of the logits [tokens,
/// vocab / n] (fp32) of a vocabulary of `vocab` ids (the slices may be padded past it): the
/// maximum, the sum of exponentials and the target's logit are each combined over the group, so
/// no rank holds the whole vocabulary's logits.
pub(crate) fn cross_entropy(
    part: &Tensor,
    targets: &Tensor,
    tp: &dyn TensorParallel,
    vocab: i64,
) -> Tensor {
    let (start, cols) = (tp.rank() as i64 * part.size()[1], part.size()[1]);
    let part = &padding_masked(part, start, vocab);
    // The maximum only keeps exp finite; it cancels out of the loss, so it needs no gradient.
    let local_max = part.detach().amax([-1i64].as_slice(), false);
    let max = tp
        .gather_tokens(&local_max.unsqueeze(0))
        .amax([0i64].as_slice(), false);
    let shifted = part - max.unsqueeze(-1);
    let sum_exp = tp.sum(&shifted.exp().sum_dim_intlist(-1, false, Kind::Float));
    let local = targets - start;
    let mine = local.ge(0).logical_and(&local.lt(cols));
    let picked = shifted
        .gather(1, &local.clamp(0, cols - 1).unsqueeze(1), false)
        .squeeze_dim(1)
        * mine.to_kind(Kind::Float);
    (sum_exp.log() - tp.sum(&picked)).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A "group" of one rank that holds the whole vocabulary: every collective is the identity.
    struct Alone;

    impl TensorParallel for Alone {
        fn rank(&self) -> usize {
            0
        }
        fn ranks(&self) -> usize {
            1
        }
        fn gather_tokens(&self, x: &Tensor) -> Tensor {
            x.shallow_clone()
        }
        fn scatter_tokens(&self, x: &Tensor) -> Tensor {
            x.shallow_clone()
        }
        fn sum(&self, x: &Tensor) -> Tensor {
            x.shallow_clone()
        }
        fn shared(&self, w: &Tensor) -> Tensor {
            w.shallow_clone()
        }
    }

    /// Runs every block split over [`Alone`].
    #[derive(Debug)]
    struct SplitAlone;

    impl Runner for SplitAlone {
        fn run(&self, x: &Tensor, block: BlockTemplate) -> Tensor {
            block.forward_split(x, &|_| None, &Alone)
        }
        fn tensor_parallel(&self) -> Option<&dyn TensorParallel> {
            Some(&Alone)
        }
    }

    #[test]
    fn a_model_split_over_one_rank_equals_the_whole_model() {
        tch::manual_seed(5);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let c = crate::LlamaConfig::preset("tiny", 64).expect("tiny");
        let mut m = crate::Llama::new(&vs.root(), &c);
        let ids = Tensor::randint(64, [2, 8], (Kind::Int64, Device::Cpu));
        let targets = Tensor::randint(64, [2, 8], (Kind::Int64, Device::Cpu));
        let whole = (m.forward(&ids), m.hidden(&ids), m.loss(&ids, &targets));
        m.set_runner(Some(Box::new(SplitAlone)));
        let split = (m.forward(&ids), m.hidden(&ids), m.loss(&ids, &targets));
        assert_eq!(split.0.size(), [2, 8, 64]);
        assert!(split.0.allclose(&whole.0, 1e-5, 1e-5, false), "logits");
        assert!(split.1.allclose(&whole.1, 1e-5, 1e-5, false), "hidden");
        assert!(split.2.allclose(&whole.2, 1e-5, 1e-5, false), "loss");
    }

    #[test]
    fn split_vocabulary_functions_equal_the_whole_ones_on_one_rank() {
        tch::manual_seed(3);
        let logits =
            (Tensor::randn([6, 10], (Kind::Float, Device::Cpu)) * 4.0).set_requires_grad(true);
        let targets = Tensor::from_slice(&[0i64, 9, 3, 3, 7, 1]);
        let ours = cross_entropy(&logits, &targets, &Alone, 10);
        let theirs = logits.cross_entropy_for_logits(&targets);
        assert!((ours.double_value(&[]) - theirs.double_value(&[])).abs() < 1e-6);
        let g1 = Tensor::run_backward(&[&ours], &[&logits], true, false).remove(0);
        let g2 = Tensor::run_backward(&[&theirs], &[&logits], false, false).remove(0);
        assert!(g1.allclose(&g2, 1e-6, 1e-7, false));
        let table = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
        let ids = Tensor::from_slice(&[1i64, 9, 0, 4]).view([2, 2]);
        let e = embedding(&table, &ids, &Alone);
        assert!(e.equal(&table.index_select(0, &ids.view([-1]))));
        // Two padding columns (ids 10 and 11) change nothing, whatever their logits.
        let padded = Tensor::cat(
            &[
                logits.detach(),
                Tensor::ones([6, 2], (Kind::Float, Device::Cpu)) * 50.0,
            ],
            1,
        );
        let masked = cross_entropy(&padded, &targets, &Alone, 10);
        assert!((masked.double_value(&[]) - theirs.double_value(&[])).abs() < 1e-6);
    }
}
