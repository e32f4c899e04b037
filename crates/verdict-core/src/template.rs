//! The GRM prompt, by version. The judge sees the conversation and the responses in the
//! order of one sample's permutation, and is asked for principles ("specific criteria"),
//! an analysis, and `Scores: \boxed{s1, ..., sn}` in the order shown.
//!
//! `grm-v1` follows DeepSeek-GRM's default pointwise template (arXiv 2504.02495,
//! appendix): the same sections, response delimiters and output format, with the general
//! criteria written out in our own words.

use crate::{Item, Message, Prompt, TemplateVersion};

const GRM_V1_PREAMBLE: &str = "You are a skilled expert at scoring responses. You should evaluate the given responses based on the given judging criteria.
Given the context of the conversation (the last round is the User's query) and multiple responses from the Assistant, you need to refer to the [General Evaluation Criteria] to score the responses. Based on the general evaluation criteria, state potential other specific criteria for the query, the weights of the different criteria, and then provide an overall comprehensive score upon them.
Each score is an integer between 1 and 10, with a higher score indicating that the response meets the relevant criteria more closely. For example, a score of 1 means the response does not meet the criteria at all, a score of 6 means the response meets only some parts, and a score of 10 means the response perfectly meets the evaluation criteria.
Before scoring, please analyze step by step. Your scoring needs to be as strict as possible.

[General Evaluation Criteria]
1. Instruction following: the response does what the query asks, within its stated constraints.
2. Helpfulness: the response solves the user's actual problem, with the right level of detail.
3. Accuracy: facts, reasoning, code and calculations are correct; uncertainty is stated.
4. Harmlessness: the response avoids unsafe, unethical or deceptive content.
5. Clarity: the response is well organised and easy to follow.
";

const GRM_V1_FORMAT: &str = "#### Output Format Requirements ####
Output with three lines
Specific Criteria: <Other potential criteria specific to the query and the context, and the weights of each criterion>.
Analysis: <Compare the different responses based on the given criteria>.
Scores: <the overall comprehensive score of all responses in order, separated by commas in the box, e.g., \\boxed{x, x} if there are 2 responses>.";

fn role_label(role: &str) -> &str {
    match role {
        "system" => "System",
        "assistant" => "Assistant",
        _ => "User",
    }
}

fn context(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(t) => format!("User: {t}"),
        Prompt::Conversation(msgs) => msgs
            .iter()
            .map(|Message { role, content }| format!("{}: {content}", role_label(role)))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// The judge's user message for one sample: `order[j]` is the input index of the response
/// shown as "Response j+1".
pub fn render(version: TemplateVersion, item: &Item, order: &[u32]) -> String {
    match version {
        TemplateVersion::GrmV1 => {
            let mut out = String::with_capacity(4096);
            out.push_str(GRM_V1_PREAMBLE);
            out.push_str("\n#### Conversation Context ####\n");
            out.push_str(&context(&item.prompt));
            out.push_str("\n\n#### Responses to be Scored ####\n");
            for (shown, &input) in order.iter().enumerate() {
                let i = shown + 1;
                let text = item.responses.get(input as usize).map(String::as_str).unwrap_or("");
                out.push_str(&format!(
                    "[The Begin of Response {i}]\n{text}\n[The End of Response {i}]\n"
                ));
            }
            out.push('\n');
            out.push_str(GRM_V1_FORMAT);
            out
        }
    }
}

/// What the engine appends when a sample runs out of budget before its scores and the
/// spec says to force them: the judge continues from here with constrained decoding.
pub fn forced_score_prefix(version: TemplateVersion) -> &'static str {
    match version {
        TemplateVersion::GrmV1 => "\nScores: \\boxed{",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_responses_in_sample_order() {
        let item = Item::from_json_line(r#"{"prompt":"Q?","responses":["first","second"]}"#).unwrap();
        let text = render(TemplateVersion::GrmV1, &item, &[1, 0]);
        let r1 = text.find("[The Begin of Response 1]\nsecond\n[The End of Response 1]").unwrap();
        let r2 = text.find("[The Begin of Response 2]\nfirst\n[The End of Response 2]").unwrap();
        assert!(r1 < r2);
        assert!(text.contains("User: Q?"));
        assert!(text.ends_with("if there are 2 responses>."));
    }

    #[test]
    fn renders_conversations_with_roles() {
        let item = Item::from_json_line(
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"responses":["a"]}"#,
        )
        .unwrap();
        let text = render(TemplateVersion::GrmV1, &item, &[0]);
        assert!(text.contains("System: be brief\n\nUser: hi"));
    }
}
