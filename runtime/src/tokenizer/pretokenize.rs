//! Pre-tokenization of byte-level BPE vocabularies: splitting text into
//! "words" before BPE merges, the way llama.cpp's `unicode_regex_split` does.
//!
//! A pre-tokenizer is a list of regexes applied one after the other; each
//! regex splits every fragment produced by the previous one, and the text
//! between matches becomes fragments too (nothing is ever dropped, so the
//! concatenation of the words is always the input text).
//!
//! As in llama.cpp, two regexes are recognised by their exact source text and
//! run by hand-written splitters (GPT-2's and LLaMA-3's); these use real
//! Unicode categories. Every other regex runs on a *collapsed* copy of the
//! text in which each non-ASCII code point is replaced by a marker for its
//! category (letter, number, punctuation, mark, symbol, other) and each
//! non-ASCII whitespace by `\x0B`, and `\p{..}` in the regex is rewritten to
//! match those markers plus the ASCII members of the category. That keeps the
//! matching identical to llama.cpp's `std::regex` path.

use super::unicode::{self, Flags};

/// GPT-2's regex (llama.cpp's spelling, which the hand-written splitter keys on).
pub const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// LLaMA-3's regex with the case-insensitive group spelt out.
pub const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// LLaMA-3's regex as written in tokenizer.json.
pub const LLAMA3_RE_ORIG: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const UFAKZEKA_RE: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const MINICPM5_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const EXAONE_MOE_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const JAIS2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
const PORO_RE: &str = " ?[^(\\s|.,!?…。，、।۔،)]+";
const DEEPSEEK3_MAIN_RE: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const TEKKEN_RE: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_RE: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SEED_CODER_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BAILING_RE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Per-pre-type settings that llama.cpp derives from `tokenizer.ggml.pre`.
#[derive(Clone, Debug)]
pub struct PreTypeInfo {
    pub regexes: Vec<&'static str>,
    /// Use a word directly when it is itself a token (LLaMA-3 style).
    pub ignore_merges: bool,
    /// Apply llama.cpp's `clean_up_tokenization_spaces` passes on decode.
    pub clean_spaces: bool,
    /// Default for `add_bos` when the GGUF does not say.
    pub add_bos: bool,
    /// The pre-type forces "no BOS token" (ChatGLM).
    pub no_bos: bool,
}

