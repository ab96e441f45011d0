//! The `Embedder` contract between the model and its consumers (search, ads, `/v1/embeddings`).
//!
//! A consumer holds a `&dyn Embedder` and never sees tensors: `starling-model` implements the
//! trait on libtorch, the binary wires the two together, and tests can implement it with anything.
//! Vectors are unit length, so a dot product is the cosine similarity.

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
#[error("embedding failed: {0}")]
pub struct EmbedError(pub String);

/// Turns post or query texts into unit-length vectors of one fixed dimension.
pub trait Embedder: Send + Sync {
    /// What produces the vectors (model weights and pooling): an index built by one embedder
    /// refuses to be queried with vectors from another.
    fn id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// One unit-length vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Dot product: the cosine similarity of unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Lexical vectors without a model: signed feature hashing of a text's lowercase words (weighted
/// `1 + ln tf`), unit length. Texts that share words are similar and nothing else is; it stands in
/// for the model where none is loaded (tests, `ads simulate` without `--model`) and is the
/// keyword-level baseline the model's vectors are compared with.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dim: usize,
    id: String,
}

impl HashingEmbedder {
    /// Vectors of `dim` dimensions.
    pub fn new(dim: usize) -> Self {
        Self {
            dim: dim.max(1),
            id: format!("hashing-words-{}", dim.max(1)),
        }
    }

    fn bucket(&self, word: &str) -> (usize, f32) {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in word.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
        ((h % self.dim as u64) as usize, sign)
    }
}

impl Embedder for HashingEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut tf: std::collections::HashMap<String, f32> =
                    std::collections::HashMap::new();
                for w in t
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    *tf.entry(w.to_lowercase()).or_default() += 1.0;
                }
                let mut v = vec![0.0; self.dim];
                for (w, c) in tf {
                    let (i, s) = self.bucket(&w);
                    v[i] += s * (1.0 + c.ln());
                }
                normalize(&mut v);
                v
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_vectors_have_unit_dot_with_themselves() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        assert!((v[0] - 0.6).abs() < 1e-6);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }

    #[test]
    fn hashing_vectors_are_unit_and_lexical() {
        let e = HashingEmbedder::new(64);
        let v = e
            .embed(&[
                "Marathon training run",
                "run training marathon",
                "cake recipe",
                "",
            ])
            .unwrap();
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert!((dot(&v[0], &v[1]) - 1.0).abs() < 1e-5);
        assert!(dot(&v[0], &v[2]).abs() < 0.6);
        assert_eq!(v[3], vec![0.0; 64]);
    }
}
