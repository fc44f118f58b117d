//! Tokenizer: text <-> token ids, bit-for-bit like llama.cpp's `llama-vocab`.
//!
//! Two vocabulary kinds are supported, chosen by `tokenizer.ggml.model`:
//! - `"gpt2"`: byte-level BPE. Text is split into words by the pre-tokenizer
//!   named by `tokenizer.ggml.pre` ([`pretokenize`]), each word's UTF-8 bytes
//!   are mapped to GPT-2's printable byte alphabet and merged by merge rank
//!   (lowest rank first, leftmost on ties).
//! - `"llama"`: SentencePiece-style BPE. Spaces become `▁`, a space is
//!   prefixed to every text fragment at the start or after a special token
//!   (when `add_space_prefix`), pairs merge by highest token score (leftmost on
//!   ties), and characters without a token fall back to `<0xXX>` byte tokens.
//!
//! Special tokens (control, user-defined and unknown types) are split out of
//! the text *before* either algorithm runs, longest first, like llama.cpp's
//! `tokenizer_st_partition`; control/unknown ones only when `parse_special`,
//! user-defined ones always.
//!
//! Invariants:
//! - `encode` never panics, whatever the input; every id it returns is
//!   `< n_vocab()`.
//! - For a byte-level vocabulary, `decode(encode(s, false, false)) == s` for any
//!   `s` that contains no user-defined token text (and, if the vocabulary
//!   cleans spaces on decode, none of the patterns that cleaning rewrites).
//! - Pieces are raw bytes: one token may hold part of a UTF-8 character, so
//!   streaming output must go through [`StreamDecoder`].

pub mod pretokenize;
mod stream;
mod strtab;
pub mod unicode;

pub use stream::StreamDecoder;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use strtab::{ByteTab, StrTab};

use lpuc_ir::gguf::GgufFile;
use pretokenize::{pre_type_info, PreTokenizer};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Token attributes (llama.cpp's `llama_token_attr` bits).
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
}

/// Everything the tokenizer needs from a GGUF file, as plain data.
///
/// `Option` fields mean "the key is absent": the tokenizer then applies the
/// same default llama.cpp applies for that vocabulary kind (e.g. BOS = 1 and
/// `add_bos = true` for `"llama"` vocabularies, `add_bos = false` for most
/// `"gpt2"` ones, EOT detected from token text).
#[derive(Clone, Debug, Default)]
pub struct VocabData {
    /// `tokenizer.ggml.model`: `"gpt2"` or `"llama"`.
    pub model: String,
    /// `tokenizer.ggml.pre` (byte-level BPE only).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (empty: all normal).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores` (empty: all 0).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges` (`"left right"`, byte-level BPE only).
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("unsupported tokenizer model {0:?} (supported: \"gpt2\", \"llama\")")]
    UnsupportedModel(String),
    #[error("unknown pre-tokenizer type {0:?}")]
    UnknownPreTokenizer(String),
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("duplicate token {text:?} at ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("{what} has {got} entries, fewer than the {n_vocab} tokens")]
    ShortArray {
        what: &'static str,
        got: usize,
        n_vocab: usize,
    },
    #[error("{0} is true but the vocabulary has no {1} token")]
    MissingSpecial(&'static str, &'static str),
    #[error("pre-tokenizer: {0}")]
    Regex(String),
    #[error("byte-level BPE vocabulary has no merges")]
    NoMerges,
    #[error("GGUF metadata: {0}")]
    Gguf(String),
}

#[derive(Debug)]
enum Kind {
    /// Byte-level BPE (`gpt2`).
    Bpe {
        pre: PreTokenizer,
        ignore_merges: bool,
    },
    /// SentencePiece BPE (`llama`).
    Spm,
}

/// A loaded vocabulary; cheap to share (`&Tokenizer` is all encode/decode need).
#[derive(Debug)]
pub struct Tokenizer {
    kind: Kind,
    model: String,
    pre_name: Option<String>,
    /// Token texts by id, indexed by content (`texts.find(text)` is the id).
    texts: StrTab,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    /// Merge keys `"left right"` (llama.cpp splits merges at the first space
    /// after position 0; byte-level symbols never contain a space) and their
    /// ranks, `bpe_rank[bpe_keys.find(key)]`.
    bpe_keys: StrTab,
    bpe_rank: Vec<u32>,
    /// Special-token ids, longest text first (ties: lower id first).
    special_cache: Vec<u32>,
    /// Piece of every token with specials rendered (llama.cpp's piece cache).
    pieces: ByteTab,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
}

