//! Splitting the bytes read from a child's pipe into lines, with a cap on the length of one
//! line.
//!
//! Every place that reads lines from a pipe (worker answers, worker and command stderr) goes
//! through [`LineSplitter`], so that a child that writes a huge line, or never writes a
//! newline at all, costs at most the cap in memory. This module must never hold more than
//! the cap of an unfinished line, and never drop or reorder a byte of a line within the cap.

use memchr::{memchr, memrchr};

/// What [`LineSplitter::push`] hands on, in the order the bytes came.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// One or more complete lines, each ending with `\n` and none longer than the cap (the
    /// `\n` not counted; a `\r` before it is part of the line and counted).
    Lines(Vec<u8>),
    /// The first `cap` bytes of a line longer than the cap, handed on as soon as the line
    /// goes over the cap (its newline may not have come yet). The rest of that line, up to
    /// and including its newline, is dropped.
    Cut(Vec<u8>),
}

/// Splits a stream of bytes into lines of at most `cap` bytes. See the module docs.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    cap: usize,
    /// The start of a line whose newline has not come yet (never more than `cap` bytes).
    partial: Vec<u8>,
    /// The current line went over the cap: its bytes are dropped up to its newline.
    dropping: bool,
    /// Complete lines gathered during one `push`.
    lines: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for lines of at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> LineSplitter {
        LineSplitter {
            cap,
            partial: Vec::new(),
            dropping: false,
            lines: Vec::new(),
        }
    }

    /// Splits the next bytes read and hands each piece to `emit`, in order: complete lines
    /// are gathered into one [`Piece::Lines`] per call (or per run between two cut lines).
    /// Stops and returns `false` as soon as `emit` returns `false`.
    pub(crate) fn push(&mut self, data: &[u8], mut emit: impl FnMut(Piece) -> bool) -> bool {
        let mut rest = data;
        let mut whole_run_tried = false;
        while !rest.is_empty() {
            if self.dropping {
                match memchr(b'\n', rest) {
                    Some(p) => {
                        self.dropping = false;
                        rest = &rest[p + 1..];
                        continue;
                    }
                    None => break,
                }
            }
            if !whole_run_tried {
                // The common case, checked once per call: when everything up to the last
                // newline is within the cap, so is every line in it: take them all at once.
                whole_run_tried = true;
                if let Some(last) = memrchr(b'\n', rest) {
                    if self.partial.len() + last <= self.cap {
                        self.lines.append(&mut self.partial);
                        self.lines.extend_from_slice(&rest[..=last]);
                        rest = &rest[last + 1..];
                        continue;
                    }
                }
            }
            let found = memchr(b'\n', rest);
            match found {
                Some(p) if self.partial.len() + p <= self.cap => {
                    self.lines.append(&mut self.partial);
                    self.lines.extend_from_slice(&rest[..=p]);
                    rest = &rest[p + 1..];
                }
                _ => {
                    let room = self.cap - self.partial.len();
                    let end = found.unwrap_or(rest.len());
                    if end <= room {
                        // No newline yet, and the line is still within the cap.
                        self.partial.extend_from_slice(rest);
                        break;
                    }
                    if !self.lines.is_empty()
                        && !emit(Piece::Lines(std::mem::take(&mut self.lines)))
                    {
                        return false;
                    }
                    self.partial.extend_from_slice(&rest[..room]);
                    if !emit(Piece::Cut(std::mem::take(&mut self.partial))) {
                        return false;
                    }
                    match found {
                        Some(p) => rest = &rest[p + 1..],
                        None => {
                            self.dropping = true;
                            break;
                        }
                    }
                }
            }
        }
        if self.lines.is_empty() {
            return true;
        }
        emit(Piece::Lines(std::mem::take(&mut self.lines)))
    }

    /// At end of file: the start of a last line that no newline ended (empty if there is
    /// none, or if that line went over the cap and was already handed on as cut).
    pub(crate) fn finish(self) -> Vec<u8> {
        if self.dropping {
            Vec::new()
        } else {
            self.partial
        }
    }
}

