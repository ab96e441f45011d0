//! The Llama architecture on libtorch, readable top to bottom: RMSNorm, rotary positions,
//! grouped-query attention, SwiGLU, optional tied head. Tensor names are Hugging Face's.

use crate::cache::{KvCache, SlotCache};
use crate::parallel::{self, Runner, TensorParallel, BLOCK_WEIGHTS};
use starling_arch::LlamaConfig;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Root-mean-square layer norm (computed in fp32, as HF does).
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, d: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[d], nn::Init::Const(1.0)),
            eps,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if x.device() == Device::Cpu && x.kind() == Kind::Float && self.weight.kind() == Kind::Float
        {
            // starling-torch's: one pass per row forward and backward.
            return starling_torch::rms_norm(x, &self.weight, self.eps)
                .unwrap_or_else(|e| panic!("RMSNorm of {:?}: {e}", x.size()));
        }
        if x.kind() == Kind::Float {
            // ATen's own RMSNorm (what nn.RMSNorm runs).
            let d = self.weight.size()[0];
            return x.rms_norm([d], Some(&self.weight), self.eps);
        }
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        (xf * (var + self.eps).rsqrt()).to_kind(kind) * &self.weight
    }
}

/// Rotary position tables (HF layout: the two halves of each head are rotated together).
#[derive(Debug)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(c: &LlamaConfig, device: tch::Device) -> Self {
        let hd = c.head_dim() as i64;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / (c.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        let inv = Tensor::from_slice(&inv).to_device(device);
        let pos = Tensor::arange(c.max_position_embeddings as i64, (Kind::Float, device));
        let freqs = pos.outer(&inv);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        Self {
            cos: emb.cos(),
            sin: emb.sin(),
        }
    }

    fn handle(&self) -> Self {
        Self {
            cos: self.cos.shallow_clone(),
            sin: self.sin.shallow_clone(),
        }
    }

    /// Rotates `x` of shape [batch, heads, time, head_dim] for positions `start..start + time`.
    fn apply(&self, x: &Tensor, start: i64) -> Tensor {
        let t = x.size()[2];
        let cos = self.cos.narrow(0, start, t).to_kind(x.kind());
        let sin = self.sin.narrow(0, start, t).to_kind(x.kind());
        let half = x.size()[3] / 2;
        let rotated = Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], -1);
        x * cos + rotated * sin
    }

    /// The tables of a decode step, once for every layer: cos and sign-folded sin [n, 1, 1,
    /// head_dim] of rows at positions `pos` (sin's first half negated, so a rotation is
    /// `x·cos + swap_halves(x)·sin` with no negation).
    fn tables_at(&self, pos: &Tensor) -> (Tensor, Tensor) {
        let n = pos.size()[0];
        let cos = self.cos.index_select(0, pos).view([n, 1, 1, -1]);
        let sin = self.sin.index_select(0, pos);
        let half = sin.size()[1] / 2;
        let sin = Tensor::cat(&[-sin.narrow(1, 0, half), sin.narrow(1, half, half)], -1);
        (cos, sin.view([n, 1, 1, -1]))
    }

    /// Rotates `x` of shape [n, heads, 1, head_dim] with a step's tables ([`Rope::tables_at`]).
    fn apply_at(x: &Tensor, (cos, sin): &(Tensor, Tensor)) -> Tensor {
        let half = x.size()[3] / 2;
        let swapped = Tensor::cat(&[x.narrow(3, half, half), x.narrow(3, 0, half)], -1);
        x * cos.to_kind(x.kind()) + swapped * sin.to_kind(x.kind())
    }
}

/// `l(x)` with the matrix product in `kind` (weights stay fp32 masters; bf16 is mixed precision).
fn linear(l: &nn::Linear, x: &Tensor, kind: Kind) -> Tensor {
    if kind == Kind::Float && x.kind() == Kind::Float {
        l.forward(x)
    } else {
        x.to_kind(kind).matmul(&l.ws.to_kind(kind).tr())
    }
}

/// Several projections of the same input as one matrix product (Q|K|V, gate|up), their outputs
/// side by side (`[..., Σ outputs]`): the weights are concatenated (they stay separate parameters
/// under HF names, so checkpoints, optimizer state and export are unchanged); the consumers
/// (`qkv_rope`, `swiglu`) read the product as it is, with no split.
fn fused_product<const N: usize>(ls: [&nn::Linear; N], x: &Tensor, kind: Kind) -> Tensor {
    let w = Tensor::cat(&ls.map(|l| &l.ws), 0);
    if kind == Kind::Float && x.kind() == Kind::Float {
        x.linear::<Tensor>(&w, None)
    } else {
        x.to_kind(kind).matmul(&w.to_kind(kind).tr())
    }
}