/// A piece of the input after special-token partitioning.
#[derive(Clone, Copy, Debug)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

fn type_to_attr(t: i32) -> u32 {
    match t {
        token_type::UNKNOWN => attr::UNKNOWN,
        token_type::UNUSED => attr::UNUSED,
        token_type::NORMAL => attr::NORMAL,
        token_type::CONTROL => attr::CONTROL,
        token_type::USER_DEFINED => attr::USER_DEFINED,
        token_type::BYTE => attr::BYTE,
        _ => attr::UNDEFINED,
    }
}

/// `s` up to its first NUL, as a C string reader sees it.
fn until_nul(s: &str) -> &str {
    s.find('\0').map_or(s, |i| &s[..i])
}

/// Byte value of a `<0xXX>` token text.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Typed access to GGUF metadata, implemented by whatever GGUF reader the
/// caller has. A key that is absent *or* of another type reads as `None`.
pub trait VocabMetadata {
    fn meta_str(&self, key: &str) -> Option<&str>;
    fn meta_u32(&self, key: &str) -> Option<u32>;
    fn meta_bool(&self, key: &str) -> Option<bool>;
    fn meta_str_array(&self, key: &str) -> Option<Vec<&str>>;
    fn meta_i32_array(&self, key: &str) -> Option<Vec<i32>>;
    fn meta_f32_array(&self, key: &str) -> Option<Vec<f32>>;
}

impl VocabMetadata for GgufFile {
    fn meta_str(&self, key: &str) -> Option<&str> {
        self.get_str(key)
    }
    fn meta_u32(&self, key: &str) -> Option<u32> {
        self.get_u32(key)
    }
    fn meta_bool(&self, key: &str) -> Option<bool> {
        self.get_bool(key)
    }
    fn meta_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get_str_array(key)
    }
    fn meta_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get_i32_array(key)
    }
    fn meta_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get_f32_array(key)
    }
}

impl VocabData {
    /// Read the tokenizer metadata of a GGUF file.
    pub fn from_gguf_path(path: &std::path::Path) -> Result<Self, TokenizerError> {
        let f = GgufFile::open(path)
            .map_err(|e| TokenizerError::Gguf(format!("{}: {e}", path.display())))?;
        Self::from_metadata(&f)
    }

    /// Collect the `tokenizer.*` keys of a GGUF file's metadata.
    pub fn from_metadata(m: &dyn VocabMetadata) -> Result<Self, TokenizerError> {
        let missing =
            |k: &str| TokenizerError::Gguf(format!("{k} is missing or has the wrong type"));
        let strings = |k: &str| {
            m.meta_str_array(k)
                .map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>())
        };
        Ok(VocabData {
            model: m
                .meta_str("tokenizer.ggml.model")
                .ok_or_else(|| missing("tokenizer.ggml.model"))?
                .to_string(),
            pre: m.meta_str("tokenizer.ggml.pre").map(str::to_string),
            tokens: strings("tokenizer.ggml.tokens")
                .ok_or_else(|| missing("tokenizer.ggml.tokens"))?,
            token_types: m
                .meta_i32_array("tokenizer.ggml.token_type")
                .unwrap_or_default(),
            scores: m
                .meta_f32_array("tokenizer.ggml.scores")
                .unwrap_or_default(),
            merges: strings("tokenizer.ggml.merges").unwrap_or_default(),
            bos: m.meta_u32("tokenizer.ggml.bos_token_id"),
            eos: m.meta_u32("tokenizer.ggml.eos_token_id"),
            eot: m.meta_u32("tokenizer.ggml.eot_token_id"),
            eom: m.meta_u32("tokenizer.ggml.eom_token_id"),
            unk: m.meta_u32("tokenizer.ggml.unknown_token_id"),
            pad: m.meta_u32("tokenizer.ggml.padding_token_id"),
            add_bos: m.meta_bool("tokenizer.ggml.add_bos_token"),
            add_eos: m.meta_bool("tokenizer.ggml.add_eos_token"),
            add_space_prefix: m.meta_bool("tokenizer.ggml.add_space_prefix"),
            chat_template: m.meta_str("tokenizer.chat_template").map(str::to_string),
        })
    }
}

