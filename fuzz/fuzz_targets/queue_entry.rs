//! Whatever sits in a stream entry: decoding never panics, and what decodes re-encodes to
//! an entry that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_queue::decode_item;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = decode_item(data) {
        let again = decode_item(serde_json::to_string(&item).unwrap().as_bytes()).expect("an encoded entry decodes");
        assert_eq!(again, item);
    }
});
