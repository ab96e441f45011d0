//! Impression ids: the facts of one decided slot, signed (HMAC-SHA256) so that an event can be
//! charged from them without trusting the client and without keeping every decision in memory.

use crate::error::{Error, Result};
use crate::ftrl::AdFeatures;
use crate::types::{Micros, Placement};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a decision promised for one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpressionFacts {
    /// Random id of this slot's decision (unique per impression).
    pub nonce: String,
    /// Advertiser.
    pub advertiser: String,
    /// Campaign charged.
    pub campaign: String,
    /// Ad group.
    pub group: String,
    /// Creative.
    pub creative: String,
    /// Viewer.
    pub user: String,
    /// Placement.
    pub placement: Placement,
    /// Slot.
    pub position: usize,
    /// Decision time.
    pub ts_ms: i64,
    /// Price per click, or per thousand impressions when `per_impression`.
    pub price_micros: Micros,
    /// True when impressions are charged (CPM).
    pub per_impression: bool,
    /// What the pCTR model saw (it learns from the events).
    pub features: AdFeatures,
}

impl ImpressionFacts {
    /// What the impression costs when counted.
    pub fn impression_cost(&self) -> Micros {
        if self.per_impression {
            // Price per thousand, rounded to the nearest micro.
            (self.price_micros + 500) / 1000
        } else {
            0
        }
    }

    /// What a click costs when counted.
    pub fn click_cost(&self) -> Micros {
        if self.per_impression {
            0
        } else {
            self.price_micros
        }
    }
}

/// Signs and verifies impression ids.
#[derive(Clone)]
pub struct ImpressionSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for ImpressionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImpressionSigner(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ImpressionSigner {
    /// A signer with this secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        }
    }

    /// The impression id of `facts`: `base64url(json).base64url(hmac)`.
    pub fn sign(&self, facts: &ImpressionFacts) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(facts).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The facts of an impression id this server signed; forged or altered ids are refused.
    pub fn verify(&self, id: &str) -> Result<ImpressionFacts> {
        let bad = || Error::Event("impression_id is not one this server issued".into());
        if id.len() > 8_192 {
            return Err(bad());
        }
        let (body, tag) = id.split_once('.').ok_or_else(bad)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).map_err(|_| bad())?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_ids_round_trip_and_tampering_is_refused() {
        let s = ImpressionSigner::new(b"secret");
        let f = ImpressionFacts {
            nonce: "n1".into(),
            advertiser: "adv_1".into(),
            campaign: "cmp_1".into(),
            group: "grp_1".into(),
            creative: "cre_1".into(),
            user: "u".into(),
            placement: Placement::Search,
            position: 0,
            ts_ms: 5,
            price_micros: 2_500_000,
            per_impression: true,
            features: AdFeatures {
                creative: "cre_1".into(),
                group: "grp_1".into(),
                advertiser: "adv_1".into(),
                placement: Placement::Search,
                position: 0,
                terms: vec!["x".into()],
                similarity: 0.2,
                keyword_match: true,
            },
        };
        let id = s.sign(&f);
        assert_eq!(s.verify(&id).unwrap(), f);
        assert_eq!(f.impression_cost(), 2_500);
        assert_eq!(f.click_cost(), 0);
        let mut forged = f.clone();
        forged.price_micros = 1;
        let (_, tag) = id.split_once('.').unwrap();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(s.verify(&format!("{body}.{tag}")).is_err());
        assert!(ImpressionSigner::new(b"other").verify(&id).is_err());
        assert!(s.verify("garbage").is_err());
    }
}
