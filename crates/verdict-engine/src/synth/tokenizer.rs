//! Training the byte-level BPE tokenizer of a generated model on the corpus in `assets/`
//! plus GRM-shaped text (the prompt template and judgements), so that prompts tokenize to
//! realistic lengths and `\boxed{8, 3}` has tokens of its own.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder};
use verdict_core::{template, Item, TemplateVersion};

use super::Family;
use crate::error::{EngineError, Result};

pub(super) const CORPUS: &str = include_str!("../../assets/corpus.txt");

pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: u32,
    pub vocab: usize,
}

fn training_text() -> Vec<String> {
    let mut lines: Vec<String> = CORPUS.lines().map(str::to_string).collect();
    let item = Item::from_json_line(r#"{"prompt":"What is the capital of Australia?","responses":["Canberra.","Sydney."]}"#)
        .expect("a fixed, valid item");
    lines.extend(template::render(TemplateVersion::GrmV1, &item, &[0, 1]).lines().map(str::to_string));
    for (i, (a, b)) in [(8, 3), (2, 9), (7, 7), (10, 4), (5, 6), (1, 10)].iter().enumerate() {
        lines.push(format!(
            "Specific Criteria: correctness ({}%), clarity ({}%).\nAnalysis: Response 1 is {} than Response 2.\nScores: \\boxed{{{a}, {b}}}",
            50 + i * 5,
            50 - i * 5,
            if a > b { "better" } else { "worse" }
        ));
    }
    lines
}

/// Train and save `tokenizer.json`; return the ids of the special tokens.
pub fn train(fam: &Family, vocab_size: usize, out: &Path) -> Result<SpecialIds> {
    let err = |e: tokenizers::Error| EngineError::Synth(format!("training the tokenizer: {e}"));
    let specials: Vec<AddedToken> = fam.specials.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<NormalizerWrapper>)
        .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::default().add_prefix_space(false))))
        .with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::default().trim_offsets(false))))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
        .build()
        .map_err(err)?;
    tok.train(&mut trainer, training_text().into_iter()).map_err(err)?;
    let id = |t: &str| tok.token_to_id(t).ok_or_else(|| EngineError::Synth(format!("special token {t} missing after training")));
    let ids = SpecialIds {
        bos: fam.bos.map(id).transpose()?,
        eos: id(fam.eos)?,
        pad: id(fam.pad)?,
        vocab: tok.get_vocab_size(true),
    };
    tok.save(out, true).map_err(err)?;
    Ok(ids)
}
