//! Content keys: a SHA-256 over a canonical encoding of what an item says (prompt and
//! responses, not its id or metadata) and, for [`ContentKey::of`], the label spec. Equal
//! keys mean the stored verdict can be reused: that is how resume and dedup work.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Item, LabelSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentKey(pub [u8; 32]);

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

    /// The key of (item content, spec): equal keys give equal verdicts.
    pub fn of(item: &Item, spec: &LabelSpec) -> Self {
        Self::hash(&ItemContent { prompt: &item.prompt, responses: &item.responses }, Some(spec))
    }

    fn hash(content: &ItemContent<'_>, spec: Option<&LabelSpec>) -> Self {
        let mut h = Sha256::new();
        h.update(b"verdict/item/v1\0");
        // serde_json writes struct fields in declaration order and escapes deterministically,
        // so this encoding is canonical for our own types.
        h.update(serde_json::to_vec(content).unwrap_or_default());
        if let Some(spec) = spec {
            h.update(b"\0spec\0");
            h.update(serde_json::to_vec(spec).unwrap_or_default());
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

    #[test]
    fn key_ignores_id_and_metadata_but_not_content_or_spec() {
        let a = Item::from_json_line(r#"{"id":"a","prompt":"p","responses":["x","y"],"m":1}"#).unwrap();
        let b = Item::from_json_line(r#"{"id":"b","prompt":"p","responses":["x","y"]}"#).unwrap();
        let c = Item::from_json_line(r#"{"id":"a","prompt":"p","responses":["y","x"]}"#).unwrap();
        let spec = LabelSpec::new("j");
        assert_eq!(ContentKey::of(&a, &spec), ContentKey::of(&b, &spec));
        assert_ne!(ContentKey::of(&a, &spec), ContentKey::of(&c, &spec));
        let other = LabelSpec { seed: 1, ..spec.clone() };
        assert_ne!(ContentKey::of(&a, &spec), ContentKey::of(&a, &other));
        assert_eq!(ContentKey::of(&a, &spec).hex().len(), 64);
    }
}
