//! The meta reward model: a sequence classifier (base model plus a linear `score` head read
//! at the last token, transformers' `*ForSequenceClassification`) that rates each sampled
//! judgement, given the judge prompt as the user turn and the judgement as the assistant's.
//! Meta-RM guided voting keeps the best-rated samples.

use std::path::Path;


use crate::chat::{ChatMessage, ChatTemplate};
use crate::config::Head;
use crate::error::{ComputeContext, EngineError, Result};
use crate::folder::ModelFolder;
use crate::judge::EngineOptions;
use crate::model::{Decoder, KvCache, Step};
use crate::tokenizer::Tok;

pub struct MetaRm {
    model: Decoder,
    tok: Tok,
    chat: ChatTemplate,
}

impl MetaRm {
    /// Open a meta RM folder, checking that it holds a sequence classifier.
    pub fn open(dir: &Path) -> Result<ModelFolder> {
        let folder = ModelFolder::open(dir)?;
        if !matches!(folder.config()?.head, Head::SequenceClassification { .. }) {
            return Err(EngineError::config(
                dir.join("config.json"),
                "a meta RM must be a sequence classifier (architectures: [\"*ForSequenceClassification\"])",
            ));
        }
        Ok(folder)
    }

    pub fn load(folder: &ModelFolder, options: &EngineOptions) -> Result<Self> {
        let cfg = folder.config()?;
        let tok = folder.tokenizer(&cfg)?;
        let chat = folder.chat_template(&tok)?;
        let model = folder.decoder(&cfg, options.dtype, &options.device)?;
        Ok(Self { model, tok, chat })
    }

    /// Rate (judge prompt, judgement) pairs; `None` where the pair does not fit the meta
    /// RM's context.
    pub fn score(&self, pairs: &[(&str, &str)], max_batch: usize) -> Result<Vec<Option<f32>>> {
        let limit = self.model.config().max_position_embeddings;
        let mut encoded = Vec::with_capacity(pairs.len());
        for (prompt, judgement) in pairs {
            let text = self.chat.render(
                &[ChatMessage { role: "user", content: prompt }, ChatMessage { role: "assistant", content: judgement }],
                false,
            )?;
            let ids = self.tok.encode(&text, "a judgement for the meta RM")?;
            encoded.push((!ids.is_empty() && ids.len() <= limit).then_some(ids));
        }
        let mut out = vec![None; pairs.len()];
        let todo: Vec<usize> = (0..pairs.len()).filter(|&i| encoded[i].is_some()).collect();
        for chunk in todo.chunks(max_batch.max(1)) {
            let seqs: Vec<&Vec<u32>> = chunk.iter().filter_map(|&i| encoded[i].as_ref()).collect();
            let scores = self.score_batch(&seqs)?;
            for (&i, s) in chunk.iter().zip(scores) {
                out[i] = Some(s);
            }
        }
        Ok(out)
    }

    fn score_batch(&self, seqs: &[&Vec<u32>]) -> Result<Vec<f32>> {
        let device = self.model.device();
        let pad_id = self.model.config().pad_token_id.unwrap_or(0);
        let seqs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let (step, _) = Step::left_padded(&seqs, 0, pad_id, self.model.sliding_window(), device).step("meta RM input")?;
        let (b, p) = step.tokens.dims2().step("meta RM input")?;
        let mut cache = KvCache::new(self.model.config(), b, p, self.model.dtype(), device).step("meta RM cache")?;
        let hidden = self.model.forward(&step, &mut cache).step("meta RM forward")?;
        let scores = self.model.head(&Decoder::last(&hidden).step("meta RM")?).step("meta RM head")?;
        let rows: Vec<Vec<f32>> = scores.to_vec2().step("meta RM scores")?;
        Ok(rows.into_iter().map(|r| r.first().copied().unwrap_or(f32::NAN)).collect())
    }
}
