//! The `top` order: BM25 × engagement × recency, re-ranked over the best BM25 candidates.

use tantivy::DateTime;

/// `top` ranking's score of a segment's documents from their BM25 score and fast fields.
pub(crate) fn top_scorer(
    seg: &tantivy::SegmentReader,
    now: Option<i64>,
) -> impl Fn(tantivy::DocId, f32) -> f64 {
    let ff = seg.fast_fields();
    let col = |name: &str| ff.u64(name).ok().map(|c| c.first_or_default_col(0));
    let (likes, reposts, replies, quotes) =
        (col("likes"), col("reposts"), col("replies"), col("quotes"));
    let created = ff
        .date("created_at")
        .ok()
        .map(|c| c.first_or_default_col(DateTime::from_timestamp_secs(0)));
    move |doc: tantivy::DocId, bm25: tantivy::Score| {
        let engagement = likes.as_ref().map_or(0, |c| c.get_val(doc))
            + 2 * reposts.as_ref().map_or(0, |c| c.get_val(doc))
            + 2 * quotes.as_ref().map_or(0, |c| c.get_val(doc))
            + replies.as_ref().map_or(0, |c| c.get_val(doc));
        let age_s = match (&created, now) {
            (Some(c), Some(now)) => (now - c.get_val(doc).into_timestamp_secs()).max(0) as f64,
            _ => 0.0,
        };
        top_score(bm25 as f64, engagement, age_s)
    }
}

/// How many of BM25's best a `top` query with words re-ranks by engagement and recency.
pub const TOP_RERANK_DEPTH: usize = 1000;
/// Windows (seconds back from the newest post) that `latest` tries before the whole index.
pub const LATEST_WINDOWS_S: [i64; 2] = [86_400, 16 * 86_400];

/// Half-life of the recency decay of `top` ranking: 7 days.
pub const RECENCY_HALF_LIFE_S: f64 = 7.0 * 86_400.0;

/// `top` ranking: `bm25 × (1 + 0.2·ln(1 + engagement)) × 2^(−age / 7 days)`, where engagement is
/// likes + 2·reposts + 2·quotes + replies and age is counted from the index's newest post (so an
/// archive ranks as it would have on its last day).
pub fn top_score(bm25: f64, engagement: u64, age_s: f64) -> f64 {
    bm25 * (1.0 + 0.2 * (1.0 + engagement as f64).ln()) * (-age_s / RECENCY_HALF_LIFE_S).exp2()
}