/// Settings for a `tokenizer.ggml.pre` name (`None`/empty means "default");
/// `None` for names llama.cpp would reject too.
pub fn pre_type_info(pre: Option<&str>) -> Option<PreTypeInfo> {
    let pre = pre.unwrap_or("");
    let info = |regexes: Vec<&'static str>| PreTypeInfo {
        regexes,
        ignore_merges: false,
        clean_spaces: true,
        add_bos: false,
        no_bos: false,
    };
    let mut i = match pre {
        "" | "default" => info(vec![
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2_RE,
            r"\p{N}+",
            "[0-9][0-9][0-9]",
        ]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => {
            let mut i = info(vec![LLAMA3_RE]);
            i.ignore_merges = true;
            i.add_bos = true;
            i
        }
        "dbrx" | "smaug-bpe" => info(vec![LLAMA3_RE]),
        "glm4" | "chatglm-bpe" => {
            let mut i = info(vec![LLAMA3_RE]);
            i.no_bos = true;
            i
        }
        "deepseek-coder" => {
            let mut i = info(vec![
                "[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                "[一-龥ࠀ-一가-퟿]+",
                r"\p{N}",
            ]);
            i.clean_spaces = false;
            i
        }
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
            let mut i = info(vec![r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3_MAIN_RE]);
            i.clean_spaces = false;
            i
        }
        "falcon" => info(vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, "[0-9][0-9][0-9]"]),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            info(vec![r"\p{N}", GPT2_RE])
        }
        "command-r" | "smollm" => {
            let mut i = info(vec![r"\p{N}", GPT2_RE]);
            i.clean_spaces = false;
            i
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "jina-v1-en" | "jina-v2-code"
        | "roberta-bpe" | "mpt" | "olmo" | "jais" => info(vec![GPT2_RE]),
        "trillion" | "granite-docling" => {
            let mut i = info(vec![GPT2_RE]);
            i.clean_spaces = false;
            i
        }
        "stablelm2" | "megrez" => info(vec![QWEN2_RE]),
        "qwen2" | "deepseek-r1-qwen" | "hunyuan" | "kormo" | "f2llmv2" | "grok-2"
        | "solar-open" => {
            let mut i = info(vec![QWEN2_RE]);
            i.clean_spaces = false;
            i
        }
        "poro-chat" => {
            let mut i = info(vec![PORO_RE]);
            i.clean_spaces = false;
            i
        }
        "bloom" | "gpt3-finnish" => info(vec![PORO_RE]),
        "viking" => {
            let mut i = info(vec![PORO_RE, r"\p{N}"]);
            i.clean_spaces = false;
            i
        }
        "tekken" => {
            let mut i = info(vec![TEKKEN_RE]);
            i.clean_spaces = false;
            i.ignore_merges = true;
            i.add_bos = true;
            i
        }
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
            let mut i = info(vec![GPT4O_RE]);
            i.clean_spaces = false;
            i
        }
        "qwen35" => {
            let mut i = info(vec![QWEN35_RE]);
            i.clean_spaces = false;
            i
        }
        "ufakzeka" => {
            let mut i = info(vec![UFAKZEKA_RE]);
            i.clean_spaces = false;
            i
        }
        "laguna" => {
            let mut i = info(vec![r"[^\n]+|[\n]+", QWEN2_RE]);
            i.clean_spaces = false;
            i
        }
        "minicpm5" => {
            let mut i = info(vec![r"\p{N}{1,3}", MINICPM5_RE]);
            i.ignore_merges = true;
            i
        }
        "exaone-moe" => info(vec![EXAONE_MOE_RE]),
        "jais-2" => info(vec![JAIS2_RE]),
        "seed-coder" => {
            let mut i = info(vec![SEED_CODER_RE]);
            i.clean_spaces = false;
            i
        }
        "bailingmoe" | "bailingmoe2" | "llada-moe" => {
            let mut i = info(vec![BAILING_RE]);
            i.clean_spaces = false;
            i
        }
        _ => return None,
    };
    i.regexes.shrink_to_fit();
    Some(i)
}

enum Rule {
    Gpt2,
    Llama3,
    Regex {
        re: fancy_regex::Regex,
        collapsed: bool,
    },
}

/// A compiled pre-tokenizer: an ordered list of splitting rules.
pub struct PreTokenizer {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for PreTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreTokenizer({} rules)", self.rules.len())
    }
}

const UCATS: [(&str, u16); 10] = [
    (r"\p{N}", Flags::NUMBER),
    (r"\p{L}", Flags::LETTER),
    (r"\p{P}", Flags::PUNCTUATION),
    (r"\p{M}", Flags::ACCENT_MARK),
    (r"\p{S}", Flags::SYMBOL),
    (r"\p{Lu}", Flags::LETTER),
    (r"\p{Ll}", Flags::LETTER),
    (r"\p{Lt}", Flags::LETTER),
    (r"\p{Lm}", Flags::LETTER),
    (r"\p{Lo}", Flags::LETTER),
];

/// Marker char standing for a non-ASCII code point of a category in the
/// collapsed text (private-use code points: they never collide with ASCII).
fn marker(cat: u16) -> char {
    let off = match cat {
        Flags::NUMBER => 1,
        Flags::LETTER => 2,
        Flags::PUNCTUATION => 3,
        Flags::ACCENT_MARK => 4,
        Flags::SYMBOL => 5,
        _ => 0,
    };
    char::from_u32(0xE0D0 + off).unwrap_or('\u{E0D0}')
}

/// ASCII members of a category, as a regex class body (llama.cpp's table).
fn ascii_members(cat: u16) -> &'static str {
    match cat {
        Flags::NUMBER => r"\x30-\x39",
        Flags::LETTER => r"\x41-\x5A\x61-\x7A",
        Flags::PUNCTUATION => r"\x21-\x23\x25-\x2A\x2C-\x2F\x3A-\x3B\x3F-\x40\x5B-\x5D\x5F\x7B\x7D",
        // `~` joined the list in later llama.cpp (it is Sm in Unicode).
        Flags::SYMBOL => r"\x24\x2B\x3C-\x3E\x5E\x60\x7C\x7E",
        _ => "",
    }
}

