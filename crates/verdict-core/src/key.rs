//! Content keys: a SHA-256 over a canonical encoding of what an item says (prompt and
//! responses, not its id or metadata) and, for [`ContentKey::of`], the label spec and the
//! fingerprints of the weights that judge it. Equal keys mean the stored verdict can be
//! reused: that is how resume and dedup work, so a retrained judge (same name, same shapes,
//! other weights) never reuses the old judge's verdicts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Item, LabelSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentKey(pub [u8; 32]);

/// Which weights produce a verdict: the judge's fingerprint (a hash of its weights,
/// tokenizer, config and chat template) and, when the spec votes with a meta reward model,
/// the meta RM's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Fingerprints {
    pub judge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_rm: Option<String>,
}

impl Fingerprints {
    pub fn new(judge: impl Into<String>, meta_rm: Option<String>) -> Self {
        Self { judge: judge.into(), meta_rm }
    }

    /// The fingerprints that matter to a verdict under `spec`: the meta RM's only when the
    /// spec votes with it (plain voting never reads meta scores).
    pub fn for_spec(&self, spec: &LabelSpec) -> Fingerprints {
        Fingerprints { judge: self.judge.clone(), meta_rm: if spec.uses_meta_rm() { self.meta_rm.clone() } else { None } }
    }
}

#[derive(Serialize)]
struct ItemContent<'a> {
    prompt: &'a crate::Prompt,
    responses: &'a [String],
}

impl ContentKey {
    /// The key of an item's content alone.
    pub fn of_item(item: &Item) -> Self {
        Self::hash(&ItemContent { prompt: &item.prompt, responses: &item.responses }, None)
    }

    /// The key of (item content, spec, weights): equal keys give equal verdicts.
    pub fn of(item: &Item, spec: &LabelSpec, weights: &Fingerprints) -> Self {
        Self::hash(&ItemContent { prompt: &item.prompt, responses: &item.responses }, Some((spec, &weights.for_spec(spec))))
    }

    fn hash(content: &ItemContent<'_>, spec: Option<(&LabelSpec, &Fingerprints)>) -> Self {
        let mut h = Sha256::new();
        h.update(b"verdict/item/v1\0");
        // serde_json writes struct fields in declaration order and escapes deterministically,
        // so this encoding is canonical for our own types.
        h.update(serde_json::to_vec(content).unwrap_or_default());
        if let Some((spec, weights)) = spec {
            h.update(b"\0spec\0");
            h.update(serde_json::to_vec(spec).unwrap_or_default());
            h.update(b"\0weights\0");
            h.update(serde_json::to_vec(weights).unwrap_or_default());
        }
        ContentKey(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 16 hex digits: the default id of an item given without one.
    pub fn short(&self) -> String {
        self.hex()[..16].to_string()
    }

    /// 64 bits of the key, to seed per-item randomness.
    pub fn seed_bits(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().unwrap_or([0; 8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Aggregation;

    #[test]
    fn key_ignores_id_and_metadata_but_not_content_spec_or_weights() {
        let a = Item::from_json_line(r#"{"id":"a","prompt":"p","responses":["x","y"],"m":1}"#).unwrap();
        let b = Item::from_json_line(r#"{"id":"b","prompt":"p","responses":["x","y"]}"#).unwrap();
        let c = Item::from_json_line(r#"{"id":"a","prompt":"p","responses":["y","x"]}"#).unwrap();
        let spec = LabelSpec::new("j");
        let w = Fingerprints::new("f1", None);
        assert_eq!(ContentKey::of(&a, &spec, &w), ContentKey::of(&b, &spec, &w));
        assert_ne!(ContentKey::of(&a, &spec, &w), ContentKey::of(&c, &spec, &w));
        let other = LabelSpec { seed: 1, ..spec.clone() };
        assert_ne!(ContentKey::of(&a, &spec, &w), ContentKey::of(&a, &other, &w));
        assert_ne!(ContentKey::of(&a, &spec, &w), ContentKey::of(&a, &spec, &Fingerprints::new("f2", None)), "other weights, other key");
        assert_eq!(ContentKey::of(&a, &spec, &w).hex().len(), 64);
    }

    #[test]
    fn the_meta_rm_counts_only_when_it_votes() {
        let a = Item::from_json_line(r#"{"prompt":"p","responses":["x","y"]}"#).unwrap();
        let plain = LabelSpec::new("j");
        let meta = LabelSpec { aggregation: Aggregation::MetaRm { k_meta: None }, ..plain.clone() };
        let (m1, m2) = (Fingerprints::new("f", Some("m1".into())), Fingerprints::new("f", Some("m2".into())));
        assert_eq!(ContentKey::of(&a, &plain, &m1), ContentKey::of(&a, &plain, &m2));
        assert_eq!(ContentKey::of(&a, &plain, &m1), ContentKey::of(&a, &plain, &Fingerprints::new("f", None)));
        assert_ne!(ContentKey::of(&a, &meta, &m1), ContentKey::of(&a, &meta, &m2));
    }
}
