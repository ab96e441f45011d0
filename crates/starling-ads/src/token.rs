//! Impression ids: the facts of one decided slot, sealed (XChaCha20-Poly1305 authenticated
//! encryption under a key derived from the server's secret) so that an event can be charged
//! from them without trusting the client and without keeping every decision in memory, while
//! whoever holds an id (publisher, browser) learns nothing from it: not the price, the viewer,
//! the context terms nor the similarity.

use crate::error::{Error, Result};
use crate::ftrl::AdFeatures;
use crate::types::{Micros, Placement};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Seals impression facts into opaque ids and opens them again.
#[derive(Clone)]
pub struct ImpressionSealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for ImpressionSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImpressionSealer(..)")
    }
}

/// Prefix of the current id format (so a future format can be told apart).
const ID_PREFIX: &str = "i1.";
const NONCE_BYTES: usize = 24;

impl ImpressionSealer {
    /// A sealer whose key is derived from this secret (any length).
    pub fn new(secret: &[u8]) -> Self {
        let key = Sha256::new()
            .chain_update(b"starling impression id key v1\0")
            .chain_update(secret)
            .finalize();
        Self {
            cipher: XChaCha20Poly1305::new(&key),
        }
    }

    /// The opaque impression id of `facts`: `i1.` then base64url(random nonce, sealed JSON).
    pub fn seal(&self, facts: &ImpressionFacts) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let plain = serde_json::to_vec(facts).unwrap_or_default();
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The facts of an impression id this server sealed; forged, altered or foreign ids are
    /// refused.
    pub fn open(&self, id: &str) -> Result<ImpressionFacts> {
        let bad = || Error::Event("impression_id is not one this server issued".into());
        if id.len() > 8_192 {
            return Err(bad());
        }
        let body = id.strip_prefix(ID_PREFIX).ok_or_else(bad)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        if bytes.len() < NONCE_BYTES {
            return Err(bad());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| bad())?;
        serde_json::from_slice(&plain).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_ids_round_trip_reveal_nothing_and_tampering_is_refused() {
        let s = ImpressionSealer::new(b"secret");
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
        let id = s.seal(&f);
        assert_eq!(s.open(&id).unwrap(), f);
        assert_eq!(f.impression_cost(), 2_500);
        assert_eq!(f.click_cost(), 0);
        // Nothing of the facts can be read from the id, in any decoding.
        let raw = URL_SAFE_NO_PAD.decode(&id[ID_PREFIX.len()..]).unwrap();
        let lossy = String::from_utf8_lossy(&raw).to_string();
        for secret in ["2500000", "adv_1", "cmp_1", "\"u\"", "similarity", "price"] {
            assert!(
                !id.contains(secret) && !lossy.contains(secret),
                "{secret} in {id}"
            );
        }
        // The same facts seal to a different id each time.
        assert_ne!(s.seal(&f), id);
        // Any flipped bit is refused, as are other keys, the old signed format and garbage.
        for i in 0..raw.len() {
            let mut bent = raw.clone();
            bent[i] ^= 0x10;
            let forged = format!("{ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bent));
            assert!(s.open(&forged).is_err(), "byte {i}");
        }
        let mut forged = f.clone();
        forged.price_micros = 1;
        let old = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap()),
            URL_SAFE_NO_PAD.encode([0u8; 32])
        );
        assert!(s.open(&old).is_err());
        assert!(ImpressionSealer::new(b"other").open(&id).is_err());
        assert!(s.open("garbage").is_err());
        assert!(s.open("i1.").is_err());
    }
}