/// Rewrite `\p{..}` of a regex for the collapsed text.
fn collapse_regex(expr: &str) -> String {
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < expr.len() {
        let c = bytes[i];
        if c == b'[' && (i == 0 || bytes[i - 1] != b'\\') {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && c == b']' && i > 0 && bytes[i - 1] != b'\\' {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if c == b'\\' && expr[i..].starts_with("\\p{") {
            if let Some((pat, cat)) = UCATS.iter().find(|(p, _)| expr[i..].starts_with(p)) {
                if !inside {
                    out.push('[');
                }
                out.push_str(&format!("\\x{{{:X}}}", marker(*cat) as u32));
                out.push_str(ascii_members(*cat));
                if !inside {
                    out.push(']');
                }
                i += pat.len();
                continue;
            }
        }
        // Copy one whole UTF-8 char.
        let ch_len = expr[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&expr[i..i + ch_len]);
        i += ch_len;
    }
    out
}

impl PreTokenizer {
    /// Compile a list of regexes (in llama.cpp's spelling).
    pub fn new(regexes: &[&str]) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(regexes.len());
        for &expr in regexes {
            let rule = if expr == GPT2_RE {
                Rule::Gpt2
            } else if expr == LLAMA3_RE || expr == LLAMA3_RE_ORIG {
                Rule::Llama3
            } else {
                let collapsed = UCATS.iter().any(|(p, _)| expr.contains(p));
                let src = if collapsed {
                    collapse_regex(expr)
                } else {
                    expr.to_string()
                };
                let re = fancy_regex::Regex::new(&src)
                    .map_err(|e| format!("pre-tokenizer regex {expr:?}: {e}"))?;
                Rule::Regex { re, collapsed }
            };
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Split `text` into words (code point runs whose concatenation is `text`).
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let cpts: Vec<char> = text.chars().collect();
        if cpts.is_empty() {
            return Vec::new();
        }
        let mut offsets = vec![cpts.len()];
        let mut collapsed: Option<Vec<char>> = None;
        let mut plain: Option<Vec<char>> = None;
        for rule in &self.rules {
            offsets = match rule {
                Rule::Gpt2 => split_gpt2(&cpts, &offsets),
                Rule::Llama3 => split_llama3(&cpts, &offsets),
                Rule::Regex {
                    re,
                    collapsed: true,
                } => {
                    let view = collapsed.get_or_insert_with(|| collapse_text(&cpts));
                    split_regex(re, view, &offsets)
                }
                Rule::Regex {
                    re,
                    collapsed: false,
                } => {
                    let view = plain.get_or_insert_with(|| {
                        cpts.iter()
                            .map(|&c| {
                                if !c.is_ascii() && unicode::flags(c).is_whitespace() {
                                    '\x0B'
                                } else {
                                    c
                                }
                            })
                            .collect()
                    });
                    split_regex(re, view, &offsets)
                }
            };
        }
        // Code point lengths -> &str slices of the original text.
        let mut words = Vec::with_capacity(offsets.len());
        let mut byte_pos = 0;
        let mut cp_pos = 0;
        for len in offsets {
            let nbytes: usize = cpts[cp_pos..cp_pos + len]
                .iter()
                .map(|c| c.len_utf8())
                .sum();
            words.push(&text[byte_pos..byte_pos + nbytes]);
            byte_pos += nbytes;
            cp_pos += len;
        }
        words
    }
}

fn collapse_text(cpts: &[char]) -> Vec<char> {
    cpts.iter()
        .map(|&c| {
            if c.is_ascii() {
                c
            } else {
                let f = unicode::flags(c);
                if f.is_whitespace() {
                    '\x0B'
                } else {
                    marker(f.category())
                }
            }
        })
        .collect()
}

/// Run a regex over each fragment; unmatched gaps become fragments too.
fn split_regex(re: &fancy_regex::Regex, view: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let frag: String = view[start..start + len].iter().collect();
        // byte offset -> char index within the fragment
        let mut char_at = vec![0usize; frag.len() + 1];
        let mut ci = 0;
        for (bi, ch) in frag.char_indices() {
            for k in 0..ch.len_utf8() {
                char_at[bi + k] = ci;
            }
            ci += 1;
        }
        char_at[frag.len()] = ci;
        let mut prev = 0usize;
        for m in re.find_iter(&frag) {
            // A backtracking-limit error ends the matching of this fragment;
            // the rest is kept as one piece, so nothing is lost.
            let Ok(m) = m else { break };
            let (ms, me) = (char_at[m.start()], char_at[m.end()]);
            if ms > prev {
                out.push(ms - prev);
            }
            if me > ms {
                out.push(me - ms);
            }
            prev = prev.max(me);
        }
        if prev < len {
            out.push(len - prev);
        }
        start += len;
    }
    out
}

/// Accessor for one fragment: code points and flags, with `NONE`/`None`
/// outside it (the hand-written splitters test "end of fragment" that way).
struct Frag<'a> {
    cpts: &'a [char],
    ini: usize,
    end: usize,
}

