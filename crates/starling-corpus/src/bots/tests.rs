//! Tests of `bots`.

use super::*;

#[test]
fn builtin_model_matches_the_features() {
    BotModel::builtin().check().unwrap();
}

#[test]
fn kmv_is_exact_below_k_and_close_above() {
    let mut k = Kmv::new(256);
    for i in 0..100u64 {
        k.insert(i);
        k.insert(i);
    }
    assert_eq!(k.estimate(), 100.0);
    for i in 0..100_000u64 {
        k.insert(i);
    }
    let e = k.estimate();
    assert!((e - 100_000.0).abs() < 15_000.0, "{e}");
}

fn profile(times: &[i64]) -> AuthorProfile {
    let mut p = AuthorProfile::default();
    for &t in times {
        p.observe(&PostSignal::default(), Some(t * 1000));
    }
    p
}

#[test]
fn one_burst_is_a_person_repeated_bursts_are_a_bot() {
    let c = BotConfig::default();
    // 25 posts a day for 10 days, irregular, with one burst of 10 in 50 s on day 3.
    let mut t = Vec::new();
    let mut x = 7u64;
    for day in 0..10i64 {
        for _ in 0..25 {
            x = mix64(x);
            t.push(day * 86_400 + 28_800 + (x % 50_000) as i64);
        }
    }
    for i in 0..10 {
        t.push(3 * 86_400 + 40_000 + i * 5);
    }
    assert_eq!(profile(&t).timing_verdict(&c), None);
    for day in [5, 7] {
        for i in 0..10 {
            t.push(day * 86_400 + 10_000 + i * 5);
        }
    }
    assert_eq!(profile(&t).timing_verdict(&c), Some("repeated bursts"));
    // Arrival order does not matter.
    t.reverse();
    assert_eq!(profile(&t).timing_verdict(&c), Some("repeated bursts"));
}

#[test]
fn scheduled_posting_is_found() {
    let c = BotConfig::default();
    let t: Vec<i64> = (0..50).map(|i| i * 3600 + (i % 3)).collect();
    assert_eq!(profile(&t).timing_verdict(&c), Some("scheduled posting"));
}

#[test]
fn fit_separates_separable_authors() {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..200 {
        let mut f = vec![0.5; FEATURE_NAMES.len()];
        let bot = i % 2 == 0;
        f[7] = if bot { 0.2 } else { 0.95 } + (i % 7) as f64 * 0.01;
        x.push(AuthorFeatures(f));
        y.push(bot);
    }
    let m = BotModel::fit(&x, &y, 1, 1.0, "test");
    let acc = x
        .iter()
        .zip(&y)
        .filter(|(f, &b)| (m.score(f) >= 0.5) == b)
        .count();
    assert_eq!(acc, 200);
}
