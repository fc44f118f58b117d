//! Streaming detokenization: turn tokens into text one at a time without
//! ever emitting half of a UTF-8 character.
//!
//! Invariant: the concatenation of everything returned by [`StreamDecoder::push`]
//! and [`StreamDecoder::finish`] equals `String::from_utf8_lossy` of the
//! concatenated pieces; bytes that can never become valid UTF-8 are emitted
//! as U+FFFD as soon as that is certain, so output never stalls.

use super::Tokenizer;

/// Incremental detokenizer (one per generation stream).
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    render_special: bool,
}

impl StreamDecoder {
    /// `render_special`: whether control tokens (e.g. `<|im_end|>`) appear in
    /// the text, like llama.cpp's `token_to_piece(.., special)`.
    pub fn new(render_special: bool) -> Self {
        Self {
            pending: Vec::new(),
            render_special,
        }
    }

    /// Add one token; returns the text that became complete (maybe empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending
            .extend_from_slice(tok.piece_with(id, self.render_special));
        self.take_complete()
    }

    /// Add raw bytes (e.g. a piece obtained elsewhere).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        self.take_complete()
    }

    /// Flush what is left (an incomplete final character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Bytes held back because they may be the start of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid` bytes are valid UTF-8 by the error's contract.
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[start..start + valid],
                    ));
                    start += valid;
                    match e.error_len() {
                        // Definitely invalid: replace and go on.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start += n;
                        }
                        // Incomplete character at the end: wait for more.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