/// Whether a forward over `tokens` positions fuses its projections: worth it when the product is
/// large; a one-token decode step would spend more on concatenating weights than it saves.
fn fuses(tokens: i64) -> bool {
    tokens >= 16
}

/// Most bytes of attention probabilities one layer's CPU attention keeps for backward.
const KEPT_PROBABILITIES_MAX: i64 = 128 << 20;

/// Whether the attention of `q` over `k` runs as starling-torch's `causal_attention`: when it will
/// be differentiated on the CPU in fp32/fp64 (about 2x ATen's flash attention there, forward and
/// backward, at the presets' head sizes) over keys of its own length, and the half of a
/// `[time, time]` matrix per head it keeps stays under [`KEPT_PROBABILITIES_MAX`]; elsewhere
/// (CUDA, inference, bf16, a KV cache) SDPA.
fn keeps_probabilities(q: &Tensor, k: &Tensor) -> bool {
    let (b, h, t, _) = q.size4().unwrap_or((0, 0, 0, 0));
    let kept = b * h * t * (t + 64) / 2 * q.kind().elt_size_in_bytes() as i64;
    q.device() == Device::Cpu
        && matches!(q.kind(), Kind::Float | Kind::Double)
        && q.requires_grad()
        && k.size().get(2) == Some(&t)
        && kept <= KEPT_PROBABILITIES_MAX
}

/// Where each row of a decode batch reads and writes its cache.
struct SlotsAt {
    /// Position of each row's new token [n].
    pos: Tensor,
    /// Slots 0..n [n].
    rows: Tensor,
    /// Positions attended: 0..len.
    len: i64,
    /// [n, 1, 1, len], true where a row may attend.
    mask: Tensor,
    /// Rotary cos and sign-folded sin of each row's position (shared by every layer).
    rope: (Tensor, Tensor),
}

/// One layer's slot of a sequence's key/value cache (empty until the first chunk fills it).
type KvSlot<'a> = Option<&'a mut Option<(Tensor, Tensor)>>;

#[derive(Debug)]
struct Attention {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    kind: Kind,
}

/// Llama's projections have no bias.
const NO_BIAS: nn::LinearConfig = nn::LinearConfig {
    ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
    bs_init: None,
    bias: false,
};

impl Attention {
    fn new(p: nn::Path, c: &LlamaConfig) -> Self {
        let (d, hd) = (c.hidden_size as i64, c.head_dim() as i64);
        let kv = c.num_key_value_heads as i64 * hd;
        Self {
            q: nn::linear(&p / "q_proj", d, d, NO_BIAS),
            k: nn::linear(&p / "k_proj", d, kv, NO_BIAS),
            v: nn::linear(&p / "v_proj", d, kv, NO_BIAS),
            o: nn::linear(&p / "o_proj", d, d, NO_BIAS),
            heads: c.num_attention_heads as i64,
            kv_heads: c.num_key_value_heads as i64,
            head_dim: hd,
            kind: Kind::Float,
        }
    }

    fn forward(&self, x: &Tensor, rope: &Rope, cache: KvSlot) -> Tensor {
        let (b, t, _) = x.size3().unwrap_or((1, 1, 1));
        let split = |y: Tensor, h: i64| y.view([b, t, h, self.head_dim]).transpose(1, 2);
        let start = cache
            .as_ref()
            .and_then(|c| c.as_ref())
            .map(|(k, _)| k.size()[2])
            .unwrap_or(0);
        let kind = self.kind;
        let [q, mut k, mut v] = if fuses(b * t) {
            // One product, then split, heads and rotation in one pass whose backward writes the
            // product's gradient as one tensor.
            let y = fused_product([&self.q, &self.k, &self.v], x, kind);
            let (cos, sin) = (rope.cos.narrow(0, start, t), rope.sin.narrow(0, start, t));
            let hkd = (self.heads, self.kv_heads, self.head_dim);
            starling_torch::qkv_rope(&y, &cos, &sin, hkd.0, hkd.1, hkd.2)
                .unwrap_or_else(|e| panic!("attention inputs of {:?}: {e}", y.size()))
        } else {
            let [q, k, v] = [&self.q, &self.k, &self.v].map(|l| linear(l, x, kind));
            [
                rope.apply(&split(q, self.heads), start),
                rope.apply(&split(k, self.kv_heads), start),
                split(v, self.kv_heads),
            ]
        };
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        // Causal within this chunk; a single new token attends to every cached position.
        self.attend(&q, &k, &v, None, t > 1, [b, t])
    }
}

