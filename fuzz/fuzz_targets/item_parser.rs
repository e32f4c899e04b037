//! Any line a user's file may hold: `Item::from_json_line` either returns an item that
//! keeps its promises (an id, at least one response, a reference among them) or an error;
//! it never panics. An accepted item survives the queue's encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_core::Item;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    match Item::from_json_line(line) {
        Ok(item) => {
            assert!(!item.id.is_empty(), "an item without an id");
            assert!(!item.responses.is_empty(), "an item without responses");
            if let Some(r) = item.reference_winner {
                assert!(r < item.responses.len(), "a reference past the responses");
            }
            let again: Item = serde_json::from_str(&serde_json::to_string(&item).unwrap()).expect("an accepted item reads back");
            assert_eq!(again, item);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
