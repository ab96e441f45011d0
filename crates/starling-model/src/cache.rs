//! The key/value caches generation and serving keep between calls of the model: one sequence's
//! ([`KvCache`]) and a batch of slots, each at its own length ([`SlotCache`]).

use tch::Tensor;

/// Keys and values of earlier positions, per layer, for generation.
#[derive(Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Positions already cached.
    pub fn len(&self) -> i64 {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.size()[2])
            .unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keys and values of up to `slots` sequences, each at its own length, for continuous batching:
/// sequence `i` of a [`Llama::decode`] batch lives in slot `i`.
#[derive(Debug)]
pub struct SlotCache {
    /// Per layer, keys and values [slots, kv_heads, context, head_dim].
    pub(crate) layers: Vec<(Tensor, Tensor)>,
}

impl SlotCache {
    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.layers
            .first()
            .map(|(k, _)| k.size()[0] as usize)
            .unwrap_or(0)
    }

    /// Copies slot `from` into slot `to` (keeps a batch's sequences in the first slots).
    pub fn move_slot(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        for (k, v) in &mut self.layers {
            let src = k.get(from as i64);
            k.get(to as i64).copy_(&src);
            let src = v.get(from as i64);
            v.get(to as i64).copy_(&src);
        }
    }
}
