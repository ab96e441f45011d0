//! Budget pacing by throttling, and the target-CPC bidder.
//!
//! **Why throttling, not bid shading.** A throttle decides only *whether* a campaign enters an
//! auction; its bid, and so the second prices other advertisers pay, stay truthful. Shading would
//! move the bid, which in a GSP auction moves everybody's prices and fights the target-CPC
//! bidder that already steers the bid of its campaigns. Each campaign enters an auction with
//! probability `rate`, set by a PI controller:
//!
//! - feed-forward: the spend rate still affordable (`remaining budget / remaining day`) over the
//!   spend rate the campaign would reach unthrottled (estimated from the last intervals' spend at
//!   the rate then in force);
//! - feedback: `1 + kp·e + ki·∫e`, where `e` is how far spend lags the even curve
//!   (`budget × elapsed share of the day`), as a share of the budget.
//!
//! The throttle makes delivery even; it never guards the budget itself. That is the charging
//! transaction's job (`AdStore::record_event`), which holds even when pacing is wrong.

use crate::types::{Micros, DAY_MS};
use serde::Serialize;

/// Throttle state of one campaign for one UTC day.
#[derive(Debug, Clone, Serialize)]
pub struct Pacer {
    /// Probability of entering an auction.
    pub rate: f64,
    day: i64,
    last_ms: i64,
    last_spent: Micros,
    demand: Option<f64>,
    integral: f64,
}

/// Controller gains and limits.
#[derive(Debug, Clone, Copy)]
pub struct PacingConfig {
    /// Proportional gain on the lag behind the even curve (share of budget).
    pub kp: f64,
    /// Integral gain (per hour of accumulated lag).
    pub ki: f64,
    /// Least rate (a campaign keeps sampling the market).
    pub min_rate: f64,
    /// Shortest interval between updates.
    pub interval_ms: i64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            kp: 4.0,
            ki: 0.5,
            min_rate: 0.001,
            interval_ms: 60_000,
        }
    }
}

impl Pacer {
    /// A campaign starting its day at `now_ms` at full rate.
    pub fn new(now_ms: i64) -> Self {
        Self {
            rate: 1.0,
            day: now_ms.div_euclid(DAY_MS),
            last_ms: now_ms,
            last_spent: 0,
            demand: None,
            integral: 0.0,
        }
    }

    /// Updates the rate from the day's charged spend `spent` at `now_ms` (at most once per interval).
    pub fn update(&mut self, cfg: &PacingConfig, now_ms: i64, spent: Micros, budget: Micros) {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            *self = Pacer::new(now_ms);
            return;
        }
        let dt = now_ms - self.last_ms;
        if dt < cfg.interval_ms {
            return;
        }
        if budget <= 0 || spent >= budget {
            self.rate = 0.0;
            self.last_ms = now_ms;
            self.last_spent = spent;
            return;
        }
        // Unthrottled spend per ms, from what the rate in force let through.
        let observed =
            (spent - self.last_spent).max(0) as f64 / (dt as f64 * self.rate.max(cfg.min_rate));
        let demand = match self.demand {
            Some(d) => 0.7 * d + 0.3 * observed,
            None => observed,
        };
        self.demand = Some(demand);
        let day_start = day * DAY_MS;
        let elapsed = (now_ms - day_start) as f64 / DAY_MS as f64;
        let remaining_ms = ((day_start + DAY_MS) - now_ms).max(1) as f64;
        let affordable = (budget - spent) as f64 / remaining_ms;
        let lag = (budget as f64 * elapsed - spent as f64) / budget as f64;
        self.integral = (self.integral + lag * dt as f64 / 3_600_000.0).clamp(-1.0, 1.0);
        let feedback = (1.0 + cfg.kp * lag + cfg.ki * self.integral).max(0.0);
        let feed_forward = if demand > 0.0 {
            affordable / demand
        } else {
            1.0
        };
        self.rate = (feed_forward * feedback).clamp(cfg.min_rate, 1.0);
        self.last_ms = now_ms;
        self.last_spent = spent;
    }

    /// True when a uniform draw `u` in [0, 1) lets the campaign into this auction.
    pub fn admits(&self, u: f64) -> bool {
        u < self.rate
    }
}

/// The bid of a target-CPC ad group: the target times a multiplier steered so that the average
/// charged CPC stays near the target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetBidder {
    /// Current multiplier of the target.
    pub multiplier: f64,
    /// Smoothed charged CPC.
    pub average_cpc: Option<f64>,
}

impl Default for TargetBidder {
    fn default() -> Self {
        Self {
            multiplier: 1.5,
            average_cpc: None,
        }
    }
}

impl TargetBidder {
    /// Bounds of the multiplier.
    pub const RANGE: (f64, f64) = (0.5, 4.0);

    /// The bid to enter an auction with.
    pub fn bid(&self, target: Micros) -> Micros {
        (target as f64 * self.multiplier).round() as Micros
    }

    /// Learns a charged click price.
    pub fn charged(&mut self, target: Micros, cost: Micros) {
        let avg = match self.average_cpc {
            Some(a) => 0.9 * a + 0.1 * cost as f64,
            None => cost as f64,
        };
        self.average_cpc = Some(avg);
        if avg > 0.0 {
            let step = (target as f64 / avg).powf(0.1);
            self.multiplier = (self.multiplier * step).clamp(Self::RANGE.0, Self::RANGE.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_spreads_a_budget_over_the_day() {
        // Demand would spend the whole budget in ~2.4 hours; the paced campaign must spend about
        // evenly: half by noon, all by midnight, never more than the budget.
        let cfg = PacingConfig::default();
        let budget: Micros = 1_000_000_000;
        let demand_per_min = budget as f64 / 144.0;
        let mut p = Pacer::new(0);
        let mut spent: f64 = 0.0;
        let mut at_noon = 0.0;
        for minute in 0..1440 {
            let now = minute * 60_000;
            p.update(&cfg, now, spent as Micros, budget);
            spent = (spent + demand_per_min * p.rate).min(budget as f64);
            if minute == 719 {
                at_noon = spent;
            }
        }
        let noon = at_noon / budget as f64;
        assert!((0.4..0.6).contains(&noon), "share by noon {noon}");
        assert!(
            spent / budget as f64 > 0.9,
            "delivered {}",
            spent / budget as f64
        );
    }

    #[test]
    fn target_bidder_moves_toward_the_target() {
        let mut t = TargetBidder::default();
        for _ in 0..200 {
            t.charged(1_000_000, 2_000_000);
        }
        assert!(t.bid(1_000_000) < 1_000_000);
        for _ in 0..400 {
            t.charged(1_000_000, 400_000);
        }
        assert!(t.bid(1_000_000) > 1_000_000);
        assert!(t.multiplier <= TargetBidder::RANGE.1);
    }
}