impl Attention {
    /// SDPA of `q` over `k`, `v` (grouped K/V heads shared by SDPA itself, `enable_gqa`, not
    /// copied per query head), then the output projection into `[rows, tokens, hidden]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
        [rows, tokens]: [i64; 2],
    ) -> Tensor {
        if mask.is_none() && causal && keeps_probabilities(q, k) {
            // Training on the CPU: starling-torch's attention, its output already [rows, tokens,
            // heads·head_dim].
            let y = starling_torch::causal_attention(q, k, v)
                .unwrap_or_else(|e| panic!("attention of {:?} over {:?}: {e}", q.size(), k.size()));
            return linear(&self.o, &y, self.kind);
        }
        let y = Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            mask,
            0.0,
            causal,
            None,
            self.kv_heads != self.heads,
        );
        let y = y
            .transpose(1, 2)
            .contiguous()
            .view([rows, tokens, self.heads * self.head_dim]);
        linear(&self.o, &y, self.kind)
    }

    /// One new token per row, attending to the row's slot (written in place).
    fn forward_slots(&self, x: &Tensor, at: &SlotsAt, kv: &mut (Tensor, Tensor)) -> Tensor {
        let n = x.size()[0];
        let split = |y: Tensor, h: i64| y.view([n, 1, h, self.head_dim]).transpose(1, 2);
        let kind = self.kind;
        let q = Rope::apply_at(&split(linear(&self.q, x, kind), self.heads), &at.rope);
        let k = Rope::apply_at(&split(linear(&self.k, x, kind), self.kv_heads), &at.rope);
        let v = split(linear(&self.v, x, kind), self.kv_heads);
        let (kc, vc) = kv;
        let idx = [Some(&at.rows), None, Some(&at.pos)];
        let _ = kc.index_put_(&idx, &k.squeeze_dim(2).to_kind(kc.kind()), false);
        let _ = vc.index_put_(&idx, &v.squeeze_dim(2).to_kind(vc.kind()), false);
        let k = kc.narrow(0, 0, n).narrow(2, 0, at.len).to_kind(q.kind());
        let v = vc.narrow(0, 0, n).narrow(2, 0, at.len).to_kind(q.kind());
        self.attend(&q, &k, &v, Some(&at.mask), false, [n, 1])
    }
}

#[derive(Debug)]
struct Mlp {
    gate: nn::Linear,
    up: nn::Linear,
    down: nn::Linear,
    kind: Kind,
}