/// The lines of a [`Piece::Lines`] chunk, each without its `\n`.
pub(crate) fn each_line(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    chunk
        .strip_suffix(b"\n")
        .unwrap_or(chunk)
        .split(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` one after the other; returns the pieces and what `finish` left.
    fn split(cap: usize, parts: &[&[u8]]) -> (Vec<Piece>, Vec<u8>) {
        let mut s = LineSplitter::new(cap);
        let mut pieces = Vec::new();
        for part in parts {
            assert!(s.push(part, |p| {
                pieces.push(p);
                true
            }));
        }
        (pieces, s.finish())
    }

    fn lines(text: &[u8]) -> Piece {
        Piece::Lines(text.to_vec())
    }

    fn cut(text: &[u8]) -> Piece {
        Piece::Cut(text.to_vec())
    }

    #[test]
    fn complete_lines_come_in_one_piece_per_read() {
        let (pieces, rest) = split(10, &[b"a\nbb\nccc\n"]);
        assert_eq!(pieces, [lines(b"a\nbb\nccc\n")]);
        assert!(rest.is_empty());
        let chunk = b"a\nbb\n";
        assert_eq!(each_line(chunk).collect::<Vec<_>>(), [&b"a"[..], b"bb"]);
    }

    #[test]
    fn a_line_split_across_reads_is_joined() {
        let (pieces, rest) = split(10, &[b"ab", b"c\nd", b"e\n"]);
        assert_eq!(pieces, [lines(b"abc\n"), lines(b"de\n")]);
        assert!(rest.is_empty());
    }

    #[test]
    fn no_trailing_newline_leaves_the_last_line_to_finish() {
        let (pieces, rest) = split(10, &[b"a\nlast"]);
        assert_eq!(pieces, [lines(b"a\n")]);
        assert_eq!(rest, b"last");
        let (pieces, rest) = split(10, &[b"", b"only"]);
        assert!(pieces.is_empty());
        assert_eq!(rest, b"only");
    }

    #[test]
    fn crlf_lines_keep_their_cr_for_the_caller_and_it_counts_against_the_cap() {
        let (pieces, _) = split(4, &[b"abc\r\nabcd\r\nz\n"]);
        assert_eq!(pieces, [lines(b"abc\r\n"), cut(b"abcd"), lines(b"z\n")]);
        let chunk = b"abc\r\n";
        assert_eq!(each_line(chunk).collect::<Vec<_>>(), [&b"abc\r"[..]]);
    }

    #[test]
    fn a_line_over_the_cap_is_cut_at_once_and_the_rest_of_it_dropped() {
        // Exactly the cap is a line; one more byte is a cut line.
        let (pieces, rest) = split(3, &[b"abc\nabcd\nok\n"]);
        assert_eq!(pieces, [lines(b"abc\n"), cut(b"abc"), lines(b"ok\n")]);
        assert!(rest.is_empty());
        // Cut as soon as it goes over, before its newline comes; the rest is dropped, in
        // whatever reads it comes.
        let mut s = LineSplitter::new(3);
        let mut pieces = Vec::new();
        s.push(b"x\nab", |p| {
            pieces.push(p);
            true
        });
        assert_eq!(pieces, [lines(b"x\n")]);
        s.push(b"cdef", |p| {
            pieces.push(p);
            true
        });
        assert_eq!(pieces, [lines(b"x\n"), cut(b"abc")]);
        s.push(b"gh", |p| {
            pieces.push(p);
            true
        });
        s.push(b"i\nnext\n", |p| {
            pieces.push(p);
            true
        });
        assert_eq!(pieces, [lines(b"x\n"), cut(b"abc"), cut(b"nex")]);
        // A flood without any newline holds at most the cap and leaves nothing at the end.
        let flood = vec![b'z'; 100_000];
        let (pieces, rest) = split(1024, &[&flood, &flood]);
        assert_eq!(pieces, [cut(&flood[..1024])]);
        assert!(rest.is_empty());
    }

    #[test]
    fn any_input_in_any_reads_matches_the_simple_rule() {
        // A fixed-seed generator: the same cases on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        for _ in 0..500 {
            let cap = 1 + next(8) as usize;
            let len = next(60) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| [b'a', b'b', b'\r', b'\n'][next(4) as usize])
                .collect();
            // The rule: every line within the cap whole, every longer line cut to the cap,
            // an unended last line left for `finish`.
            let mut want_lines = Vec::new();
            let mut want_cuts = Vec::new();
            let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            let last = parts.pop().unwrap_or_default();
            for line in parts {
                if line.len() <= cap {
                    want_lines.push(line.to_vec());
                } else {
                    want_cuts.push(line[..cap].to_vec());
                }
            }
            let want_rest = if last.len() <= cap {
                last.to_vec()
            } else {
                Vec::new()
            };
            if last.len() > cap {
                want_cuts.push(last[..cap].to_vec());
            }
            // Fed in random reads.
            let mut s = LineSplitter::new(cap);
            let (mut got_lines, mut got_cuts) = (Vec::new(), Vec::new());
            let mut at = 0;
            while at < input.len() {
                let end = (at + 1 + next(10) as usize).min(input.len());
                s.push(&input[at..end], |p| {
                    match p {
                        Piece::Lines(chunk) => {
                            got_lines.extend(each_line(&chunk).map(<[u8]>::to_vec))
                        }
                        Piece::Cut(start) => got_cuts.push(start),
                    }
                    true
                });
                at = end;
            }
            assert_eq!(got_lines, want_lines, "cap {cap}, input {input:?}");
            assert_eq!(got_cuts, want_cuts, "cap {cap}, input {input:?}");
            assert_eq!(s.finish(), want_rest, "cap {cap}, input {input:?}");
        }
    }

    #[test]
    fn a_false_emit_stops_the_push() {
        let mut s = LineSplitter::new(2);
        let mut seen = 0;
        assert!(!s.push(b"a\nlong\nb\n", |_| {
            seen += 1;
            false
        }));
        assert_eq!(seen, 1);
    }
}
