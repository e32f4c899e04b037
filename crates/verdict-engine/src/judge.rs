//! The GRM judge: a loaded judge model (plus an optional meta reward model) that turns items
//! into verdicts under a label spec.
//!
//! For each item: k samples, each with its own seeded permutation of the responses, its own
//! rendered prompt and its own RNG stream. The samples of several items are decoded together
//! in batches of up to `max_batch` sequences. Samples are parsed, optionally rated by the
//! meta RM, and aggregated as the spec says.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use verdict_core::shuffle::{mix, sample_permutation, SAMPLING_TAG};
use verdict_core::{aggregate, template, ContentKey, FieldError, Item, LabelSpec, OnBudget, Problem, Sample, VerdictRecord};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::config::{Head, ModelConfig};
use crate::constraint::ScoreVocab;
use crate::error::{EngineError, Result};
use crate::folder::ModelFolder;
use crate::generate::{GenRequest, Generator};
use crate::meta_rm::MetaRm;
use crate::model::Decoder;
use crate::sampler::SamplingParams;
use crate::tokenizer::Tok;

/// How the engine runs, as opposed to what it computes (that is the spec).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most sequences decoded together in one batch.
    pub max_batch: usize,
    pub device: Device,
    /// f32 on CPU; bf16 on CUDA.
    pub dtype: DType,
}

impl EngineOptions {
    pub fn cpu() -> Self {
        Self { max_batch: 32, device: Device::Cpu, dtype: DType::F32 }
    }
}

/// One item ready for the GPU: its key and the token ids of each sample's prompt.
#[derive(Debug, Clone)]
pub struct PreparedItem {
    pub item: Item,
    /// Content key of (item, spec): what the verdict is stored under.
    pub key: ContentKey,
    /// Seeds the item's permutations, sampling and tie-break. It depends on the item's
    /// content and the spec seed only, so sample j is the same whatever k, the token budget
    /// or the judge's file fingerprint: the first k' samples of a k-sample run are a k'-run.
    pub item_seed: u64,
    /// Per sample: its permutation and the index of its prompt in `prompts`.
    pub samples: Vec<(Vec<u32>, usize)>,
    /// Distinct rendered prompts (one per distinct permutation), as text and token ids.
    pub prompts: Vec<(String, Vec<u32>)>,
}

pub struct Judge {
    model: Decoder,
    tok: Tok,
    chat: ChatTemplate,
    score_vocab: ScoreVocab,
    forced_prefix: Vec<u32>,
    identity: String,
    meta: Option<MetaRm>,
    options: EngineOptions,
}

impl Judge {
    /// Load a judge from a model folder, and a meta RM if given.
    pub fn load(dir: &Path, meta_rm: Option<&Path>, options: EngineOptions) -> Result<Self> {
        let folder = ModelFolder::open(dir)?;
        let cfg = folder.config()?;
        if cfg.head != Head::CausalLm {
            return Err(EngineError::config(dir.join("config.json"), "the judge must be a causal LM (*ForCausalLM), this is a classifier"));
        }
        let tok = folder.tokenizer(&cfg)?;
        let chat = folder.chat_template(&tok)?;
        let model = folder.decoder(&cfg, options.dtype, &options.device)?;
        let score_vocab = ScoreVocab::new(&tok.token_texts());
        let forced_prefix = tok.encode(template::forced_score_prefix(Default::default()), "the forced score prefix")?;
        let meta = meta_rm.map(|m| MetaRm::load(m, &options)).transpose()?;
        Ok(Self { identity: folder.identity()?, model, tok, chat, score_vocab, forced_prefix, meta, options })
    }

