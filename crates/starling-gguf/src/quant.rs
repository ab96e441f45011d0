//! Tensor storage types: f32, f16, bf16 and ggml's `Q8_0` blocks, encoded as llama.cpp reads them.

use crate::{Error, Result};
use half::{bf16, f16};

/// Elements per `Q8_0` block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per `Q8_0` block: an f16 scale and 32 signed bytes.
const Q8_0_BYTES: u64 = 2 + Q8_0_BLOCK as u64;

/// A ggml tensor type (ids as in `ggml.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit float.
    F32 = 0,
    /// IEEE half.
    F16 = 1,
    /// Blocks of 32 bytes with one f16 scale: x ≈ d · q.
    Q8_0 = 8,
    /// bfloat16.
    BF16 = 30,
}

impl GgmlType {
    /// The type with ggml id `id`, if starling writes it.
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            8 => Some(Self::Q8_0),
            30 => Some(Self::BF16),
            _ => None,
        }
    }

    /// Bytes that `elements` values of this type take (a multiple of the block for `Q8_0`).
    pub fn row_bytes(self, elements: u64) -> u64 {
        match self {
            Self::F32 => elements * 4,
            Self::F16 | Self::BF16 => elements * 2,
            Self::Q8_0 => elements / Q8_0_BLOCK as u64 * Q8_0_BYTES,
        }
    }

    /// Whether a tensor whose innermost dimension is `inner` can be stored as this type.
    pub fn fits(self, inner: u64) -> bool {
        self != Self::Q8_0 || inner.is_multiple_of(Q8_0_BLOCK as u64)
    }

    /// Encodes `x` (row-major, innermost dimension last) as this type.
    pub fn encode(self, x: &[f32]) -> Result<Vec<u8>> {
        Ok(match self {
            Self::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::F16 => x
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            Self::BF16 => x
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
            Self::Q8_0 => {
                if !x.len().is_multiple_of(Q8_0_BLOCK) {
                    return Err(Error::Format(format!(
                        "q8_0 needs a multiple of {Q8_0_BLOCK} values, got {}",
                        x.len()
                    )));
                }
                let mut out = Vec::with_capacity(x.len() / Q8_0_BLOCK * Q8_0_BYTES as usize);
                for block in x.chunks_exact(Q8_0_BLOCK) {
                    // ggml's quantize_row_q8_0_ref: d = amax / 127, q = round(x / d).
                    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                    out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
                }
                out
            }
        })
    }

    /// Decodes bytes of this type back to f32 (the inverse of [`GgmlType::encode`], lossy for
    /// the narrow types).
    pub fn decode(self, b: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Self::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Self::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Self::Q8_0 => b
                .chunks_exact(Q8_0_BYTES as usize)
                .flat_map(|c| {
                    let d = f16::from_le_bytes([c[0], c[1]]).to_f32();
                    c[2..].iter().map(move |&q| d * f32::from(q as i8))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_within_their_precision() {
        let x: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        for (ty, tol) in [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, 2e-3),
            (GgmlType::BF16, 2e-2),
            (GgmlType::Q8_0, 3.0 / 127.0),
        ] {
            let b = ty.encode(&x).expect("encode");
            assert_eq!(b.len() as u64, ty.row_bytes(64), "{ty:?}");
            let y = ty.decode(&b);
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err <= tol, "{ty:?}: max error {err}");
        }
        // A block of zeros has scale 0 and decodes to zeros; odd lengths are refused for q8_0.
        let z = GgmlType::Q8_0.encode(&[0.0; 32]).expect("zeros");
        assert!(GgmlType::Q8_0.decode(&z).iter().all(|v| *v == 0.0));
        assert!(GgmlType::Q8_0.encode(&[1.0; 33]).is_err());
        assert!(!GgmlType::Q8_0.fits(48) && GgmlType::Q8_0.fits(64) && GgmlType::F16.fits(3));
        // The largest magnitude of a block maps to ±127 exactly.
        let b = GgmlType::Q8_0.encode(&x[..32]).expect("encode");
        assert!(b[2..].iter().any(|&q| q as i8 == 127 || q as i8 == -127));
    }
}
