//! The meta reward model: a sequence classifier (base model plus a linear `score` head read
//! at the last token, transformers' `*ForSequenceClassification`) that rates each sampled
//! judgement, given the judge prompt as the user turn and the judgement as the assistant's.
//! Meta-RM guided voting keeps the best-rated samples.

use std::path::Path;

use candle_core::Tensor;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::config::Head;
use crate::error::{ComputeContext, EngineError, Result};
use crate::folder::ModelFolder;
use crate::judge::EngineOptions;
use crate::model::{causal_mask, Decoder, KvCache, Step};
use crate::tokenizer::Tok;

pub struct MetaRm {
    model: Decoder,
    tok: Tok,
    chat: ChatTemplate,
    identity: String,
}

impl MetaRm {
    pub fn load(dir: &Path, options: &EngineOptions) -> Result<Self> {
        let folder = ModelFolder::open(dir)?;
        let cfg = folder.config()?;
        if !matches!(cfg.head, Head::SequenceClassification { .. }) {
            return Err(EngineError::config(
                dir.join("config.json"),
                "a meta RM must be a sequence classifier (architectures: [\"*ForSequenceClassification\"])",
            ));
        }
        let tok = folder.tokenizer(&cfg)?;
        let chat = folder.chat_template(&tok)?;
        let model = folder.decoder(&cfg, options.dtype, &options.device)?;
        Ok(Self { identity: folder.identity()?, model, tok, chat })
    }

    pub fn identity(&self) -> &str {
        &self.identity
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
        let dtype = self.model.dtype();
        let b = seqs.len();
        let p = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let pads: Vec<usize> = seqs.iter().map(|s| p - s.len()).collect();
        let pad_id = self.model.config().pad_token_id.unwrap_or(0);
        let mut tokens = Vec::with_capacity(b * p);
        let mut positions = Vec::with_capacity(b * p);
        for (s, &pad) in seqs.iter().zip(&pads) {
            tokens.extend(std::iter::repeat_n(pad_id, pad));
            tokens.extend_from_slice(s);
            positions.extend((0..p).map(|c| c.saturating_sub(pad) as u32));
        }
        let window = self.model.sliding_window();
        let mut cache = KvCache::new(self.model.config(), b, p, dtype, device).step("meta RM cache")?;
        let step = Step {
            tokens: Tensor::from_vec(tokens, (b, p), device).step("meta RM input")?,
            positions: Tensor::from_vec(positions, (b, p), device).step("meta RM input")?,
            mask: causal_mask(&pads, 0, p, None, dtype, device).step("meta RM mask")?,
            sliding_mask: window.map(|w| causal_mask(&pads, 0, p, Some(w), dtype, device)).transpose().step("meta RM mask")?,
            offset: 0,
        };
        let hidden = self.model.forward(&step, &mut cache).step("meta RM forward")?;
        let scores = self.model.head(&Decoder::last(&hidden).step("meta RM")?).step("meta RM head")?;
        let rows: Vec<Vec<f32>> = scores.to_vec2().step("meta RM scores")?;
        Ok(rows.into_iter().map(|r| r.first().copied().unwrap_or(f32::NAN)).collect())
    }
}
