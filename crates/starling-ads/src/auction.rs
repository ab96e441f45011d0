//! Multi-slot generalized second-price auction, quality-adjusted, with a reserve.
//!
//! Bidders are ranked by their expected value per impression, `bid × pCTR × quality` for
//! click-charged bids and `CPM / 1000 × quality` for impression-charged ones. The winner of slot
//! `i` pays the least that keeps it above the next bidder (or the reserve when none is left),
//! plus one cent, and never more than its bid: the rule X publishes for its ads auction.

use crate::types::{Micros, CENT};

/// One bidder in an auction.
#[derive(Debug, Clone, PartialEq)]
pub struct Bid {
    /// Caller's index of the candidate.
    pub key: usize,
    /// Max CPC (per click) or CPM (per thousand impressions), in micros.
    pub bid_micros: Micros,
    /// True for CPM bids (charged per impression), false for per-click bids.
    pub per_impression: bool,
    /// Predicted click probability in this slot context.
    pub pctr: f64,
    /// Quality multiplier (1.0 neutral).
    pub quality: f64,
}

impl Bid {
    /// Expected value of one impression, in micros: what bidders are ranked by.
    pub fn score(&self) -> f64 {
        let value = if self.per_impression {
            self.bid_micros as f64 / 1000.0
        } else {
            self.bid_micros as f64 * self.pctr
        };
        value * self.quality
    }

    /// The price (per click, or per thousand impressions) that reaches `score` exactly.
    fn price_for(&self, score: f64) -> f64 {
        if self.per_impression {
            score * 1000.0 / self.quality
        } else {
            score / (self.pctr * self.quality)
        }
    }
}

/// A slot won.
#[derive(Debug, Clone, PartialEq)]
pub struct Win {
    /// The bidder's key.
    pub key: usize,
    /// Slot, 0-based (0 is the best).
    pub position: usize,
    /// Price per click (per-click bids) or per thousand impressions (CPM), in micros.
    pub price_micros: Micros,
    /// The ranking score.
    pub score: f64,
}

/// Runs the auction for `slots` slots; `reserve_cpm_micros` is the least value per thousand
/// impressions a winner must bring (0: none). Ties rank by key, so the outcome is deterministic.
pub fn run(bids: &[Bid], slots: usize, reserve_cpm_micros: Micros) -> Vec<Win> {
    let reserve = reserve_cpm_micros.max(0) as f64 / 1000.0;
    let mut ranked: Vec<&Bid> = bids
        .iter()
        .filter(|b| {
            b.bid_micros > 0
                && b.quality > 0.0
                && (b.per_impression || b.pctr > 0.0)
                && b.score().is_finite()
                && b.score() >= reserve
        })
        .collect();
    ranked.sort_by(|a, b| b.score().total_cmp(&a.score()).then(a.key.cmp(&b.key)));
    let n = ranked.len().min(slots);
    (0..n)
        .map(|i| {
            let b = ranked[i];
            let next = ranked
                .get(i + 1)
                .map_or(reserve, |n| n.score().max(reserve));
            // The least price that keeps the slot, rounded up to a whole micro, plus a cent.
            let keep = b.price_for(next).ceil() as Micros;
            Win {
                key: b.key,
                position: i,
                price_micros: (keep + CENT).min(b.bid_micros),
                score: b.score(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpc(key: usize, bid: Micros, pctr: f64) -> Bid {
        Bid {
            key,
            bid_micros: bid,
            per_impression: false,
            pctr,
            quality: 1.0,
        }
    }

    #[test]
    fn quality_adjusted_second_price_by_hand() {
        // A: $2.00 x 0.010 = 20,000 micros per impression; B: $1.00 x 0.030 = 30,000; C: $3.00 x 0.005 = 15,000.
        // Ranking B, A, C. B pays what reaches A's score: 20,000 / 0.03 = 666,666.67 -> 666,667 + 10,000 = 676,667.
        // A pays 15,000 / 0.01 = 1,500,000 + 10,000 = 1,510,000. C has no slot.
        let bids = [
            cpc(0, 2_000_000, 0.01),
            cpc(1, 1_000_000, 0.03),
            cpc(2, 3_000_000, 0.005),
        ];
        let w = run(&bids, 2, 0);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].key, w[0].position, w[0].price_micros),
            (1, 0, 676_667)
        );
        assert_eq!(
            (w[1].key, w[1].position, w[1].price_micros),
            (0, 1, 1_510_000)
        );
    }

    #[test]
    fn last_winner_pays_the_reserve_and_never_more_than_its_bid() {
        // Reserve CPM $5 -> 5,000 micros per impression. A alone: 5,000 / 0.02 = 250,000 + 10,000 = 260,000.
        let w = run(&[cpc(0, 1_000_000, 0.02)], 3, 5_000_000);
        assert_eq!(w[0].price_micros, 260_000);
        // B's score (10,000) is below A's by a hair less than a cent's worth: capped at the bid.
        // A: 500,000 x 0.0201 = 10,050; B: 10,000. A pays 10,000 / 0.0201 = 497,512.44 -> 497,513 + 10,000 -> capped 500,000.
        let w = run(&[cpc(0, 500_000, 0.0201), cpc(1, 1_000_000, 0.01)], 1, 0);
        assert_eq!((w[0].key, w[0].price_micros), (0, 500_000));
        // Below the reserve: no winner at all.
        assert!(run(&[cpc(0, 100_000, 0.01)], 1, 5_000_000).is_empty());
    }

    #[test]
    fn cpm_and_cpc_compete_on_expected_value() {
        // CPM $8 -> 8,000 per impression; CPC $0.50 x 0.02 = 10,000. CPC wins slot 0 and pays
        // 8,000 / 0.02 = 400,000 + 10,000 = 410,000 per click; CPM pays the reserve ($2 -> 2,000 per
        // impression) as a CPM: 2,000 x 1000 = 2,000,000 + 10,000 = 2,010,000 per thousand.
        let bids = [
            Bid {
                key: 7,
                bid_micros: 8_000_000,
                per_impression: true,
                pctr: 0.001,
                quality: 1.0,
            },
            cpc(3, 500_000, 0.02),
        ];
        let w = run(&bids, 2, 2_000_000);
        assert_eq!((w[0].key, w[0].price_micros), (3, 410_000));
        assert_eq!((w[1].key, w[1].price_micros), (7, 2_010_000));
    }

    #[test]
    fn quality_scales_rank_and_price() {
        // A: 1,000,000 x 0.01 x 2.0 = 20,000; B: 1,500,000 x 0.01 x 1.0 = 15,000. A wins despite the lower bid
        // and pays 15,000 / (0.01 x 2.0) = 750,000 + 10,000 = 760,000.
        let mut a = cpc(0, 1_000_000, 0.01);
        a.quality = 2.0;
        let w = run(&[a, cpc(1, 1_500_000, 0.01)], 1, 0);
        assert_eq!((w[0].key, w[0].price_micros), (0, 760_000));
    }

    #[test]
    fn ties_break_by_key_and_bad_bids_are_ignored() {
        let w = run(
            &[
                cpc(5, 1_000_000, 0.01),
                cpc(2, 1_000_000, 0.01),
                cpc(9, 0, 0.5),
                cpc(4, 1_000, f64::NAN),
            ],
            3,
            0,
        );
        assert_eq!(w.iter().map(|w| w.key).collect::<Vec<_>>(), vec![2, 5]);
        // Equal scores: the other's score exactly plus a cent is 1,010,000, capped at the bid.
        assert_eq!(w[0].price_micros, 1_000_000);
    }
}