impl Mlp {
    fn new(p: nn::Path, c: &LlamaConfig) -> Self {
        let (d, ff) = (c.hidden_size as i64, c.intermediate_size as i64);
        Self {
            gate: nn::linear(&p / "gate_proj", d, ff, NO_BIAS),
            up: nn::linear(&p / "up_proj", d, ff, NO_BIAS),
            down: nn::linear(&p / "down_proj", ff, d, NO_BIAS),
            kind: Kind::Float,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let k = self.kind;
        let tokens = x.numel() as i64 / x.size().last().copied().unwrap_or(1).max(1);
        let h = if fuses(tokens) {
            // SwiGLU on the gate|up product as it is: its backward writes one gradient.
            let y = fused_product([&self.gate, &self.up], x, k);
            starling_torch::swiglu(&y).unwrap_or_else(|e| panic!("MLP of {:?}: {e}", y.size()))
        } else {
            linear(&self.gate, x, k).silu() * linear(&self.up, x, k)
        };
        linear(&self.down, &h, k)
    }
}

#[derive(Debug)]
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, c: &LlamaConfig) -> Self {
        let d = c.hidden_size as i64;
        Self {
            input_norm: RmsNorm::new(&p / "input_layernorm", d, c.rms_norm_eps),
            attn: Attention::new(&p / "self_attn", c),
            post_norm: RmsNorm::new(&p / "post_attention_layernorm", d, c.rms_norm_eps),
            mlp: Mlp::new(&p / "mlp", c),
        }
    }

    fn forward(&self, x: &Tensor, rope: &Rope, cache: KvSlot) -> Tensor {
        let h = x + self.attn.forward(&self.input_norm.forward(x), rope, cache);
        &h + self.mlp.forward(&self.post_norm.forward(&h))
    }

    /// A block of handles to this block's weights (same storage, same autograd leaves), the
    /// weights `sub` names (relative HF names, [`BLOCK_WEIGHTS`]) replaced by its tensors.
    fn substituted(&self, sub: &dyn Fn(&str) -> Option<Tensor>) -> Self {
        let pick = |name: &str, own: &Tensor| sub(name).unwrap_or_else(|| own.shallow_clone());
        let norm = |name: &str, n: &RmsNorm| RmsNorm {
            weight: pick(name, &n.weight),
            eps: n.eps,
        };
        let lin = |name: &str, l: &nn::Linear| nn::Linear {
            ws: pick(name, &l.ws),
            bs: l.bs.as_ref().map(Tensor::shallow_clone),
        };
        let (a, m) = (&self.attn, &self.mlp);
        Self {
            input_norm: norm(BLOCK_WEIGHTS[0], &self.input_norm),
            attn: Attention {
                q: lin(BLOCK_WEIGHTS[1], &a.q),
                k: lin(BLOCK_WEIGHTS[2], &a.k),
                v: lin(BLOCK_WEIGHTS[3], &a.v),
                o: lin(BLOCK_WEIGHTS[4], &a.o),
                heads: a.heads,
                kv_heads: a.kv_heads,
                head_dim: a.head_dim,
                kind: a.kind,
            },
            post_norm: norm(BLOCK_WEIGHTS[5], &self.post_norm),
            mlp: Mlp {
                gate: lin(BLOCK_WEIGHTS[6], &m.gate),
                up: lin(BLOCK_WEIGHTS[7], &m.up),
                down: lin(BLOCK_WEIGHTS[8], &m.down),
                kind: m.kind,
            },
        }
    }

    fn forward_slots(&self, x: &Tensor, at: &SlotsAt, kv: &mut (Tensor, Tensor)) -> Tensor {
        let h = x + self.attn.forward_slots(&self.input_norm.forward(x), at, kv);
        &h + self.mlp.forward(&self.post_norm.forward(&h))
    }
}

/// One block's training forward, owning handles to its weights (so an autograd graph may keep it
/// past the forward that made it), runnable with stand-ins for some of them.
#[derive(Debug)]
pub struct BlockTemplate {
    /// The block's index.
    pub layer: usize,
    /// The batch's [batch, time].
    pub shape: [i64; 2],
    block: Block,
    rope: Rope,
}

impl BlockTemplate {
    /// The block's output for `x` with its own weights.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.block.forward(x, &self.rope, None)
    }

    /// The block's output for `x`, the weights `sub` names ([`BLOCK_WEIGHTS`]) replaced by its
    /// tensors (FSDP's gathered parameters).
    pub fn forward_with(&self, x: &Tensor, sub: &dyn Fn(&str) -> Option<Tensor>) -> Tensor {
        self.block.substituted(sub).forward(x, &self.rope, None)
    }

    /// The block's output on one rank of a tensor-parallel group (Megatron-LM with sequence
    /// parallelism): `x` is this rank's share of the tokens [tokens / n, hidden] of a batch of
    /// `shape` [batch, time]; `sub` gives this rank's slices — Q, K, V, gate and up by rows (its
    /// 1/n of the heads and of the MLP columns), O and down by columns — and the replicated
    /// norms, which run on the share (their gradient summed over the group). Each half gathers
    /// the normed tokens before its projections and reduce-scatters its partial output.
    pub fn forward_split(
        &self,
        x: &Tensor,
        sub: &dyn Fn(&str) -> Option<Tensor>,
        tp: &dyn TensorParallel,
    ) -> Tensor {
        let mut b = self.block.substituted(sub);
        let n = tp.ranks() as i64;
        b.attn.heads /= n;
        b.attn.kv_heads /= n;
        for norm in [&mut b.input_norm, &mut b.post_norm] {
            norm.weight = tp.shared(&norm.weight);
        }
        let [batch, time] = self.shape;
        // Gathered in the matrix products' precision (bf16 moves half the bytes of fp32).
        let kind = b.attn.kind;
        let whole = |t: &Tensor| {
            let t = tp.gather_tokens(&t.to_kind(kind));
            let d = t.size()[1];
            t.view([batch, time, d])
        };
        let share = |t: Tensor| {
            let d = t.size()[2];
            tp.scatter_tokens(&t.view([batch * time, d]))
        };
        let a = b
            .attn
            .forward(&whole(&b.input_norm.forward(x)), &self.rope, None);
        let h = x + share(a);
        let m = b.mlp.forward(&whole(&b.post_norm.forward(&h)));
        &h + share(m)
    }
}

