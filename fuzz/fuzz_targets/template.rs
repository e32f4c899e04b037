//! Any item through the GRM prompt and each generated family's chat template (the ones the
//! tests' judges carry): rendering never panics, and every response's text reaches the
//! prompt, in the order shown.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_core::{template, Item, TemplateVersion};
use verdict_engine::chat::{ChatMessage, ChatTemplate};
use verdict_engine::synth::chat_template;
use verdict_engine::Arch;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else { return };
    let Ok(line) = std::str::from_utf8(rest) else { return };
    let Ok(item) = Item::from_json_line(line) else { return };
    let n = item.responses.len() as u32;
    // A rotation of the responses, as a sample's shuffle would show them.
    let order: Vec<u32> = (0..n).map(|i| (i + seed as u32) % n).collect();
    let user = template::render(TemplateVersion::GrmV1, &item, &order);
    for arch in [Arch::Qwen2, Arch::Llama, Arch::Gemma2] {
        let (source, bos, eos) = chat_template(arch);
        let t = ChatTemplate::from_parts(source.to_string(), bos, eos).expect("the generated templates parse");
        let prompt = t.render(&[ChatMessage { role: "user", content: &user }], true).expect("rendering an item never fails");
        let mut at = 0;
        for &i in &order {
            let r = item.responses[i as usize].trim();
            if r.is_empty() {
                continue;
            }
            let found = prompt[at..].find(r).unwrap_or_else(|| panic!("response {i} missing from the prompt or out of order"));
            at += found + r.len();
        }
    }
});
