//! Cluster planner: what a GPU fleet buys — model size, tokens, days, dollars, energy, memory per
//! GPU, parallel layout, interruptions and checkpoint interval — checked against published runs.
//!
//! ```
//! use starling_plan::{gpu, plan, ModelSpec, PlanInput, Tokens};
//! let a100 = *gpu::find("a100-80gb").unwrap();
//! let p = plan(&PlanInput::new(ModelSpec::dense(7e9, 2048), Tokens::Chinchilla, a100, 512)).unwrap();
//! assert_eq!(p.tokens, 140e9);
//! assert!(p.wall_days > 0.0 && p.memory.layout.is_some());
//! ```

pub mod error;
pub mod failures;
pub use starling_arch::gpu;
pub mod memory;
pub mod model;
pub mod network;
mod plan;
pub mod report;
pub mod validate;

pub use error::{Error, Result};
pub use model::ModelSpec;
pub use plan::{
    compute_optimal, plan, starling_largest, DataSupply, MemoryReport, Plan, PlanInput, PostVolume,
    Precision, Tokens,
};