/// The weights outside the blocks for one forward.
struct Outer {
    embed: Tensor,
    norm: RmsNorm,
    head: Option<Tensor>,
}

impl Outer {
    /// The LM head's weight [vocab, hidden]: its own, or the embedding when they are tied.
    fn head_weight(&self) -> &Tensor {
        self.head.as_ref().unwrap_or(&self.embed)
    }
}

/// Logits of hidden states `h` [.., hidden] under the head weight `w` [vocab, hidden], the product
/// run in `kind`: the one place the LM head's product is written.
pub(crate) fn head_logits(h: &Tensor, w: &Tensor, kind: Kind) -> Tensor {
    h.to_kind(kind).matmul(&w.to_kind(kind).tr())
}

/// A Llama causal language model whose variables live in a `VarStore` under HF names.
#[derive(Debug)]
pub struct Llama {
    /// The shape.
    pub config: LlamaConfig,
    embed: nn::Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<nn::Linear>,
    rope: Rope,
    kind: Kind,
    runner: Option<Box<dyn Runner>>,
}

impl Llama {
    /// Creates the model's variables under `root` (initialised as HF does: normal(0, 0.02)).
    pub fn new(root: &nn::Path, config: &LlamaConfig) -> Self {
        let c = config;
        let m = root / "model";
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let embed = nn::embedding(
            &m / "embed_tokens",
            c.vocab_size as i64,
            c.hidden_size as i64,
            nn::EmbeddingConfig {
                ws_init: init,
                ..Default::default()
            },
        );
        let blocks = (0..c.num_hidden_layers)
            .map(|i| Block::new(&m / "layers" / i, c))
            .collect();
        let norm = RmsNorm::new(&m / "norm", c.hidden_size as i64, c.rms_norm_eps);
        let lm_head = (!c.tie_word_embeddings).then(|| {
            nn::linear(
                root / "lm_head",
                c.hidden_size as i64,
                c.vocab_size as i64,
                nn::LinearConfig {
                    bias: false,
                    ws_init: init,
                    ..Default::default()
                },
            )
        });
        Self {
            config: config.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            rope: Rope::new(c, root.device()),
            kind: Kind::Float,
            runner: None,
        }
    }

    /// Runs every forward through `runner` (training: recomputation, FSDP); `None` runs it
    /// directly. Generation with a KV cache never goes through it.
    pub fn set_runner(&mut self, runner: Option<Box<dyn Runner>>) {
        self.runner = runner;
    }