    /// The judge's identity for label specs: folder name and file fingerprint.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn meta_identity(&self) -> Option<&str> {
        self.meta.as_ref().map(MetaRm::identity)
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Render, tokenize and length-check an item's k prompts. A bad item is an error that
    /// names the item and the field, and never stops the others.
    pub fn prepare(&self, item: Item, spec: &LabelSpec) -> std::result::Result<PreparedItem, EngineError> {
        let key = ContentKey::of(&item, spec);
        let item_seed = ContentKey::of_item(&item).seed_bits();
        let n = item.responses.len();
        let limit = self.config().max_position_embeddings.saturating_sub(spec.max_new_tokens as usize);
        let mut by_perm: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut prompts = Vec::new();
        let mut samples = Vec::with_capacity(spec.k as usize);
        for j in 0..spec.k {
            let perm = sample_permutation(n, spec.seed, item_seed, j);
            let idx = match by_perm.get(&perm) {
                Some(&i) => i,
                None => {
                    let text = template::render(spec.template, &item, &perm);
                    let chat = self.chat.render(&[ChatMessage { role: "user", content: &text }], true)?;
                    let ids = self.tok.encode(&chat, &format!("item {}", item.id))?;
                    if ids.len() > limit {
                        return Err(EngineError::Item {
                            id: item.id.clone(),
                            error: FieldError::new("prompt", Problem::TooLong { tokens: ids.len(), limit }),
                        });
                    }
                    prompts.push((text, ids));
                    by_perm.insert(perm.clone(), prompts.len() - 1);
                    prompts.len() - 1
                }
            };
            samples.push((perm, idx));
        }
        Ok(PreparedItem { item, key, item_seed, samples, prompts })
    }

    /// Judge prepared items: all their samples in batches of `max_batch` sequences.
    pub fn judge(&self, items: &[PreparedItem], spec: &LabelSpec) -> Result<Vec<VerdictRecord>> {
        let params = SamplingParams { temperature: spec.temperature, top_p: spec.top_p };
        let mut requests = Vec::new();
        let mut owners = Vec::new();
        for (i, p) in items.iter().enumerate() {
            for (j, (_, prompt)) in p.samples.iter().enumerate() {
                requests.push(GenRequest {
                    prompt: p.prompts[*prompt].1.clone(),
                    seed: mix(&[SAMPLING_TAG, spec.seed, p.item_seed, j as u64]),
                    max_new_tokens: spec.max_new_tokens as usize,
                    n_scores: p.item.responses.len(),
                    force_scores: spec.on_budget == OnBudget::Force,
                });
                owners.push((i, j));
            }
        }
        let generator = Generator {
            model: &self.model,
            tok: &self.tok,
            score_vocab: &self.score_vocab,
            forced_prefix: &self.forced_prefix,
        };
        let mut outputs = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(self.options.max_batch.max(1)) {
            outputs.extend(generator.generate(chunk, params)?);
        }

        let mut per_item: Vec<Vec<Sample>> = items.iter().map(|p| Vec::with_capacity(p.samples.len())).collect();
        for ((i, j), (out, req)) in owners.into_iter().zip(outputs.into_iter().zip(&requests)) {
            let perm = items[i].samples[j].0.clone();
            per_item[i].push(Sample::from_generation(
                j as u32,
                perm,
                out.text,
                out.finish,
                out.forced,
                req.prompt.len() as u32,
                out.tokens.len() as u32,
            ));
        }
        if let Some(meta) = &self.meta {
            let mut owners = Vec::new();
            let mut pairs = Vec::new();
            for (i, samples) in per_item.iter().enumerate() {
                for (j, s) in samples.iter().enumerate() {
                    let prompt = &items[i].prompts[items[i].samples[j].1].0;
                    owners.push((i, j));
                    pairs.push((prompt.as_str(), s.raw.as_str()));
                }
            }
            let scores = meta.score(&pairs, self.options.max_batch)?;
            drop(pairs);
            for ((i, j), score) in owners.into_iter().zip(scores) {
                per_item[i][j].meta_score = score;
            }
        }
        Ok(items
            .iter()
            .zip(per_item)
            .map(|(p, samples)| {
                let verdict = aggregate(spec, p.item_seed, p.item.responses.len(), &samples);
                VerdictRecord::new(&p.item, p.key.hex(), spec, verdict, samples)
            })
            .collect())
    }
}
