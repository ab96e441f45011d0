//! Multinomial logistic regression: softmax over classes, cross-entropy weighted so every class
//! counts as much as the others, L2 penalty, trained by Adam on mini-batches (or the full batch).

use crate::features::SparseRow;

/// How a model is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per step (`usize::MAX`: the full batch, one step per epoch).
    pub batch: usize,
    /// Adam's learning rate.
    pub lr: f32,
}

impl Schedule {
    /// Sparse rows of many features (TF-IDF): full-batch steps.
    pub const SPARSE: Schedule = Schedule {
        epochs: 150,
        batch: usize::MAX,
        lr: 0.05,
    };
    /// Dense rows (embeddings): mini-batches of 256.
    pub const DENSE: Schedule = Schedule {
        epochs: 20,
        batch: 256,
        lr: 0.01,
    };
}

/// A trained model: one weight row and bias per class.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    /// Classes.
    pub classes: usize,
    /// Features.
    pub dim: usize,
    /// `classes x dim`, row-major.
    pub w: Vec<f32>,
    /// One per class.
    pub b: Vec<f32>,
}

impl LogReg {
    /// Class logits of a row.
    pub fn logits(&self, row: &SparseRow) -> Vec<f32> {
        (0..self.classes)
            .map(|c| {
                let w = &self.w[c * self.dim..(c + 1) * self.dim];
                row.iter().map(|(i, v)| w[*i] * v).sum::<f32>() + self.b[c]
            })
            .collect()
    }

    /// Class probabilities of a row.
    pub fn probabilities(&self, row: &SparseRow) -> Vec<f32> {
        let mut z = self.logits(row);
        softmax(&mut z);
        z
    }

    /// The likeliest class.
    pub fn predict(&self, row: &SparseRow) -> usize {
        self.logits(row)
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(c, _)| c)
    }

    /// A two-class model as one sigmoid: weights and bias of `P(class 1) = σ(w·x + b)`.
    pub fn binary(&self) -> (Vec<f32>, f32) {
        if self.classes != 2 {
            return (vec![0.0; self.dim], 0.0);
        }
        let (w0, w1) = self.w.split_at(self.dim);
        (
            w1.iter().zip(w0).map(|(a, b)| a - b).collect(),
            self.b[1] - self.b[0],
        )
    }

    /// Trains on `rows` with labels `y` (each below `classes`), L2 strength `l2`.
    pub fn train(
        rows: &[SparseRow],
        y: &[usize],
        classes: usize,
        dim: usize,
        l2: f32,
        s: Schedule,
    ) -> Self {
        let classes = classes.max(2);
        let mut m = LogReg {
            classes,
            dim,
            w: vec![0.0; classes * dim],
            b: vec![0.0; classes],
        };
        let n = rows.len().min(y.len());
        if n == 0 {
            return m;
        }
        // Balanced: each class's examples weigh n / (classes x its count).
        let mut count = vec![0usize; classes];
        y.iter()
            .take(n)
            .for_each(|c| count[(*c).min(classes - 1)] += 1);
        let weight: Vec<f32> = count
            .iter()
            .map(|c| n as f32 / (classes as f32 * (*c).max(1) as f32))
            .collect();
        let (mut mw, mut vw) = (vec![0f32; m.w.len()], vec![0f32; m.w.len()]);
        let (mut mb, mut vb) = (vec![0f32; classes], vec![0f32; classes]);
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let batch = s.batch.clamp(1, n);
        let mut t = 0i32;
        let (mut gw, mut gb) = (vec![0f32; m.w.len()], vec![0f32; classes]);
        for _ in 0..s.epochs {
            if batch < n {
                // Fisher-Yates with a fixed xorshift: the same model every run.
                for i in (1..n).rev() {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    order.swap(i, (rng % (i as u64 + 1)) as usize);
                }
            }
            for chunk in order.chunks(batch) {
                gw.iter_mut().for_each(|g| *g = 0.0);
                gb.iter_mut().for_each(|g| *g = 0.0);
                for &k in chunk {
                    let (row, label) = (&rows[k], y[k].min(classes - 1));
                    let p = m.probabilities(row);
                    for (c, pc) in p.iter().enumerate() {
                        let g = (pc - f32::from(u8::from(c == label))) * weight[label];
                        if g == 0.0 {
                            continue;
                        }
                        let gwc = &mut gw[c * dim..(c + 1) * dim];
                        for (i, v) in row {
                            gwc[*i] += g * v;
                        }
                        gb[c] += g;
                    }
                }
                t += 1;
                let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                let inv = 1.0 / chunk.len() as f32;
                for i in 0..m.w.len() {
                    let g = gw[i] * inv + l2 * m.w[i];
                    mw[i] = b1 * mw[i] + (1.0 - b1) * g;
                    vw[i] = b2 * vw[i] + (1.0 - b2) * g * g;
                    m.w[i] -= s.lr * (mw[i] / c1) / ((vw[i] / c2).sqrt() + eps);
                }
                for c in 0..classes {
                    let g = gb[c] * inv;
                    mb[c] = b1 * mb[c] + (1.0 - b1) * g;
                    vb[c] = b2 * vb[c] + (1.0 - b2) * g * g;
                    m.b[c] -= s.lr * (mb[c] / c1) / ((vb[c] / c2).sqrt() + eps);
                }
            }
        }
        m
    }
}

fn softmax(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    z.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_three_separable_classes_with_either_schedule() {
        // Class = which of three features is on.
        let rows: Vec<SparseRow> = (0..60).map(|i| vec![(i % 3, 1.0), (3, 0.5)]).collect();
        let y: Vec<usize> = (0..60).map(|i| i % 3).collect();
        for s in [Schedule::SPARSE, Schedule::DENSE] {
            let m = LogReg::train(&rows, &y, 3, 4, 1e-4, s);
            let right = rows
                .iter()
                .zip(&y)
                .filter(|(r, c)| m.predict(r) == **c)
                .count();
            assert_eq!(right, 60, "{s:?}");
        }
    }

    #[test]
    fn two_classes_become_one_sigmoid() {
        let rows: Vec<SparseRow> = (0..40)
            .map(|i| vec![(0, if i % 2 == 0 { 1.0 } else { -1.0 })])
            .collect();
        let y: Vec<usize> = (0..40).map(|i| usize::from(i % 2 == 0)).collect();
        let m = LogReg::train(&rows, &y, 2, 1, 1e-3, Schedule::SPARSE);
        let (w, b) = m.binary();
        let p1 = m.probabilities(&rows[0])[1];
        let s = 1.0 / (1.0 + (-(w[0] * 1.0 + b)).exp());
        assert!((p1 - s).abs() < 1e-5);
        assert!(p1 > 0.9);
    }
}