impl Tokenizer {
    /// The tokenizer of an opened GGUF model.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        Self::from_metadata(file)
    }

    /// Open a GGUF model file and load its tokenizer.
    pub fn from_gguf_path(path: &std::path::Path) -> Result<Self, TokenizerError> {
        Self::new(VocabData::from_gguf_path(path)?)
    }

    /// Build the tokenizer from GGUF metadata (see [`VocabMetadata`]).
    pub fn from_metadata(m: &dyn VocabMetadata) -> Result<Self, TokenizerError> {
        Self::new(VocabData::from_metadata(m)?)
    }

    /// Build a tokenizer from vocabulary data, applying llama.cpp's defaults
    /// and its token-text heuristics (EOT/EOG detection).
    pub fn new(v: VocabData) -> Result<Self, TokenizerError> {
        let n = v.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if !v.token_types.is_empty() && v.token_types.len() < n {
            return Err(TokenizerError::ShortArray {
                what: "token_type",
                got: v.token_types.len(),
                n_vocab: n,
            });
        }
        if !v.scores.is_empty() && v.scores.len() < n {
            return Err(TokenizerError::ShortArray {
                what: "scores",
                got: v.scores.len(),
                n_vocab: n,
            });
        }

        let is_bpe = match v.model.as_str() {
            "gpt2" => true,
            "llama" => false,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };

        // Defaults per kind, as llama.cpp sets them before reading the keys.
        let (mut bos, mut eos, mut unk): (Option<u32>, Option<u32>, Option<u32>) = if is_bpe {
            (Some(11), Some(11), None)
        } else {
            (Some(1), Some(2), Some(0))
        };
        let mut add_bos;
        let mut add_eos = false;
        let mut add_space_prefix;
        let clean_spaces;
        let kind;
        let pre_name = v.pre.clone().filter(|p| !p.is_empty());
        if is_bpe {
            let info = pre_type_info(pre_name.as_deref()).ok_or_else(|| {
                TokenizerError::UnknownPreTokenizer(pre_name.clone().unwrap_or_default())
            })?;
            if v.merges.is_empty() {
                return Err(TokenizerError::NoMerges);
            }
            add_space_prefix = false;
            clean_spaces = info.clean_spaces;
            add_bos = info.add_bos;
            if info.no_bos {
                bos = None;
            }
            let pre = PreTokenizer::new(&info.regexes).map_err(TokenizerError::Regex)?;
            kind = Kind::Bpe {
                pre,
                ignore_merges: info.ignore_merges,
            };
        } else {
            add_space_prefix = true;
            clean_spaces = false;
            add_bos = true;
            kind = Kind::Spm;
        }
        if let Some(p) = v.add_space_prefix {
            add_space_prefix = p;
        }

        let mut texts = StrTab::with_capacity(n);
        let mut attrs = Vec::with_capacity(n);
        for (i, t) in v.tokens.iter().enumerate() {
            let id = i as u32;
            // llama.cpp reads token texts as C strings (cut at the first NUL)
            // and renames empty ones so they can never match text.
            let t = until_nul(t);
            let text = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.to_string()
            };
            if let Some(&first) = texts.find(&text) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: id,
                });
            }
            texts.push(&text);
            attrs.push(
                v.token_types
                    .get(i)
                    .map_or(attr::NORMAL, |&t| type_to_attr(t)),
            );
        }
        let scores = if v.scores.is_empty() {
            vec![0.0; n]
        } else {
            v.scores[..n].to_vec()
        };

        let mut bpe_keys = StrTab::with_capacity(0);
        let mut bpe_rank = Vec::new();
        if is_bpe {
            bpe_keys = StrTab::with_capacity(v.merges.len());
            bpe_rank.reserve(v.merges.len());
            for (rank, m) in v.merges.iter().enumerate() {
                // llama.cpp splits at the first space after byte 0 and keys on
                // (left, right); "left right" is then the line itself. A line
                // without a space becomes the pair ("", "").
                let m = until_nul(m);
                let key = if m.as_bytes().iter().skip(1).any(|&b| b == b' ') {
                    m
                } else {
                    " "
                };
                if bpe_keys.find(key).is_none() {
                    bpe_keys.push(key);
                    bpe_rank.push(rank as u32);
                }
            }
        }

        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        bos = in_range(bos);
        eos = in_range(eos);
        unk = in_range(unk);
        if let Some(b) = v.bos {
            if (b as usize) < n {
                bos = Some(b);
            }
        }
        if let Some(e) = v.eos {
            if (e as usize) < n {
                eos = Some(e);
            }
        }
        if let Some(u) = v.unk {
            if (u as usize) < n {
                unk = Some(u);
            }
        }
        let mut eot = in_range(v.eot);
        let mut eom = in_range(v.eom);
        let pad = in_range(v.pad);
        if let Some(b) = v.add_bos {
            add_bos = b;
        }
        if let Some(e) = v.add_eos {
            add_eos = e;
        }
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecial("add_bos_token", "BOS"));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecial("add_eos_token", "EOS"));
        }

        // Auto-detect special tokens by text. llama.cpp walks a hash map, so
        // with several candidates its choice is unspecified; we take the
        // lowest id, which is what llama.cpp picks for SmolLM2 (EOT = 0).
        let mut fim_pad = None;
        let mut fim_rep = None;
        let mut fim_sep = None;
        let mark_control = |attrs: &mut Vec<u32>, id: u32| {
            if let Some(a) = attrs.get_mut(id as usize) {
                *a |= attr::CONTROL;
            }
        };
        for (id, t) in texts.iter().enumerate() {
            let id = id as u32;
            if eot.is_none() && EOT_TEXTS.contains(&t) {
                eot = Some(id);
                mark_control(&mut attrs, id);
            }
            if eom.is_none() && t == "<|eom_id|>" {
                eom = Some(id);
                mark_control(&mut attrs, id);
            }
            if fim_pad.is_none() && FIM_PAD_TEXTS.contains(&t) {
                fim_pad = Some(id);
                mark_control(&mut attrs, id);
            }
            if fim_rep.is_none() && FIM_REP_TEXTS.contains(&t) {
                fim_rep = Some(id);
                mark_control(&mut attrs, id);
            }
            if fim_sep.is_none() && FIM_SEP_TEXTS.contains(&t) {
                fim_sep = Some(id);
                mark_control(&mut attrs, id);
            }
        }
        let mut eog: BTreeSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for (id, t) in texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t) {
                eog.insert(id as u32);
                mark_control(&mut attrs, id as u32);
            }
            // gpt-oss: these are always rendered.
            if matches!(
                t,
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[id] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        // gpt-oss / solar-open: "<|end|>" ends a message, not the generation.
        let find =
            |eog: &BTreeSet<u32>, s: &str| eog.iter().copied().find(|&i| &texts[i as usize] == s);
        let has = |eog: &BTreeSet<u32>, s: &str| find(eog, s).is_some();
        if ((has(&eog, "<|return|>") && has(&eog, "<|call|>"))
            || (has(&eog, "<|calls|>") && has(&eog, "<|flush|>")))
            && has(&eog, "<|end|>")
        {
            if let Some(end) = find(&eog, "<|end|>") {
                eog.remove(&end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if has(&eog, "<|tool_response>") {
            if let Some(s) = find(&eog, "</s>") {
                eog.remove(&s);
                attrs[s as usize] = attr::NORMAL;
            }
        }

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by(|&a, &b| {
            texts[b as usize]
                .len()
                .cmp(&texts[a as usize].len())
                .then(a.cmp(&b))
        });

        let mut tok = Tokenizer {
            kind,
            model: v.model,
            pre_name,
            texts,
            scores,
            attrs,
            bpe_keys,
            bpe_rank,
            special_cache,
            pieces: ByteTab::default(),
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            chat_template: v.chat_template,
        };
        let mut pieces = ByteTab::default();
        for id in 0..n as u32 {
            pieces.push(&tok.compute_piece(id));
        }
        pieces.shrink_to_fit();
        tok.pieces = pieces;
        tok.texts.shrink_to_fit();
        tok.bpe_keys.shrink_to_fit();
        Ok(tok)
    }

    // ---- accessors -------------------------------------------------------

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }
    /// `tokenizer.ggml.model` of the source.
    pub fn model(&self) -> &str {
        &self.model
    }
    /// `tokenizer.ggml.pre` of the source, if any.
    pub fn pre(&self) -> Option<&str> {
        self.pre_name.as_deref()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn token (from the GGUF or detected from token text).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// True for every token that ends generation in llama.cpp (EOS, EOT, EOM
    /// and tokens such as `<|im_end|>`, `<|endoftext|>`, FIM pad/repo/sep).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    /// Control or unknown token: not rendered by `decode_with(.., false)`.
    pub fn is_control(&self, id: u32) -> bool {
        self.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0
    }
    /// Attribute bits ([`attr`]) of a token; `UNDEFINED` when out of range.
    pub fn attr(&self, id: u32) -> u32 {
        self.attrs
            .get(id as usize)
            .copied()
            .unwrap_or(attr::UNDEFINED)
    }
    /// The vocabulary text of a token (byte-encoded for `gpt2` vocabularies).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize)
    }
    /// Score of a token (0 when the GGUF has none or the id is out of range).
    pub fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }
    /// Id of a token by its exact vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.texts.find(text).copied()
    }
    /// `tokenizer.chat_template` of the source.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    // ---- encoding --------------------------------------------------------

    /// Tokenize like `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` adds BOS/EOS as the vocabulary asks (`add_bos`/`add_eos`);
    /// `parse_special` turns control-token texts such as `<|im_start|>` into
    /// their single ids (user-defined tokens are always recognised).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let frags = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        match &self.kind {
            Kind::Bpe { pre, ignore_merges } => {
                if add_special && self.add_bos {
                    out.extend(self.bos);
                }
                let mut key = String::new();
                for f in frags {
                    match f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(s, e) => {
                            for word in pre.split(&text[s..e]) {
                                let encoded: String =
                                    word.bytes().map(unicode::byte_to_char).collect();
                                self.bpe_word(&encoded, *ignore_merges, &mut key, &mut out);
                            }
                        }
                    }
                }
                if add_special && self.add_eos {
                    out.extend(self.eos);
                }
            }
            Kind::Spm => {
                let mut prev_special = true;
                if add_special && self.add_bos {
                    out.extend(self.bos);
                }
                for f in frags {
                    match f {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(s, e) => {
                            let mut t = String::with_capacity(e - s + 3);
                            if self.add_space_prefix && prev_special {
                                t.push('▁');
                            }
                            for c in text[s..e].chars() {
                                t.push(if c == ' ' { '▁' } else { c });
                            }
                            self.spm_tokenize(&t, &mut out);
                            prev_special = false;
                        }
                    }
                }
                if add_special && self.add_eos {
                    out.extend(self.eos);
                }
            }
        }
        out
    }

    /// Split special-token texts out of `text`, longest token first; each
    /// token splits every remaining text fragment at all of its occurrences.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0, text.len()));
        for &sid in &self.special_cache {
            let a = self.attrs[sid as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = &self.texts[sid as usize];
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(s, e) if text[*s..*e].contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut s, e) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(rel) = text[s..e].find(needle) {
                    let m = s + rel;
                    if m > s {
                        next.push(Fragment::Text(s, m));
                    }
                    next.push(Fragment::Token(sid));
                    s = m + needle.len();
                }
                if s < e {
                    next.push(Fragment::Text(s, e));
                }
            }
            frags = next;
        }
        frags
    }

    /// Merge one byte-encoded word and append its token ids.
    fn bpe_word(&self, word: &str, ignore_merges: bool, key: &mut String, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if ignore_merges {
            if let Some(&id) = self.texts.find(word) {
                out.push(id);
                return;
            }
        }
        // Symbols are byte ranges of `word`, linked as a list.
        struct Sym {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
        for (i, (start, ch)) in word.char_indices().enumerate() {
            let end = start + ch.len_utf8();
            syms.push(Sym {
                start,
                len: ch.len_utf8(),
                prev: i.checked_sub(1),
                next: if end == word.len() { None } else { Some(i + 1) },
            });
        }
        // Min-heap on (rank, left index): lowest rank first, leftmost on ties.
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        let rank_of = |key: &mut String, l: &Sym, r: &Sym| -> Option<u32> {
            key.clear();
            key.push_str(&word[l.start..l.start + l.len]);
            key.push(' ');
            key.push_str(&word[r.start..r.start + r.len]);
            self.bpe_keys
                .find(key.as_str())
                .map(|&i| self.bpe_rank[i as usize])
        };
        for i in 1..syms.len() {
            if let Some(rank) = rank_of(key, &syms[i - 1], &syms[i]) {
                heap.push(Reverse((rank, i - 1, i, syms[i - 1].len + syms[i].len)));
            }
        }
        while let Some(Reverse((_, l, r, size))) = heap.pop() {
            let (ln, rn) = (syms[l].len, syms[r].len);
            // Stale entry: one side was merged away or has grown since.
            if ln == 0 || rn == 0 || ln + rn != size {
                continue;
            }
            syms[l].len += rn;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(nx) = syms[r].next {
                syms[nx].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                if let Some(rank) = rank_of(key, &syms[p], &syms[l]) {
                    heap.push(Reverse((rank, p, l, syms[p].len + syms[l].len)));
                }
            }
            if let Some(nx) = syms[l].next {
                if let Some(rank) = rank_of(key, &syms[l], &syms[nx]) {
                    heap.push(Reverse((rank, l, nx, syms[l].len + syms[nx].len)));
                }
            }
        }
        let mut cur = Some(0);
        while let Some(i) = cur {
            let s = &syms[i];
            let text = &word[s.start..s.start + s.len];
            match self.texts.find(text) {
                Some(&id) => out.push(id),
                None => {
                    // llama.cpp looks up each single *byte* of the symbol;
                    // only ASCII bytes can be whole tokens.
                    for b in text.bytes() {
                        if b.is_ascii() {
                            if let Some(&id) = self.texts.find(&(b as char).to_string()) {
                                out.push(id);
                            }
                        }
                    }
                }
            }
            cur = s.next;
        }
    }

    /// Token for a raw byte in an SPM vocabulary (`<0xXX>`, else the byte
    /// itself as text, else UNK).
    fn spm_byte_token(&self, b: u8) -> Option<u32> {
        let hex = format!("<0x{b:02X}>");
        if let Some(&id) = self.texts.find(&hex) {
            return Some(id);
        }
        if b.is_ascii() {
            if let Some(&id) = self.texts.find(&(b as char).to_string()) {
                return Some(id);
            }
        }
        self.unk
    }

    /// SentencePiece BPE on an already space-escaped text.
    fn spm_tokenize<'t>(&self, text: &'t str, out: &mut Vec<u32>) {
        struct Sym {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
        }
        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: usize,
            right: usize,
            size: usize,
        }
        impl Eq for Bigram {}
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Bigram {
            // Highest score first; on ties the leftmost pair.
            fn cmp(&self, o: &Self) -> Ordering {
                self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
            }
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        for (i, (start, ch)) in text.char_indices().enumerate() {
            let end = start + ch.len_utf8();
            syms.push(Sym {
                start,
                len: ch.len_utf8(),
                prev: i.checked_sub(1),
                next: if end == text.len() { None } else { Some(i + 1) },
            });
        }
        if syms.is_empty() {
            return;
        }
        let mut heap = BinaryHeap::new();
        let mut rev_merge: HashMap<&'t str, (usize, usize)> = HashMap::new();
        let try_add = |syms: &[Sym],
                       heap: &mut BinaryHeap<Bigram>,
                       rev: &mut HashMap<&'t str, (usize, usize)>,
                       l: usize,
                       r: usize| {
            let s = syms[l].start;
            let t = &text[s..s + syms[l].len + syms[r].len];
            if let Some(&id) = self.texts.find(t) {
                heap.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    size: t.len(),
                });
                rev.insert(t, (l, r));
            }
        };
        for i in 1..syms.len() {
            try_add(&syms, &mut heap, &mut rev_merge, i - 1, i);
        }
        while let Some(b) = heap.pop() {
            let (ln, rn) = (syms[b.left].len, syms[b.right].len);
            if ln == 0 || rn == 0 || ln + rn != b.size {
                continue;
            }
            syms[b.left].len += rn;
            syms[b.right].len = 0;
            syms[b.left].next = syms[b.right].next;
            if let Some(nx) = syms[b.right].next {
                syms[nx].prev = Some(b.left);
            }
            if let Some(p) = syms[b.left].prev {
                try_add(&syms, &mut heap, &mut rev_merge, p, b.left);
            }
            if let Some(nx) = syms[b.left].next {
                try_add(&syms, &mut heap, &mut rev_merge, b.left, nx);
            }
        }
        // Resegment: a symbol without a token is split back along the merge
        // that made it, down to bytes (explicit stack: no deep recursion).
        let mut cur = Some(0);
        while let Some(i) = cur {
            let mut stack = vec![(syms[i].start, syms[i].len)];
            while let Some((s, len)) = stack.pop() {
                let t = &text[s..s + len];
                if let Some(&id) = self.texts.find(t) {
                    out.push(id);
                } else if let Some(&(l, r)) = rev_merge.get(t).filter(|_| len > 1) {
                    // `r` is pushed first so that `l` is emitted first.
                    let split = syms[r].start;
                    if syms[l].start == s && split > s && split < s + len {
                        stack.push((split, s + len - split));
                        stack.push((s, split - s));
                    } else {
                        out.extend(t.bytes().filter_map(|b| self.spm_byte_token(b)));
                    }
                } else {
                    out.extend(t.bytes().filter_map(|b| self.spm_byte_token(b)));
                }
            }
            cur = syms[i].next;
        }
    }

    // ---- decoding --------------------------------------------------------

    fn compute_piece(&self, id: u32) -> Vec<u8> {
        let i = id as usize;
        let a = self.attrs[i];
        let text = &self.texts[i];
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.kind {
                Kind::Spm => text.replace('▁', " ").into_bytes(),
                Kind::Bpe { .. } => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        match unicode::char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => {
                                // llama.cpp's marker for a char outside the byte alphabet.
                                let mut utf8 = [0u8; 4];
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                for b in c.encode_utf8(&mut utf8).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                    out
                }
            };
        }
        if a & attr::BYTE != 0 {
            return parse_byte_token(text).map(|b| vec![b]).unwrap_or_default();
        }
        Vec::new()
    }

    /// Raw bytes of one token with special tokens rendered as their text
    /// (llama.cpp's `token_to_piece(.., special = true)`); empty for ids out
    /// of range. May be an incomplete UTF-8 sequence.
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).unwrap_or(&[])
    }

    /// Like [`piece`](Self::piece), but control/unknown tokens render as
    /// nothing unless `special`.
    pub fn piece_with(&self, id: u32, special: bool) -> &[u8] {
        if !special && self.is_control(id) {
            return &[];
        }
        self.piece(id)
    }

    /// Bytes of a token sequence like `llama_detokenize(remove_special,
    /// unparse_special)`: optionally drop the BOS/EOS the vocabulary adds,
    /// render control tokens or not, strip the SentencePiece prefix space of
    /// the first piece, and apply the vocabulary's space clean-up.
    pub fn decode_bytes_with(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special
            && self.add_bos
            && ids.first().is_some()
            && ids.first().copied() == self.bos
        {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().is_some() && ids.last().copied() == self.eos
        {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::new();
        for &id in ids {
            let mut p = self.piece_with(id, unparse_special);
            if remove_space {
                if let Some(rest) = p.strip_prefix(b" ") {
                    p = rest;
                }
            }
            remove_space = false;
            out.extend_from_slice(p);
        }
        if self.clean_spaces {
            out = clean_spaces(out);
        }
        out
    }

    /// Text of a token sequence, special tokens rendered, nothing removed;
    /// invalid UTF-8 (a sequence cut mid-character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, false, true)
    }

    /// [`decode_bytes_with`](Self::decode_bytes_with) as a (lossy) `String`.
    pub fn decode_with(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> String {
        match String::from_utf8(self.decode_bytes_with(ids, remove_special, unparse_special)) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// llama.cpp's `clean_up_tokenization_spaces` (three byte-level passes).
fn clean_spaces(t: Vec<u8>) -> Vec<u8> {
    if t.is_empty() {
        return t;
    }
    // 1: " ?", " !", " .", " ," lose the space.
    let mut a = vec![t[0]];
    for i in 1..t.len() {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            a.pop();
        }
        a.push(x);
    }
    // 2: " ' " becomes "'".
    let mut t = a;
    let mut b = vec![t[0]];
    let mut i = 1;
    while i < t.len() {
        let x = t[i];
        if x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            b.pop();
            t[i + 1] = 0;
            b.push(x);
            i += 2;
            continue;
        }
        b.push(x);
        i += 1;
    }
    // 3: " 's", " 'm", " 're", " 've" lose the space.
    let t = b;
    let mut c = vec![t[0]];
    for i in 1..t.len() {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            if x1 == b's' || x1 == b'm' {
                c.pop();
            } else if x1 != b't' && x1 != b'd' && i + 2 < t.len() {
                let x2 = t[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    c.pop();
                }
            }
        }
        c.push(x);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_passes() {
        let f =
            |s: &str| String::from_utf8(clean_spaces(s.as_bytes().to_vec())).unwrap_or_default();
        assert_eq!(f("Hello , world !"), "Hello, world!");
        assert_eq!(f("a ' b"), "a'b");
        assert_eq!(f("it 's we 're I 'd"), "it's we're I 'd");
        assert_eq!(f(""), "");
    }
}
