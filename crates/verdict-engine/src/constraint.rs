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

    /// The most tokens a block over n responses can take from here (one character each).
    pub fn worst_case_tokens(n: usize) -> usize {
        4 * n + 1
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

    /// The tokens allowed in `state`: position in `ids()`, token id, and the state it leads to.
    pub fn allowed(&self, state: &ScoreState) -> Vec<(usize, u32, ScoreState)> {
        self.candidates
            .iter()
            .enumerate()
            .filter_map(|(col, (id, t))| state.accepts(t).map(|s| (col, *id, s)))
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
