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
}
