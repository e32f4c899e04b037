//! Constrained decoding of the score block. Once a judgement has written `\boxed{`, only
//! tokens that keep the text a prefix of `n` comma-separated integers in 1..=10 followed by
//! `}` may be sampled, so every sample that reaches its score block parses. The grammar:
//! `␠? NUM (␠? , ␠? NUM)* ␠? }` with exactly n NUMs, NUM = 1..9 | 10, no runs of spaces.

/// The automaton's state after some characters of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreState {
    n: usize,
    count: usize,
    cur: Option<u8>,
    need_number: bool,
    last_space: bool,
    closed: bool,
}

impl ScoreState {
    pub fn new(n: usize) -> Self {
        Self { n, count: 0, cur: None, need_number: true, last_space: false, closed: false }
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    fn finish_number(&mut self) -> bool {
        if self.cur.take().is_some() {
            self.count += 1;
        }
        self.count <= self.n
    }

    /// Feed one character; false if the block can no longer be valid.
    pub fn feed(&mut self, c: char) -> bool {
        if self.closed {
            return false;
        }
        let space = c == ' ';
        let ok = match c {
            ' ' => !self.last_space && self.finish_number(),
            '0'..='9' => {
                let d = c as u8 - b'0';
                match self.cur {
                    None if self.need_number && d != 0 && self.count < self.n => {
                        self.cur = Some(d);
                        self.need_number = false;
                        true
                    }
                    Some(1) if d == 0 => {
                        self.cur = Some(10);
                        true
                    }
                    _ => false,
                }
            }
            ',' => {
                let ok = self.finish_number() && !self.need_number && self.count < self.n;
                self.need_number = true;
                ok
            }
            '}' => {
                let ok = self.finish_number() && !self.need_number && self.count == self.n;
                self.closed = true;
                ok
            }
            _ => false,
        };
        self.last_space = space;
        ok
    }

    /// Whether `text` can follow: every character accepted, and nothing after the `}`.
    pub fn accepts(&self, text: &str) -> Option<ScoreState> {
        if text.is_empty() {
            return None;
        }
        let mut s = self.clone();
        text.chars().all(|c| s.feed(c)).then_some(s)
    }

    /// The longest block the grammar allows over n responses, in characters: a space, then
    /// n two-digit scores joined by ` , `, then ` }` (` 10 , 10 }` for n = 2). With a
    /// tokenizer that splits every character, that many tokens.
    pub fn longest_block_chars(n: usize) -> usize {
        5 * n
    }

    /// The fewest characters that close the block from here (`,` and a digit per missing
    /// score, then `}`).
    pub fn min_chars_to_close(&self) -> usize {
        if self.closed {
            return 0;
        }
        let missing = self.n.saturating_sub(self.count + usize::from(self.cur.is_some()));
        if self.need_number && self.cur.is_none() {
            // A digit opens the next score; each further score needs a comma and a digit.
            2 * missing
        } else {
            2 * missing + 1
        }
    }
}

/// The tokens that can appear inside a score block: those whose text uses only digits,
/// commas, spaces and `}`. Computed once per tokenizer; a few hundred in a real vocabulary.
pub struct ScoreVocab {
    candidates: Vec<(u32, String)>,
    ids: Vec<u32>,
}

impl ScoreVocab {
    pub fn new(token_texts: &[String]) -> Self {
        let candidates = token_texts
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || matches!(c, ',' | ' ' | '}')))
            .map(|(i, t)| (i as u32, t.clone()))
            .collect::<Vec<(u32, String)>>();
        let ids = candidates.iter().map(|(id, _)| *id).collect();
        Self { candidates, ids }
    }

    /// Ids of all candidate tokens; `allowed` refers to them by position in this list.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The tokens allowed in `state` with `budget` tokens left, this one included: position
    /// in `ids()`, token id, and the state it leads to. A token is allowed only if the block
    /// can still close in what is left after it, so a block never runs out of tokens as
    /// long as the vocabulary has single-character tokens for the digits, `,` and `}`
    /// (every byte-level BPE does).
    pub fn allowed(&self, state: &ScoreState, budget: usize) -> Vec<(usize, u32, ScoreState)> {
        self.candidates
            .iter()
            .enumerate()
            .filter_map(|(col, (id, t))| state.accepts(t).map(|s| (col, *id, s)))
            .filter(|(_, _, s)| s.min_chars_to_close() < budget)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, text: &str) -> Option<ScoreState> {
        ScoreState::new(n).accepts(text)
    }

    #[test]
    fn accepts_exactly_the_grammar() {
        assert!(run(2, "8, 3}").unwrap().closed());
        assert!(run(2, " 10,1 }").unwrap().closed());
        assert!(run(3, "1, 2").is_some_and(|s| !s.closed()));
        assert!(run(2, "8}").is_none(), "too few scores");
        assert!(run(2, "8, 3, 4").is_none(), "too many scores");
        assert!(run(1, "0}").is_none());
        assert!(run(1, "11}").is_none());
        assert!(run(1, "05").is_none());
        assert!(run(2, "8,,3}").is_none());
        assert!(run(2, "8  ,3}").is_none(), "space runs are cut so the block stays short");
        assert!(run(1, "7}x").is_none(), "nothing after the block");
        assert!(run(2, "7 3}").is_none(), "numbers need commas between them");
    }

    /// Every path through the grammar with one character per token: (longest closed
    /// path, whether some path is still open at `limit` characters).
    fn walk(n: usize, limit: usize) -> (usize, bool) {
        let alphabet = ['1', '0', '9', ',', ' ', '}'];
        let mut frontier = vec![ScoreState::new(n)];
        let mut longest = 0;
        for len in 1..=limit {
            let mut next = Vec::new();
            for state in &frontier {
                for c in alphabet {
                    let mut s = state.clone();
                    if s.feed(c) {
                        if s.closed() {
                            longest = len;
                        } else {
                            next.push(s);
                        }
                    }
                }
            }
            frontier = next;
        }
        (longest, !frontier.is_empty())
    }

    #[test]
    fn the_longest_block_is_what_the_reserve_covers() {
        for n in 1..=4 {
            let (longest, open) = walk(n, ScoreState::longest_block_chars(n));
            assert_eq!(longest, ScoreState::longest_block_chars(n), "n = {n}");
            assert!(!open, "n = {n}: a block can still be open after the reserve");
        }
    }

    #[test]
    fn a_digit_by_digit_vocabulary_always_closes_within_its_budget() {
        // Tokens of one character each, the worst case for the budget.
        let texts: Vec<String> = ["0", "1", "2", "9", ",", " ", "}", "x"].iter().map(|s| s.to_string()).collect();
        let vocab = ScoreVocab::new(&texts);
        for n in 1..=3 {
            for budget in 2 * n..=ScoreState::longest_block_chars(n) + 2 {
                // Whatever the sampler picks among the allowed tokens, the block closes.
                let mut frontier = vec![(ScoreState::new(n), budget)];
                while let Some((state, left)) = frontier.pop() {
                    let allowed = vocab.allowed(&state, left);
                    assert!(!allowed.is_empty(), "n = {n}, budget {budget}: stuck at {state:?} with {left} left");
                    for (_, _, s) in allowed {
                        if !s.closed() {
                            frontier.push((s, left - 1));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_closed_block_parses() {
        // Walk all short strings over the alphabet; each accepted, closed one must parse.
        let alphabet = ['1', '0', '5', ',', ' ', '}'];
        let mut frontier = vec![(String::new(), ScoreState::new(2))];
        for _ in 0..8 {
            let mut next = Vec::new();
            for (text, state) in &frontier {
                for c in alphabet {
                    let mut s = state.clone();
                    if s.feed(c) {
                        let t = format!("{text}{c}");
                        if s.closed() {
                            let parsed = verdict_core::parse::parse_scores(&format!("\\boxed{{{t}"), 2);
                            assert!(parsed.is_ok(), "{t:?} closed but does not parse");
                        } else {
                            next.push((t, s));
                        }
                    }
                }
            }
            frontier = next;
        }
    }
}