impl Frag<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        if self.ini <= pos && pos < self.end {
            Some(self.cpts[pos])
        } else {
            None
        }
    }
    #[inline]
    fn flags(&self, pos: usize) -> Flags {
        self.cpt(pos).map(unicode::flags).unwrap_or(Flags::NONE)
    }
}

struct Emitter<'o> {
    out: &'o mut Vec<usize>,
    prev_end: usize,
}

impl Emitter<'_> {
    /// Close the current word at `end`; returns its length.
    fn add(&mut self, end: usize) -> usize {
        let len = end.saturating_sub(self.prev_end);
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

/// Match `'s|'t|'re|'ve|'m|'ll|'d` (optionally case-insensitive) at `pos`;
/// returns the match length.
fn contraction(f: &Frag, pos: usize, ci: bool) -> Option<usize> {
    if f.cpt(pos) != Some('\'') || pos + 1 >= f.end {
        return None;
    }
    let low = |c: Option<char>| c.map(|c| if ci { unicode::to_lower(c) } else { c });
    let n1 = low(f.cpt(pos + 1));
    if matches!(n1, Some('s' | 't' | 'm' | 'd')) {
        return Some(2);
    }
    if pos + 2 < f.end {
        let n2 = low(f.cpt(pos + 2));
        if matches!(
            (n1, n2),
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
        ) {
            return Some(3);
        }
    }
    None
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn split_gpt2(cpts: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let f = Frag {
            cpts,
            ini: start,
            end: start + len,
        };
        start += len;
        let mut em = Emitter {
            out: &mut out,
            prev_end: f.ini,
        };
        let mut pos = f.ini;
        while pos < f.end {
            let cpt = f.cpt(pos);
            let flags = f.flags(pos);
            if let Some(n) = contraction(&f, pos, false) {
                pos += em.add(pos + n);
                continue;
            }
            let is_space = cpt == Some(' ');
            let mut f2 = if is_space { f.flags(pos + 1) } else { flags };
            if f2.is_letter() {
                pos += is_space as usize;
                while f2.is_letter() {
                    pos += 1;
                    f2 = f.flags(pos);
                }
                em.add(pos);
                continue;
            }
            if f2.is_number() {
                pos += is_space as usize;
                while f2.is_number() {
                    pos += 1;
                    f2 = f.flags(pos);
                }
                em.add(pos);
                continue;
            }
            let other = |fl: Flags| {
                !(fl.is_whitespace() || fl.is_letter() || fl.is_number()) && fl.is_some()
            };
            if other(f2) {
                pos += is_space as usize;
                while other(f2) {
                    pos += 1;
                    f2 = f.flags(pos);
                }
                em.add(pos);
                continue;
            }
            let mut n_ws = 0;
            while f.flags(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            // \s+(?!\S): leave the last space for the following word
            if n_ws > 1 && f.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                em.add(pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                em.add(pos);
                continue;
            }
            pos += 1;
            em.add(pos);
        }
    }
    out
}

/// LLaMA-3's regex (see [`LLAMA3_RE`]).
fn split_llama3(cpts: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let f = Frag {
            cpts,
            ini: start,
            end: start + len,
        };
        start += len;
        let mut em = Emitter {
            out: &mut out,
            prev_end: f.ini,
        };
        let mut pos = f.ini;
        while pos < f.end {
            let cpt = f.cpt(pos);
            let flags = f.flags(pos);
            if let Some(n) = contraction(&f, pos, true) {
                pos += em.add(pos + n);
                continue;
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(matches!(cpt, Some('\r' | '\n')) || flags.is_number())
                && (flags.is_letter() || f.flags(pos + 1).is_letter())
            {
                pos += 1;
                while f.flags(pos).is_letter() {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            // \p{N}{1,3}
            if flags.is_number() {
                let mut ini = pos;
                while f.flags(pos).is_number() {
                    pos += 1;
                    if pos - ini >= 3 {
                        em.add(pos);
                        ini = pos;
                    }
                }
                em.add(pos);
                continue;
            }
            //  ?[^\s\p{L}\p{N}]+[\r\n]*
            let is_space = cpt == Some(' ');
            let mut f2 = if is_space { f.flags(pos + 1) } else { flags };
            let other = |fl: Flags| {
                !(fl.is_whitespace() || fl.is_letter() || fl.is_number()) && fl.is_some()
            };
            // llama.cpp tests the first char's own flags for "inside the text"
            if !(f2.is_whitespace() || f2.is_letter() || f2.is_number()) && flags.is_some() {
                pos += is_space as usize;
                while other(f2) {
                    pos += 1;
                    f2 = f.flags(pos);
                }
                while matches!(f.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                em.add(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_rn_end = 0;
            while f.flags(pos + n_ws).is_whitespace() {
                if matches!(f.cpt(pos + n_ws), Some('\r' | '\n')) {
                    last_rn_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // \s*[\r\n]+
            if last_rn_end > 0 {
                pos = last_rn_end;
                em.add(pos);
                continue;
            }
            // \s+(?!\S)
            if n_ws > 1 && f.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                em.add(pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                em.add(pos);
                continue;
            }
            pos += 1;
            em.add(pos);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(regexes: &[&str], s: &str) -> Vec<String> {
        let p = PreTokenizer::new(regexes).expect("compiles");
        p.split(s).into_iter().map(str::to_string).collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(split(&[GPT2_RE], "Hello world"), ["Hello", " world"]);
        assert_eq!(
            split(&[GPT2_RE], "  Hello  world"),
            [" ", " Hello", " ", " world"]
        );
        assert_eq!(split(&[GPT2_RE], "don't"), ["don", "'t"]);
        assert_eq!(split(&[GPT2_RE], "a   "), ["a", "   "]);
    }

    #[test]
    fn smollm_digits_split_individually() {
        assert_eq!(
            split(&[r"\p{N}", GPT2_RE], "12345 678"),
            ["1", "2", "3", "4", "5", " ", "6", "7", "8"]
        );
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            split(&[LLAMA3_RE], "Hello 12345!\n\n x"),
            ["Hello", " ", "123", "45", "!\n\n", " x"]
        );
        assert_eq!(split(&[LLAMA3_RE], "I'M"), ["I", "'M"]);
    }

    #[test]
    fn collapsed_regex_matches_custom_gpt2() {
        // The generic regex path must agree with the hand-written splitter.
        let generic = PreTokenizer {
            rules: vec![Rule::Regex {
                re: fancy_regex::Regex::new(&collapse_regex(GPT2_RE)).expect("compiles"),
                collapsed: true,
            }],
        };
        for s in [
            "Hello  world 123 héllo, 😀 x\t\ty  ",
            "don't stop\n\n  me",
            "a\u{3000}b c  ",
        ] {
            let a: Vec<_> = generic.split(s);
            let b = split(&[GPT2_RE], s);
            assert_eq!(a, b, "{s:?}");
        }
    }

    #[test]
    fn all_known_pre_types_compile() {
        for name in [
            "default",
            "llama3",
            "smollm",
            "gpt-2",
            "qwen2",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "tekken",
            "gpt-4o",
            "poro-chat",
            "viking",
            "seed-coder",
            "bailingmoe",
            "starcoder",
        ] {
            let info = pre_type_info(Some(name)).expect(name);
            let p = PreTokenizer::new(&info.regexes).expect(name);
            let text = "Héllo, wörld! 12345 ½ 😀\r\n  x";
            assert_eq!(p.split(text).concat(), text, "{name}");
        }
        assert!(pre_type_info(Some("no-such-pre")).is_none());
    }
}
