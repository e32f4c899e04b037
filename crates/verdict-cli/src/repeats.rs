//! Ids a file repeats, found in bounded memory, whatever the file's size: each item leaves
//! a 20-byte record (a hash of its id, its line, a hash of its content); records are sorted
//! in runs of [`RUN`] and spilled to anonymous temporary files, then merged in id order.
//! Within one id the first line stands; a later line with the same content is an exact
//! repeat, one with other content is a bad line. `verdict submit` checks a file this way
//! before it sends anything, so a 10M-line file costs it a few MB of memory and 200 MB of
//! temporary disk instead of 300 MB of memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

/// Records sorted in memory before a run is spilled (5 MB).
const RUN: usize = 1 << 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    id: u64,
    line: u32,
    content: u64,
}

impl Rec {
    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.id.to_le_bytes())?;
        w.write_all(&self.line.to_le_bytes())?;
        w.write_all(&self.content.to_le_bytes())
    }

    fn read(r: &mut impl Read) -> std::io::Result<Option<Rec>> {
        let mut b = [0u8; 20];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        Ok(Some(Rec { id: word(0), line: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()), content: word(12) }))
    }
}

/// What a file repeats.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repeats {
    /// (line, the first line with that id) for each line that reuses an id with other content.
    pub conflicts: Vec<(usize, usize)>,
    /// Lines that repeat an earlier item exactly.
    pub exact: usize,
}

/// Collects the records, then finds the repeats.
#[derive(Default)]
pub struct Seen {
    buf: Vec<Rec>,
    runs: Vec<File>,
}

impl Seen {
    pub fn add(&mut self, id_hash: u64, line: usize, content_hash: u64) -> std::io::Result<()> {
        self.buf.push(Rec { id: id_hash, line: line as u32, content: content_hash });
        if self.buf.len() >= RUN {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.buf.sort_unstable();
        let mut w = BufWriter::new(tempfile::tempfile()?);
        for r in &self.buf {
            r.write(&mut w)?;
        }
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        self.runs.push(file);
        self.buf.clear();
        Ok(())
    }

    /// Merge the runs in id order (then line order) and compare each id's lines with its first.
    pub fn repeats(mut self) -> std::io::Result<Repeats> {
        if !self.runs.is_empty() && !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf.sort_unstable();
        let mut readers: Vec<BufReader<File>> = self.runs.into_iter().map(BufReader::new).collect();
        let mut memory = self.buf.into_iter();
        // The next record of each run (the in-memory one is run `readers.len()`).
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(rec) = Rec::read(r)? {
                heap.push(Reverse((rec, i)));
            }
        }
        let mem = readers.len();
        if let Some(rec) = memory.next() {
            heap.push(Reverse((rec, mem)));
        }
        let mut out = Repeats::default();
        let mut first: Option<Rec> = None;
        while let Some(Reverse((rec, i))) = heap.pop() {
            let next = if i == mem { memory.next() } else { Rec::read(&mut readers[i])? };
            if let Some(n) = next {
                heap.push(Reverse((n, i)));
            }
            match first {
                Some(f) if f.id == rec.id => {
                    if f.content == rec.content {
                        out.exact += 1;
                    } else {
                        out.conflicts.push((rec.line as usize, f.line as usize));
                    }
                }
                _ => first = Some(rec),
            }
        }
        out.conflicts.sort_unstable();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answers in memory and across spilled runs.
    #[test]
    fn repeats_are_found_across_runs() {
        let check = |n: usize| {
            let mut s = Seen::default();
            for line in 1..=n {
                // Every 7th line reuses the id of the line 3 before it: same content when the
                // line is even, other content when odd.
                let (id, content) = if line % 7 == 0 { ((line - 3) as u64, if line % 2 == 0 { (line - 3) as u64 } else { 1 << 40 }) } else { (line as u64, line as u64) };
                s.add(id.wrapping_mul(0x9E37_79B9_7F4A_7C15), line, content).unwrap();
            }
            s.repeats().unwrap()
        };
        let small = check(100);
        assert_eq!(small.exact + small.conflicts.len(), 14);
        assert!(small.conflicts.contains(&(7, 4)) && !small.conflicts.iter().any(|c| c.0 == 14), "{small:?}");
        let big = check(RUN * 2 + 1000);
        assert_eq!(big.exact + big.conflicts.len(), (RUN * 2 + 1000) / 7);
        assert!(big.conflicts.iter().all(|&(l, f)| l % 7 == 0 && l % 2 == 1 && f == l - 3));
        assert_eq!(big.conflicts.len(), (1..=RUN * 2 + 1000).filter(|l| l % 7 == 0 && l % 2 == 1).count());
    }
}
