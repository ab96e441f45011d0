//! Classification metrics over predicted and gold class indices.

/// F1 of class `c` (0 when it is never predicted correctly).
pub fn f1_of(pred: &[usize], gold: &[usize], c: usize) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0f64, 0f64, 0f64);
    for (p, g) in pred.iter().zip(gold) {
        match (*p == c, *g == c) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            (false, false) => {}
        }
    }
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

/// Recall of class `c` (0 when it has no gold examples).
pub fn recall_of(pred: &[usize], gold: &[usize], c: usize) -> f64 {
    let support = gold.iter().filter(|g| **g == c).count();
    if support == 0 {
        return 0.0;
    }
    let tp = pred
        .iter()
        .zip(gold)
        .filter(|(p, g)| **p == c && **g == c)
        .count();
    tp as f64 / support as f64
}

/// Mean F1 over `classes` classes.
pub fn macro_f1(pred: &[usize], gold: &[usize], classes: usize) -> f64 {
    (0..classes).map(|c| f1_of(pred, gold, c)).sum::<f64>() / classes.max(1) as f64
}

/// Mean recall over `classes` classes.
pub fn macro_recall(pred: &[usize], gold: &[usize], classes: usize) -> f64 {
    (0..classes).map(|c| recall_of(pred, gold, c)).sum::<f64>() / classes.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_hand_computed_values() {
        let gold = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 0, 2];
        // class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 2, fp 1, fn 0 → 0.8; class 2: tp 1, fn 1 → 2/3.
        assert!((f1_of(&pred, &gold, 0) - 0.5).abs() < 1e-12);
        assert!((f1_of(&pred, &gold, 1) - 0.8).abs() < 1e-12);
        assert!((f1_of(&pred, &gold, 2) - 2.0 / 3.0).abs() < 1e-12);
        assert!((macro_f1(&pred, &gold, 3) - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // recalls 0.5, 1.0, 0.5.
        assert!((macro_recall(&pred, &gold, 3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1_of(&pred, &gold, 5), 0.0);
        assert_eq!(recall_of(&pred, &gold, 5), 0.0);
    }
}