    /// Runs matrix products in `kind` (`Kind::BFloat16` for mixed precision on GPUs); weights,
    /// norms, the residual stream and the loss stay fp32.
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.kind = kind;
        for b in &mut self.blocks {
            b.attn.kind = kind;
            b.mlp.kind = kind;
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> tch::Device {
        self.embed.ws.device()
    }

    /// Logits of final hidden states under the model's own head (the decode paths).
    fn head(&self, h: &Tensor) -> Tensor {
        let w = self.lm_head.as_ref().map_or(&self.embed.ws, |l| &l.ws);
        head_logits(h, w, self.kind)
    }

    /// The weights outside the blocks: the runner's stand-ins, else the model's own.
    fn outer(&self) -> Outer {
        let mut sub = self
            .runner
            .as_ref()
            .and_then(|r| r.outer_weights())
            .unwrap_or_default();
        let mut pick =
            |name: &str, own: &Tensor| sub.remove(name).unwrap_or_else(|| own.shallow_clone());
        Outer {
            embed: pick("model.embed_tokens.weight", &self.embed.ws),
            norm: RmsNorm {
                weight: pick("model.norm.weight", &self.norm.weight),
                eps: self.norm.eps,
            },
            head: self.lm_head.as_ref().map(|l| pick("lm_head.weight", &l.ws)),
        }
    }

    fn tensor_parallel(&self) -> Option<&dyn TensorParallel> {
        self.runner.as_ref().and_then(|r| r.tensor_parallel())
    }

    /// Final hidden states: [batch, time, hidden], or under tensor parallelism this rank's share
    /// of the tokens [batch · time / n, hidden].
    fn hidden_with(&self, ids: &Tensor, outer: &Outer) -> Tensor {
        let (b, t) = ids.size2().unwrap_or((1, ids.numel() as i64));
        let shape = [b, t];
        let tp = self.tensor_parallel();
        let mut x = match tp {
            Some(tp) => parallel::embedding(&outer.embed, ids, tp),
            None => Tensor::embedding(&outer.embed, ids, -1, false, false),
        };
        for (layer, b) in self.blocks.iter().enumerate() {
            x = match &self.runner {
                Some(r) => r.run(
                    &x,
                    BlockTemplate {
                        layer,
                        shape,
                        block: b.substituted(&|_| None),
                        rope: self.rope.handle(),
                    },
                ),
                None => b.forward(&x, &self.rope, None),
            };
        }
        match tp {
            Some(tp) => RmsNorm {
                weight: tp.shared(&outer.norm.weight),
                eps: outer.norm.eps,
            }
            .forward(&x),
            None => outer.norm.forward(&x),
        }
    }

    /// Final hidden states [batch, time, hidden] of token ids [batch, time].
    pub fn hidden(&self, ids: &Tensor) -> Tensor {
        let h = self.hidden_with(ids, &self.outer());
        match self.tensor_parallel() {
            Some(tp) => tp
                .gather_tokens(&h)
                .view([ids.size()[0], ids.size()[1], -1]),
            None => h,
        }
    }

    /// Logits [batch, time, vocab] of token ids [batch, time].
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        let outer = self.outer();
        let h = self.hidden_with(ids, &outer);
        let (k, w) = (self.kind, outer.head_weight());
        match self.tensor_parallel() {
            Some(tp) => {
                // Each rank's slice of the vocabulary for every token, gathered by vocabulary.
                let part = parallel::vocab_slice(&h, w, k, tp);
                // Without the padding rows a vocabulary the group does not divide gets.
                let vocab = self.config.vocab_size as i64;
                tp.gather_tokens(&part.tr().contiguous())
                    .narrow(0, 0, vocab)
                    .tr()
                    .reshape([ids.size()[0], ids.size()[1], -1])
            }
            None => head_logits(&h, w, k),
        }
    }

