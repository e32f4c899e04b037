//! The GRM judge: a loaded judge model (plus an optional meta reward model) that turns items
//! into verdicts under a label spec.
//!
//! For each item: k samples, each with its own seeded permutation of the responses, its own
//! rendered prompt and its own RNG stream. The samples of several items are decoded together
//! in batches of up to `max_batch` sequences. Samples are parsed, optionally rated by the
//! meta RM, and aggregated as the spec says.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use verdict_core::shuffle::sample_permutation;
use verdict_core::{aggregate, template, ContentKey, FieldError, Fingerprints, Item, LabelSpec, Problem, Sample, Stopped, Verdict, VerdictRecord};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::config::{Head, ModelConfig};
use crate::constraint::ScoreVocab;
use crate::error::{EngineError, Result};
use crate::fingerprint::DigestCache;
use crate::folder::ModelFolder;
use crate::engine::runner::PREFILL_TOKENS;
use crate::engine::sampling::SamplingStage;
use crate::engine::{Engine, GenOutput, GenStats, Sizes};
use crate::sampler::SamplingParams;
use crate::session::Session;
use crate::meta_rm::MetaRm;
use crate::model::{Decoder, KvCache};
use crate::tokenizer::Tok;

/// How the engine runs, as opposed to what it computes (that is the spec).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most sequences decoded together in one batch. On CUDA the engine also keeps each
    /// batch within the device memory left after loading the weights; `usize::MAX` lets that
    /// alone decide.
    pub max_batch: usize,
    pub device: Device,
    /// f32 on CPU; bf16 on CUDA.
    pub dtype: DType,
    /// Where weight files' content digests are cached between runs.
    pub digest_cache: DigestCache,
    /// Replay decode steps of up to 256 rows from CUDA graphs (CUDA only): small batches
    /// are otherwise bound by kernel launches. Off only to measure what graphs change.
    pub cuda_graphs: bool,
}

impl EngineOptions {
    pub fn cpu() -> Self {
        Self { max_batch: 32, device: Device::Cpu, dtype: DType::F32, digest_cache: DigestCache::none(), cuda_graphs: true }
    }
}

/// One item ready for the GPU: its key and the token ids of each sample's prompt.
#[derive(Debug, Clone)]
pub struct PreparedItem {
    pub item: Item,
    /// Content key of (item, spec, weights): what the verdict is stored under.
    pub key: ContentKey,
    /// Seeds the item's permutations, sampling and tie-break. It depends on the item's
    /// content and the spec seed only, so sample j is the same whatever k, the token budget
    /// or the judge's file fingerprint: the first k' samples of a k-sample run are a k'-run.
    pub item_seed: u64,
    /// Per sample to compute, samples `first..k`: its permutation and the index of its
    /// prompt in `prompts`.
    pub samples: Vec<(Vec<u32>, usize)>,
    /// The index of the first sample to compute: 0, or the k of an earlier run being
    /// extended (its samples are the same as a fresh run's, so only the new ones are made).
    pub first: u32,
    /// Samples `0..first` already made, when the caller has them: the verdict is voted over
    /// them and the new ones together. Empty with `first` > 0 yields a record of the new
    /// samples alone, which the holder of the earlier ones completes (the coordinator).
    pub prior: Vec<Sample>,
    /// Distinct rendered prompts (one per distinct permutation), as text and token ids.
    pub prompts: Vec<(String, Vec<u32>)>,
}

/// A judge before its weights: config, tokenizer, chat template and fingerprints. It
/// renders, tokenizes and length-checks items and computes their keys, so a whole dataset
/// can be checked before gigabytes of weights are loaded.
pub struct Prompter {
    folder: ModelFolder,
    cfg: ModelConfig,
    tok: Tok,
    chat: ChatTemplate,
    name: String,
    fingerprints: Fingerprints,
    meta_folder: Option<ModelFolder>,
}

