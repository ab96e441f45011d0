//! Ad serving on the platform's own model: which promoted post to show beside a search, a
//! timeline or a conversation, and what it costs.
//!
//! - [`store`]: advertisers, campaigns, ad groups, creatives, events and spend in SQLite
//!   (embedded, the default) or PostgreSQL, one code path through sqlx, with migrations.
//! - [`decide`]: [`AdServer`]: keyword and semantic candidates (through the `Embedder` trait),
//!   filters (schedule, targeting, budget, pacing, frequency, exclusions, brand safety), pCTR,
//!   auction; and events: idempotent, charged once, never past the budget.
//! - [`auction`]: quality-adjusted multi-slot GSP with a reserve, one cent above the price that
//!   keeps the slot. [`ftrl`]: FTRL-Proximal pCTR. [`pacing`]: throttle and target-CPC bidder.
//! - [`safety`]: brand-safety classifier on embeddings, with its TF-IDF baseline.
//! - `simulate` (feature `simulate`): a day of synthetic traffic against a hidden click model.
//!
//! Money is integer micros throughout.

pub mod auction;
pub mod decide;
pub mod error;
pub mod ftrl;
pub mod pacing;
pub mod safety;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod store;
pub mod token;
pub mod types;

pub use decide::{AdContext, AdServer, AdSlot, DecideConfig, DecideRequest, Decision, EventInput};
pub use error::{Error, Result};
pub use safety::BrandSafety;
pub use store::{AdStore, Backend, CampaignReport, EventKind, EventOutcome, InventoryItem, Scope};
pub use types::*;