    /// Logits of new tokens given (and extending) a KV cache.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        if cache.layers.len() != self.blocks.len() {
            cache.layers = (0..self.blocks.len()).map(|_| None).collect();
        }
        let mut x = self.embed.forward(ids);
        for (b, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            x = b.forward(&x, &self.rope, Some(slot));
        }
        self.head(&self.norm.forward(&x))
    }

    /// An empty cache of `slots` sequences of up to the context length each.
    pub fn slot_cache(&self, slots: usize) -> SlotCache {
        let c = &self.config;
        let shape = [
            slots as i64,
            c.num_key_value_heads as i64,
            c.max_position_embeddings as i64,
            c.head_dim() as i64,
        ];
        let opts = (self.kind, self.device());
        SlotCache {
            layers: (0..self.blocks.len())
                .map(|_| (Tensor::zeros(shape, opts), Tensor::zeros(shape, opts)))
                .collect(),
        }
    }

    /// Reads a prompt into `slot` (replacing what it held) and returns the logits [vocab] of its
    /// last position. The prompt must be shorter than the context.
    pub fn prefill(&self, ids: &[i64], slot: usize, cache: &mut SlotCache) -> Tensor {
        self.prefill_batch(&[(ids, slot)], cache).remove(0)
    }

    /// Reads several prompts in one forward pass, each into its slot (replacing what it held),
    /// and returns each one's last-position logits [vocab]. Prompts are right-padded to the
    /// longest: under the causal mask no real position sees a pad, and only real positions are
    /// copied into the slots. Each prompt must be non-empty and shorter than the context.
    pub fn prefill_batch(&self, prompts: &[(&[i64], usize)], cache: &mut SlotCache) -> Vec<Tensor> {
        let longest = prompts.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        if longest == 0 {
            // Nothing to read: an empty row per prompt (callers see no vocabulary-sized logits).
            let empty = || Tensor::zeros([0], (Kind::Float, self.device()));
            return prompts.iter().map(|_| empty()).collect();
        }
        let mut flat = Vec::with_capacity(prompts.len() * longest);
        for (p, _) in prompts {
            flat.extend_from_slice(p);
            flat.extend(std::iter::repeat_n(0i64, longest - p.len()));
        }
        let mut kv = KvCache::default();
        let input = Tensor::from_slice(&flat)
            .view([prompts.len() as i64, longest as i64])
            .to_device(self.device());
        let logits = self.forward_cached(&input, &mut kv);
        for ((k, v), layer) in cache.layers.iter_mut().zip(&kv.layers) {
            if let Some((pk, pv)) = layer {
                for (row, (p, slot)) in prompts.iter().enumerate() {
                    let (row, t) = (row as i64, p.len() as i64);
                    k.get(*slot as i64)
                        .narrow(1, 0, t)
                        .copy_(&pk.get(row).narrow(1, 0, t));
                    v.get(*slot as i64)
                        .narrow(1, 0, t)
                        .copy_(&pv.get(row).narrow(1, 0, t));
                }
            }
        }
        prompts
            .iter()
            .enumerate()
            .map(|(row, (p, _))| logits.get(row as i64).get(p.len().max(1) as i64 - 1))
            .collect()
    }

    /// One decoding step of a batch: row `i` is slot `i`, its new token `tokens[i]` at position
    /// `positions[i]` (its prompt and earlier tokens fill the positions before). Returns logits [n, vocab].
    pub fn decode(&self, tokens: &[i64], positions: &[i64], cache: &mut SlotCache) -> Tensor {
        let n = tokens.len() as i64;
        let device = self.device();
        let mut len = positions.iter().max().map(|&p| p + 1).unwrap_or(1);
        if device.is_cuda() {
            // On CUDA attend over a length rounded up to a multiple of 64 (masked beyond each row's
            // position): shapes repeat from step to step, so attention plans made per shape are
            // reused (5x tokens/s for gpt2-124m on an H100).
            let ctx = self.config.max_position_embeddings as i64;
            len = ((len + 63) / 64 * 64).min(ctx.max(len));
        }
        let pos = Tensor::from_slice(positions).to_device(device);
        let mask = Tensor::arange(len, (Kind::Int64, device))
            .view([1, len])
            .le_tensor(&pos.view([n, 1]))
            .view([n, 1, 1, len]);
        let at = SlotsAt {
            rows: Tensor::arange(n, (Kind::Int64, device)),
            rope: self.rope.tables_at(&pos),
            pos,
            len,
            mask,
        };
        let mut x = self
            .embed
            .forward(&Tensor::from_slice(tokens).to_device(device).view([n, 1]));
        for (b, kv) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            x = b.forward_slots(&x, &at, kv);
        }
        self.head(&self.norm.forward(&x)).view([n, -1])
    }

    /// Mean cross-entropy of next-token prediction: logits of `ids` against `targets` [batch, time]
    /// (-100: ignored), a 0-d fp32 tensor. Panics when `targets` does not match `ids`' shape.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Tensor {
        if let Some(tp) = self.tensor_parallel() {
            // Each rank scores its slice of the vocabulary; the loss is summed from the slices.
            let outer = self.outer();
            let h = self.hidden_with(ids, &outer);
            let part = parallel::vocab_slice(&h, outer.head_weight(), self.kind, tp);
            let part = part.to_kind(Kind::Float);
            let vocab = self.config.vocab_size as i64;
            return parallel::cross_entropy(&part, &targets.reshape([-1]), tp, vocab);
        }
        // In the logits' own kind (fp32 arithmetic inside): no fp32 copy of bf16 logits is kept,
        // and no log-probabilities (starling-torch's fused cross-entropy). The logits are made
        // [rows, vocab] by the product itself (no view of them alive) and handed over, so their
        // gradient is written over them (per row on the CPU, per chunk of rows on a GPU).
        let outer = self.outer();
        let h = self.hidden_with(ids, &outer);
        let d = self.config.hidden_size as i64;
        let logits = head_logits(&h.reshape([-1, d]), outer.head_weight(), self.kind);
        let size = logits.size();
        starling_torch::cross_entropy_consuming(logits, &targets.reshape([-1]))
            .unwrap_or_else(|e| panic!("loss of logits {size:?}: {e}"))
    }
}
