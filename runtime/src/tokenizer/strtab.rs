//! Many short strings in one buffer, found by position or by content.
//!
//! A 49k-token vocabulary held as `Vec<String>` plus `HashMap<String, u32>` (and the merges
//! as another `HashMap<String, u32>`, the pieces as `Vec<Vec<u8>>`) is ≈ 200k small heap
//! blocks, ≈ 15 MB resident for a 135M-parameter model whose other non-weight state is a
//! few MB. Here a table is one byte buffer, one offset array and one hash index of `u32`s.

use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};

/// Byte strings `0..len()` in push order, with an optional content index.
#[derive(Debug, Default)]
pub struct ByteTab {
    buf: Vec<u8>,
    ends: Vec<u32>,
}

impl ByteTab {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.ends
            .push(u32::try_from(self.buf.len()).expect("string table over 4 GiB"));
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.buf[start..end])
    }

    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// UTF-8 strings with a content index: `find(s)` is the first position holding `s`.
#[derive(Default)]
pub struct StrTab {
    bytes: ByteTab,
    index: HashTable<u32>,
    state: RandomState,
}

impl std::fmt::Debug for StrTab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrTab").field("len", &self.len()).finish()
    }
}

impl StrTab {
    pub fn with_capacity(n: usize) -> StrTab {
        StrTab {
            bytes: ByteTab {
                buf: Vec::new(),
                ends: Vec::with_capacity(n),
            },
            index: HashTable::with_capacity(n),
            state: RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        // Every entry was pushed as a whole `&str`, so its bounds are char boundaries.
        self.bytes
            .get(i)
            .map(|b| std::str::from_utf8(b).expect("entries are pushed as str"))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// Position of `s` (the first one pushed, if pushed twice).
    pub fn find(&self, s: &str) -> Option<&u32> {
        let h = self.state.hash_one(s);
        self.index
            .find(h, |&i| self.bytes.get(i as usize) == Some(s.as_bytes()))
    }

    /// Appends `s` and returns its position; a duplicate is stored but not indexed.
    pub fn push(&mut self, s: &str) -> u32 {
        let i = self.len() as u32;
        let dup = self.find(s).is_some();
        self.bytes.push(s.as_bytes());
        if !dup {
            let h = self.state.hash_one(s);
            let (bytes, state) = (&self.bytes, &self.state);
            self.index.insert_unique(h, i, |&j| {
                state.hash_one(
                    std::str::from_utf8(bytes.get(j as usize).unwrap_or(&[])).unwrap_or(""),
                )
            });
        }
        i
    }

    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        let (bytes, state) = (&self.bytes, &self.state);
        self.index.shrink_to_fit(|&j| {
            state.hash_one(std::str::from_utf8(bytes.get(j as usize).unwrap_or(&[])).unwrap_or(""))
        });
    }
}

impl std::ops::Index<usize> for StrTab {
    type Output = str;
    fn index(&self, i: usize) -> &str {
        self.get(i).expect("string table index out of range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_content_and_position() {
        let mut t = StrTab::with_capacity(2);
        assert_eq!(t.push("ab"), 0);
        assert_eq!(t.push(""), 1);
        assert_eq!(t.push("▁é"), 2);
        assert_eq!(t.push("ab"), 3);
        t.shrink_to_fit();
        assert_eq!(t.find("ab"), Some(&0));
        assert_eq!(t.find(""), Some(&1));
        assert_eq!(t.find("▁é"), Some(&2));
        assert_eq!(t.find("a"), None);
        assert_eq!(&t[2], "▁é");
        assert_eq!(t.get(3), Some("ab"));
        assert_eq!(t.get(4), None);
        assert_eq!(t.iter().collect::<Vec<_>>(), ["ab", "", "▁é", "ab"]);
    }

    #[test]
    fn byte_tab_keeps_invalid_utf8() {
        let mut b = ByteTab::default();
        b.push(&[0xff, 0x00]);
        b.push(&[]);
        assert_eq!(b.get(0), Some(&[0xff, 0x00][..]));
        assert_eq!(b.get(1), Some(&[][..]));
        assert_eq!(b.get(2), None);
    }
}
