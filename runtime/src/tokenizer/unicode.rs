//! Unicode character classes and the GPT-2 byte<->char map, as llama.cpp's
//! `unicode.cpp` sees them.
//!
//! Invariants:
//! - every code point has exactly one general-category bit (or `UNDEFINED` for
//!   unassigned ones); `WHITESPACE` is an extra bit taken from the Unicode
//!   `White_Space` property, independent of the category;
//! - positions *outside* the text being split have flags `0` (see
//!   [`Flags::NONE`]), which is how the hand-written splitters detect the end
//!   of a fragment — llama.cpp relies on the same convention, and
//!   `UNDEFINED != 0` so unassigned code points still count as "something".
//!
//! The category tables come from `regex-syntax`'s Unicode data (a recent
//! Unicode version); llama.cpp ships its own generated table. The two only
//! disagree on code points assigned in the newest Unicode versions.

use std::sync::OnceLock;

/// Per-code-point flags, bit-compatible in meaning with llama.cpp's
/// `unicode_cpt_flags` (the numeric values are ours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(pub u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const SEPARATOR: u16 = 0x0008;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const CONTROL: u16 = 0x0080;
    pub const MASK_CATEGORIES: u16 = 0x00FF;
    pub const WHITESPACE: u16 = 0x0100;

    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// True for every code point inside the text (llama.cpp's `as_uint() != 0`).
    #[inline]
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
    #[inline]
    pub fn category(self) -> u16 {
        self.0 & Self::MASK_CATEGORIES
    }
}

const MAX_CODEPOINTS: usize = 0x110000;

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    // The patterns are compile-time constants that regex-syntax always
    // accepts; an empty class would only make classification coarser.
    let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(pattern) else {
        return Vec::new();
    };
    match hir.kind() {
        regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => Vec::new(),
    }
}

fn build_table() -> Vec<u16> {
    let mut table = vec![Flags::UNDEFINED; MAX_CODEPOINTS];
    let cats: [(&str, u16); 7] = [
        (r"\p{L}", Flags::LETTER),
        (r"\p{N}", Flags::NUMBER),
        (r"\p{Z}", Flags::SEPARATOR),
        (r"\p{M}", Flags::ACCENT_MARK),
        (r"\p{P}", Flags::PUNCTUATION),
        (r"\p{S}", Flags::SYMBOL),
        // Cn (unassigned) stays UNDEFINED, like llama.cpp's table; Cs
        // (surrogates) cannot occur in a `char` and regex-syntax rejects it.
        (r"[\p{Cc}\p{Cf}\p{Co}]", Flags::CONTROL),
    ];
    for (pat, flag) in cats {
        for (lo, hi) in class_ranges(pat) {
            for cp in lo..=hi.min(MAX_CODEPOINTS as u32 - 1) {
                table[cp as usize] = flag;
            }
        }
    }
    for (lo, hi) in class_ranges(r"\p{White_Space}") {
        for cp in lo..=hi.min(MAX_CODEPOINTS as u32 - 1) {
            table[cp as usize] |= Flags::WHITESPACE;
        }
    }
    table
}

fn table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(build_table)
}

/// Flags of one code point.
#[inline]
pub fn flags(c: char) -> Flags {
    let t = table();
    Flags(t.get(c as usize).copied().unwrap_or(Flags::UNDEFINED))
}

/// Simple (one code point) lowercase mapping, as llama.cpp's `unicode_tolower`.
pub fn to_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        // Multi-char lowercase (only U+0130) has no simple mapping to a
        // different single char in UnicodeData; keep the original.
        _ => c,
    }
}

/// The GPT-2 byte -> printable char table (`bytes_to_unicode`).
pub fn byte_to_char(b: u8) -> char {
    byte_maps().0[b as usize]
}

/// Inverse of [`byte_to_char`]; `None` for chars that no byte maps to.
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 512 {
        let v = byte_maps().1[cp as usize];
        if v >= 0 {
            return Some(v as u8);
        }
    }
    None
}

fn byte_maps() -> &'static ([char; 256], [i16; 512]) {
    static MAPS: OnceLock<([char; 256], [i16; 512])> = OnceLock::new();
    MAPS.get_or_init(|| {
        let mut fwd = ['\0'; 256];
        let mut inv = [-1i16; 512];
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut n = 0u32;
        for b in 0u32..256 {
            let cp = if printable(b) {
                b
            } else {
                n += 1;
                255 + n
            };
            // cp < 512 by construction (at most 68 non-printable bytes).
            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
            fwd[b as usize] = ch;
            inv[cp as usize] = b as i16;
        }
        (fwd, inv)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert!(flags('a').is_letter());
        assert!(flags('é').is_letter());
        assert!(flags('7').is_number());
        assert!(flags('٣').is_number());
        assert!(flags(' ').is_whitespace());
        assert!(flags('\u{3000}').is_whitespace());
        assert_eq!(flags('😀').category(), Flags::SYMBOL);
        assert_eq!(flags('\u{0301}').category(), Flags::ACCENT_MARK);
        assert_eq!(flags('\u{200D}').category(), Flags::CONTROL);
        assert_eq!(flags('\u{0378}').category(), Flags::UNDEFINED);
        assert_eq!(flags(','), Flags(Flags::PUNCTUATION));
        assert_eq!(flags('$'), Flags(Flags::SYMBOL));
    }

    #[test]
    fn byte_map_roundtrip() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
