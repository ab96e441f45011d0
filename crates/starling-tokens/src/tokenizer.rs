//! Byte-level BPE through HF `tokenizers`, with the template's special tokens.

use crate::error::{Error, Result};
use crate::template::special_tokens;
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer, TokenizerBuilder,
};

fn tk<E: std::fmt::Display>(e: E) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Trains a byte-level BPE of `vocab_size` tokens (special tokens included) on `documents`.
pub fn train<I, S>(documents: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let specials: Vec<AddedToken> = special_tokens()
        .into_iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    let min = specials.len() + ByteLevel::alphabet().len();
    if vocab_size < min {
        return Err(Error::Tokenizer(format!(
            "vocab size {vocab_size} is below the {min} byte and special tokens"
        )));
    }
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    // GPT-2's byte-level setup: no prefix space, offsets trimmed, GPT-2 split regex.
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default().into())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(tk)?;
    tokenizer.train(&mut trainer, documents).map_err(tk)?;
    let mut t: Tokenizer = tokenizer.into();
    t.add_special_tokens(&specials);
    Ok(t)
}

/// Loads a `tokenizer.json`.
pub fn load(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: format!("not a tokenizer.json: {e}"),
    })
}

/// Saves a tokenizer as `tokenizer.json` (pretty-printed) atomically.
pub fn save(t: &Tokenizer, path: &Path) -> Result<()> {
    let json = t.to_string(true).map_err(tk)?;
    Ok(starling_artifacts::write_atomic(path, json.as_bytes())?)
}

/// Token ids of `text` (special tokens recognised, none added).
pub fn encode(t: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(t.encode(text, false).map_err(tk)?.get_ids().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{document, END_OF_POST, END_OF_TEXT};

    #[test]
    fn trains_and_keeps_special_tokens_whole() {
        let docs: Vec<String> = (0..200)
            .map(|i| {
                document([
                    format!("the weather today is number {i} and it is lovely <|url|>").as_str(),
                    "reply with thanks",
                ])
            })
            .collect();
        let t = train(docs.iter(), 400).expect("train");
        assert!(t.get_vocab_size(true) <= 400);
        let ids = encode(&t, &docs[0]).expect("encode");
        let eop = t.token_to_id(END_OF_POST).expect("eop");
        let eot = t.token_to_id(END_OF_TEXT).expect("eot");
        assert_eq!(eot, 0, "special tokens take the first ids");
        assert_eq!(ids.iter().filter(|&&i| i == eop).count(), 2);
        assert_eq!(*ids.last().expect("ids"), eot);
        assert!(ids.contains(&t.token_to_id("<|url|>").expect("url")));
        assert_eq!(
            t.decode(&ids, false).expect("decode"),
            docs[0],
            "byte-level BPE round-trips"
        );
        assert!(train(docs.iter(), 10).is_err());
    }
}