impl Prompter {
    /// Open a judge folder (and a meta RM folder) and fingerprint their content.
    pub fn open(dir: &Path, meta_rm: Option<&Path>, cache: &DigestCache) -> Result<Self> {
        let folder = ModelFolder::open(dir)?;
        let cfg = folder.config()?;
        if cfg.head != Head::CausalLm {
            return Err(EngineError::config(dir.join("config.json"), "the judge must be a causal LM (*ForCausalLM), this is a classifier"));
        }
        let tok = folder.tokenizer(&cfg)?;
        let chat = folder.chat_template(&tok)?;
        let meta_folder = meta_rm.map(MetaRm::open).transpose()?;
        let meta_fp = meta_folder.as_ref().map(|m| m.fingerprint(cache)).transpose()?;
        let fingerprints = Fingerprints::new(folder.fingerprint(cache)?, meta_fp);
        Ok(Self { name: folder.name(), folder, cfg, tok, chat, fingerprints, meta_folder })
    }

    /// The judge's name: its folder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fingerprints of the judge's files and of the meta RM's, if one is loaded.
    pub fn fingerprints(&self) -> &Fingerprints {
        &self.fingerprints
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Whether a spec can run on this judge at all: its token budget fits the context, and
    /// meta-RM voting has a meta RM.
    pub fn check_spec(&self, spec: &LabelSpec) -> Result<()> {
        let context = self.cfg.max_position_embeddings;
        if spec.max_new_tokens as usize >= context {
            return Err(EngineError::Spec(format!(
                "max_new_tokens {} does not fit the judge's context of {context} tokens, which must also hold the prompt",
                spec.max_new_tokens
            )));
        }
        if spec.uses_meta_rm() && self.meta_folder.is_none() {
            return Err(EngineError::Spec("meta-RM voting needs a meta reward model, and none is loaded (--meta-rm DIR)".into()));
        }
        Ok(())
    }

    /// The token ids that every prompt of `spec` starts with: the chat template's opening
    /// and the judge template's header (its principles and instructions), up to where the
    /// item's own text begins. Their keys and values are the same for every sample of every
    /// item, so the engine can hold and read them once. Found by rendering two items that
    /// differ from their first character on and keeping what their tokens share, less the
    /// last shared token (a tokenizer may merge it with whatever text follows); a prompt
    /// that does not start with it is simply not shared.
    pub fn template_header(&self, spec: &LabelSpec) -> Result<Vec<u32>> {
        let render = |text: &str| -> Result<Vec<u32>> {
            let item = Item::from_json_line(&format!(r#"{{"id":"h","prompt":"{text}","responses":["{text}","{text}"]}}"#))
                .map_err(|e| EngineError::Spec(format!("rendering the template header: {e}")))?;
            let order: Vec<u32> = (0..item.responses.len() as u32).collect();
            let chat = self.chat.render(&[ChatMessage { role: "user", content: &template::render(spec.template, &item, &order) }], true)?;
            self.tok.encode(&chat, "the template header")
        };
        let (a, b) = (render("Alpha")?, render("Zulu 9")?);
        let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        Ok(a[..shared.saturating_sub(1)].to_vec())
    }

    /// Render, tokenize and length-check an item's k prompts. A bad item is an error that
    /// names the item and the field, and never stops the others.
    pub fn prepare(&self, item: Item, spec: &LabelSpec) -> std::result::Result<PreparedItem, EngineError> {
        self.prepare_from(item, spec, 0)
    }

    /// `prepare`, for samples `first..spec.k` only: an extension of a run of k = `first`.
    pub fn prepare_from(&self, item: Item, spec: &LabelSpec, first: u32) -> std::result::Result<PreparedItem, EngineError> {
        let key = ContentKey::of(&item, spec, &self.fingerprints);
        let item_seed = ContentKey::of_item(&item).seed_bits();
        let n = item.responses.len();
        let limit = self.cfg.max_position_embeddings.saturating_sub(spec.max_new_tokens as usize);
        let mut by_perm: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut prompts = Vec::new();
        let mut samples = Vec::with_capacity(spec.k.saturating_sub(first) as usize);
        for j in first.min(spec.k)..spec.k {
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
        Ok(PreparedItem { item, key, item_seed, samples, prompts, first, prior: Vec::new() })
    }
}

pub struct Judge {
    model: Decoder,
    prompter: Prompter,
    score_vocab: ScoreVocab,
    forced_prefix: Vec<u32>,
    meta: Option<MetaRm>,
    options: EngineOptions,
    token_texts: Vec<String>,
    /// Device bytes free after loading (CUDA only): what batches are sized against.
    free_bytes: Option<usize>,
}

/// Batch size when neither the user nor device memory sets one (the CPU).
const CPU_BATCH: usize = 32;
/// Upper bound on sequences per batch, whatever the memory: the host does per-row work on
/// every step, and past a few thousand rows the GPU is saturated anyway.
const MAX_ROWS: usize = 4096;

impl Judge {
    /// Load a judge from a model folder, and a meta RM if given.
    pub fn load(dir: &Path, meta_rm: Option<&Path>, options: EngineOptions) -> Result<Self> {
        let prompter = Prompter::open(dir, meta_rm, &options.digest_cache)?;
        Self::with_weights(prompter, options)
    }

    /// Load the weights of a judge whose folder is already open.
    pub fn with_weights(prompter: Prompter, options: EngineOptions) -> Result<Self> {
        let model = prompter.folder.decoder(&prompter.cfg, options.dtype, &options.device)?;
        let token_texts = prompter.tok.token_texts();
        let score_vocab = ScoreVocab::new(&token_texts);
        let forced_prefix = prompter.tok.encode(template::forced_score_prefix(Default::default()), "the forced score prefix")?;
        let meta = prompter.meta_folder.as_ref().map(|m| MetaRm::load(m, &options)).transpose()?;
        let free_bytes = crate::device::free_memory(&options.device);
        Ok(Self { model, prompter, score_vocab, forced_prefix, meta, options, token_texts, free_bytes })
    }

    /// The judge's name: its folder's name.
    pub fn name(&self) -> &str {
        self.prompter.name()
    }

    /// The fingerprints of the judge's files and of the meta RM's, if one is loaded.
    pub fn fingerprints(&self) -> &Fingerprints {
        self.prompter.fingerprints()
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// See [`Prompter::check_spec`].
    pub fn check_spec(&self, spec: &LabelSpec) -> Result<()> {
        self.prompter.check_spec(spec)
    }

    /// See [`Prompter::template_header`].
    pub fn template_header(&self, spec: &LabelSpec) -> Result<Vec<u32>> {
        self.prompter.template_header(spec)
    }

    /// See [`Prompter::prepare`].
    pub fn prepare(&self, item: Item, spec: &LabelSpec) -> std::result::Result<PreparedItem, EngineError> {
        self.prompter.prepare(item, spec)
    }

    /// See [`Prompter::prepare_from`].
    pub fn prepare_from(&self, item: Item, spec: &LabelSpec, first: u32) -> std::result::Result<PreparedItem, EngineError> {
        self.prompter.prepare_from(item, spec, first)
    }

    /// Change the most sequences per batch (benchmarks sweep it without reloading).
    pub fn set_max_batch(&mut self, max_batch: usize) {
        self.options.max_batch = max_batch.max(1);
    }

    /// Rows (samples decoded together) and prompt-pool slots for a session: the user's
    /// `max_batch`, and on CUDA what fits in the memory left after the weights. A row costs
    /// its own tokens' keys and values, its logits and its share of the prompt pool: each
    /// distinct prompt is held once (past its first `header` tokens, the template header held
    /// once for all), and with `k` samples over two response orders about k/2 rows read each
    /// (the pool gets a quarter more, so prompts are prefilled ahead). One prefill chunk's
    /// activations and caches are set aside.
    pub fn sizing(&self, prompt_tokens: usize, header: usize, max_new: usize, k: usize) -> (usize, usize) {
        let cfg = self.config();
        let dtype = self.options.dtype;
        let Some(free) = self.free_bytes else {
            let rows = if self.options.max_batch == usize::MAX { CPU_BATCH } else { self.options.max_batch };
            return (rows, pool_slots(rows, prompt_tokens, header, k));
        };
        let own = crate::engine::own_slots(max_new);
        let per_row = KvCache::bytes_per_sequence(cfg, own, dtype)
            + KvCache::bytes_per_sequence(cfg, pool_slots(1, prompt_tokens, header, k) - prompt_tokens, dtype)
            + cfg.vocab_size * 12
            + (cfg.hidden_size * 8 + cfg.intermediate_size * 8);
        // A prefill chunk: its activations, its keys and values before they go to the pool,
        // and the segmented attention's partials (a few per query vector; no score matrix).
        let partials = cfg.num_attention_heads * 4 * (cfg.head_dim + 2) * 4;
        let prefill = PREFILL_TOKENS * (cfg.intermediate_size * 8 + cfg.hidden_size * 16 + partials)
            + 2 * KvCache::bytes_per_sequence(cfg, PREFILL_TOKENS.max(prompt_tokens), dtype);
        // Keep a tenth free for the allocator's slack and cuBLAS workspaces.
        let budget = (free / 10 * 9).saturating_sub(prefill);
        let rows = (budget / per_row.max(1)).clamp(1, MAX_ROWS).min(self.options.max_batch);
        (rows, pool_slots(rows, prompt_tokens, header, k))
    }

    /// Judge prepared items: all their samples, through one continuously batched session.
    pub fn judge(&self, items: &[PreparedItem], spec: &LabelSpec) -> Result<Vec<VerdictRecord>> {
        Ok(self.judge_with(items, spec, false)?.0)
    }

    /// `judge`, returning what generation cost too. With `fixed_length`, every sample is
    /// exactly `max_new_tokens` long whatever it writes (benchmarks; the verdicts mean
    /// nothing then).
    pub fn judge_with(&self, items: &[PreparedItem], spec: &LabelSpec, fixed_length: bool) -> Result<(Vec<VerdictRecord>, GenStats)> {
        self.judge_all(items, spec, fixed_length, None)
    }

    /// `judge`, with sample j of item i generating exactly `lengths[i][j]` tokens (benchmarks
    /// of varied judgement lengths; the verdicts mean nothing then).
    pub fn judge_lengths(&self, items: &[PreparedItem], spec: &LabelSpec, lengths: &[Vec<usize>]) -> Result<(Vec<VerdictRecord>, GenStats)> {
        self.judge_all(items, spec, true, Some(lengths))
    }

    fn judge_all(&self, items: &[PreparedItem], spec: &LabelSpec, fixed_length: bool, lengths: Option<&[Vec<usize>]>) -> Result<(Vec<VerdictRecord>, GenStats)> {
        let longest = items.iter().flat_map(|p| p.prompts.iter().map(|(_, ids)| ids.len())).max().unwrap_or(0);
        let samples: usize = items.iter().map(|p| p.samples.len()).sum();
        let mut session = self.session(spec, longest, Some(samples), fixed_length)?;
        let mut out: Vec<Option<VerdictRecord>> = vec![None; items.len()];
        for (i, p) in items.iter().enumerate() {
            match lengths {
                Some(l) => session.submit_fixed(i, p.clone(), &l[i])?,
                None => session.submit(i, p.clone())?,
            }
        }
        while !session.is_idle() {
            for (i, r) in session.step()? {
                out[i] = Some(r);
            }
        }
        let stats = session.stats();
        let records = out.into_iter().enumerate().map(|(i, r)| r.ok_or_else(|| EngineError::Device(format!("item {} was never finished", items[i].item.id)))).collect::<Result<_>>()?;
        Ok((records, stats))
    }

    /// A session that judges items as they are submitted, under one spec: prompts of up to
    /// `max_prompt` tokens, a batch of at most the rows [`Judge::sizing`] allows (and at most
    /// `samples`, when the caller knows how many there will be).
    pub fn session(&self, spec: &LabelSpec, max_prompt: usize, samples: Option<usize>, fixed_length: bool) -> Result<Session<'_>> {
        let max_new = spec.max_new_tokens as usize;
        let header = self.template_header(spec)?;
        let (rows, _) = self.sizing(max_prompt, header.len(), max_new, spec.k as usize);
        let rows = rows.min(samples.unwrap_or(usize::MAX)).max(1);
        // Under adaptive k an item holds its prompts from round to round, while only a
        // round's samples read them: size the pool for rounds, not for k.
        let sharing = spec.adaptive.map_or(spec.k, |a| a.round.min(spec.k));
        let pool = pool_slots(rows, max_prompt, header.len(), sharing as usize);
        let device = self.model.device();
        let stage = SamplingStage {
            token_texts: &self.token_texts,
            stop_ids: &self.prompter.tok.stop_ids,
            score_vocab: &self.score_vocab,
            forced_prefix: &self.forced_prefix,
            params: SamplingParams { temperature: spec.temperature, top_p: spec.top_p },
            vocab: self.prompter.tok.vocab,
            score_ids: Tensor::from_slice(self.score_vocab.ids(), self.score_vocab.ids().len(), device).map_err(|source| EngineError::Compute { step: "score vocabulary", source })?,
        };
        let sizes = Sizes { rows, max_prompt, max_new, pool_slots: pool, cuda_graphs: self.options.cuda_graphs };
        let engine = Engine::new(&self.model, &self.prompter.tok, stage, sizes, &header)?;
        Ok(Session::new(self, spec.clone(), engine, fixed_length))
    }

    /// An item's finished samples (its first ones, in index order), parsed.
    pub(crate) fn samples_of<'o>(&self, p: &PreparedItem, outs: impl IntoIterator<Item = &'o GenOutput>) -> Vec<Sample> {
        let made = outs.into_iter().enumerate().map(|(j, out)| {
            let prompt_len = p.prompts[p.samples[j].1].1.len() as u32;
            Sample::from_generation(p.first + j as u32, p.samples[j].0.clone(), out.text.clone(), out.finish, out.forced, prompt_len, out.tokens.len() as u32)
        });
        p.prior.iter().cloned().chain(made).collect()
    }

    /// Parse finished samples into verdicts: meta-RM scores for all of them at once, then
    /// each item's aggregate (with why it stopped, under adaptive k).
    pub(crate) fn verdicts(&self, done: Vec<(PreparedItem, Vec<GenOutput>, Option<Stopped>)>, spec: &LabelSpec) -> Result<Vec<VerdictRecord>> {
        let mut per_item: Vec<Vec<Sample>> = done.iter().map(|(p, outs, _)| self.samples_of(p, outs)).collect();
        if let Some(meta) = &self.meta {
            let mut owners = Vec::new();
            let mut pairs = Vec::new();
            // Only the new samples: prior ones carry their meta scores already.
            for (i, samples) in per_item.iter().enumerate() {
                let p = &done[i].0;
                for (j, s) in samples.iter().enumerate().skip(p.prior.len()) {
                    owners.push((i, j));
                    pairs.push((p.prompts[p.samples[j - p.prior.len()].1].0.as_str(), s.raw.as_str()));
                }
            }
            let scores = meta.score(&pairs, self.options.max_batch.min(CPU_BATCH))?;
            drop(pairs);
            for ((i, j), score) in owners.into_iter().zip(scores) {
                per_item[i][j].meta_score = score;
            }
        }
        Ok(done
            .iter()
            .zip(per_item)
            .map(|((p, _, stopped), samples)| {
                let verdict = Verdict { stopped: *stopped, ..aggregate(spec, p.item_seed, p.item.responses.len(), &samples) };
                VerdictRecord::new(&p.item, p.key.hex(), spec, self.fingerprints(), verdict, samples)
            })
            .collect())
    }
}

/// Prompt-pool slots (besides the template header, held once) for `rows` rows of `k`
/// samples per item over prompts of up to `prompt_tokens`, `header` of which the template
/// header covers: what follows the header of each distinct prompt once, about k/2 rows
/// reading each (two response orders), a quarter more to prefill ahead, and never less than
/// one whole prompt (one that does not start with the header).
fn pool_slots(rows: usize, prompt_tokens: usize, header: usize, k: usize) -> usize {
    rows * prompt_tokens.saturating_sub(header) * 5 / 4 / (k / 2).max(1) + prompt_tokens
}
