//! DESIGN.md's fixed comparison model as `bench train` runs it on starling's side: GPT-2 style
//! (LayerNorm, GELU MLP, learned positions, tied head), with starling's attention and loss.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// DESIGN.md's fixed comparison model: GPT-2 style (LayerNorm, GELU MLP, learned positions, tied head).
pub(super) struct Gpt2 {
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Gpt2Block>,
    ln_f: nn::LayerNorm,
    heads: i64,
}

struct Gpt2Block {
    ln_1: nn::LayerNorm,
    c_attn: nn::Linear,
    attn_proj: nn::Linear,
    ln_2: nn::LayerNorm,
    c_fc: nn::Linear,
    mlp_proj: nn::Linear,
}

impl Gpt2 {
    /// A GPT-2 of `layers` blocks of width `d`, `heads` heads and MLP width `ff`, initialised
    /// as GPT-2 is (normal, 0.02).
    pub(super) fn new(
        p: &nn::Path,
        vocab: i64,
        ctx: i64,
        d: i64,
        layers: i64,
        heads: i64,
        ff: i64,
    ) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let lin = |p: nn::Path, i, o| {
            nn::linear(
                p,
                i,
                o,
                nn::LinearConfig {
                    ws_init: init,
                    ..Default::default()
                },
            )
        };
        let emb = |p: nn::Path, n| {
            nn::embedding(
                p,
                n,
                d,
                nn::EmbeddingConfig {
                    ws_init: init,
                    ..Default::default()
                },
            )
        };
        let blocks = (0..layers)
            .map(|i| {
                let b = p / "h" / i;
                Gpt2Block {
                    ln_1: nn::layer_norm(&b / "ln_1", vec![d], Default::default()),
                    c_attn: lin(&b / "c_attn", d, 3 * d),
                    attn_proj: lin(&b / "attn_proj", d, d),
                    ln_2: nn::layer_norm(&b / "ln_2", vec![d], Default::default()),
                    c_fc: lin(&b / "c_fc", d, ff),
                    mlp_proj: lin(&b / "mlp_proj", ff, d),
                }
            })
            .collect();
        Self {
            wte: emb(p / "wte", vocab),
            wpe: emb(p / "wpe", ctx),
            blocks,
            ln_f: nn::layer_norm(p / "ln_f", vec![d], Default::default()),
            heads,
        }
    }

    /// Mean next-token cross-entropy of `ids` against `targets` ([batch, time]).
    pub(super) fn loss(&self, ids: &Tensor, targets: &Tensor) -> Tensor {
        let (b, t) = ids.size2().unwrap_or((1, 1));
        let pos = Tensor::arange(t, (Kind::Int64, ids.device()));
        let mut x = self.wte.forward(ids) + self.wpe.forward(&pos);
        let d = x.size()[2];
        for blk in &self.blocks {
            let qkv = blk.c_attn.forward(&blk.ln_1.forward(&x)).split(d, 2);
            let heads = |z: &Tensor| z.view([b, t, self.heads, d / self.heads]).transpose(1, 2);
            let (q, k, v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
            // As starling's Llama: training on the CPU, starling-torch's attention (its output
            // already [b, t, d]); otherwise SDPA.
            let y = if x.device() == Device::Cpu && x.requires_grad() {
                starling_torch::causal_attention(&q, &k, &v)
                    .unwrap_or_else(|e| panic!("GPT-2 attention of {:?}: {e}", q.size()))
            } else {
                Tensor::scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    None::<Tensor>,
                    0.0,
                    true,
                    None,
                    false,
                )
                .transpose(1, 2)
                .reshape([b, t, d])
            };
            x = &x + blk.attn_proj.forward(&y);
            x = &x
                + blk
                    .mlp_proj
                    .forward(&blk.c_fc.forward(&blk.ln_2.forward(&x)).gelu("none"));
        }
        // starling's loss, as the Llama rows' (starling-torch's fused cross-entropy, the logits
        // made [rows, vocab] by the product and handed over).
        let logits = self
            .ln_f
            .forward(&x)
            .view([-1, d])
            .matmul(&self.wte.ws.tr());
        let size = logits.size();
        starling_torch::cross_entropy_consuming(logits, &targets.reshape([-1]))
            .unwrap_or_else(|e| panic!("GPT-2 loss of logits {size:?}: {e}"))
    }
}
