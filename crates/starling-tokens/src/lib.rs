//! The tokens stage: a corpus's kept posts in, a tokenizer and token shards out.
//!
//! - [`template`]: the document layout (posts and reply threads) shared with chat serving.
//! - [`tokenizer`]: byte-level BPE trained with HF `tokenizers`; `tokenizer.json` loads in transformers.
//! - [`shard`]: `train-NNNNN.bin` / `val-NNNNN.bin` (header + little-endian ids), memory-mapped to read.
//! - [`encode_corpus`]: threads rebuilt, split kept, shards and `manifest.json` written.

mod encode;
pub mod error;
pub mod shard;
pub mod template;
pub mod tokenizer;

pub use encode::{
    corpus_documents, encode_corpus, train_tokenizer, Documents, EncodeConfig, TokensManifest,
};
pub use error::{Error, Result};
pub use shard::{Dtype, ShardWriter, TokenShard};
