//! SentencePiece's normalizer: the precompiled char map (`<u32 LE trie size><Darts double-array
//! units><NUL-separated replacements>`), user-defined pieces matched whole, dummy prefix,
//! extra-whitespace removal and `▁` escaping.

use super::SentencePiece;
use crate::error::Result;

pub(super) const SPACE_SYMBOL: &str = "\u{2581}";

pub(super) struct CharsMap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

impl CharsMap {
    pub(super) fn decode(blob: &[u8]) -> std::result::Result<Self, String> {
        if blob.len() <= 4 {
            return Err("precompiled_charsmap is broken (shorter than its header)".into());
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if 4 + trie_size > blob.len() {
            return Err("precompiled_charsmap is broken (trie larger than the blob)".into());
        }
        let trie = &blob[4..4 + trie_size];
        let units = trie.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(CharsMap { units, replacements: blob[4 + trie_size..].to_vec() })
    }

    /// Darts-clone `commonPrefixSearch`, keeping the longest match: (matched bytes, replacement).
    fn longest_prefix(&self, key: &[u8]) -> std::result::Result<Option<(usize, &[u8])>, String> {
        let unit = |pos: usize| self.units.get(pos).copied().ok_or_else(|| "precompiled_charsmap trie index out of range".to_string());
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let label = |u: u32| u & ((1 << 31) | 0xff);
        let mut pos = 0usize;
        pos ^= offset(unit(pos)?);
        let mut best: Option<(usize, usize)> = None;
        for (i, &b) in key.iter().enumerate() {
            pos ^= b as usize;
            let u = unit(pos)?;
            if label(u) != u32::from(b) {
                break;
            }
            pos ^= offset(u);
            if has_leaf(u) {
                let value = (unit(pos)? & ((1u32 << 31) - 1)) as usize;
                best = Some((i + 1, value));
            }
        }
        match best {
            None => Ok(None),
            Some((len, value)) => {
                let rest = self.replacements.get(value..).ok_or("precompiled_charsmap replacement offset out of range")?;
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                Ok(Some((len, &rest[..end])))
            }
        }
    }
}

/// Length of the valid UTF-8 character at the start of `b`, if any.
pub(super) fn utf8_char_len(b: &[u8]) -> Option<usize> {
    let n = match *b.first()? {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    std::str::from_utf8(b.get(..n)?).ok().map(|_| n)
}

impl SentencePiece {
    /// `Normalizer::NormalizePrefix`: (replacement bytes, consumed input bytes).
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> Result<(&'a [u8], usize)> {
        if let Some(n) = self.user_prefix(input) {
            return Ok((&input[..n], n));
        }
        if let Some(cm) = &self.charsmap {
            if let Some((len, rep)) = cm.longest_prefix(input).map_err(|m| self.ckpt(m))? {
                return Ok((rep, len));
            }
        }
        Ok(match utf8_char_len(input) {
            Some(n) => (&input[..n], n),
            // A malformed byte becomes U+FFFD and is consumed alone.
            None => ("\u{FFFD}".as_bytes(), 1),
        })
    }

    /// SentencePiece's `Normalizer::Normalize` (the text the encoder sees, with `▁` for spaces).
    pub fn normalize(&self, text: &str) -> Result<String> {
        let spec = &self.proto.normalizer_spec;
        let suffix = self.proto.trainer_spec.treat_whitespace_as_suffix;
        let mut input = text.as_bytes();
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 3);
        if input.is_empty() {
            return Ok(String::new());
        }
        if spec.remove_extra_whitespaces {
            while !input.is_empty() {
                let (rep, n) = self.normalize_prefix(input)?;
                if rep != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return Ok(String::new());
        }
        let ws: &[u8] = if spec.escape_whitespaces { SPACE_SYMBOL.as_bytes() } else { b" " };
        if !suffix && spec.add_dummy_prefix {
            out.extend_from_slice(ws);
        }
        let mut prev_space = spec.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut rep, n) = self.normalize_prefix(input)?;
            while prev_space && rep.first() == Some(&b' ') {
                rep = &rep[1..];
            }
            if !rep.is_empty() {
                for &c in rep {
                    if spec.escape_whitespaces && c == b' ' {
                        out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                    } else {
                        out.push(c);
                    }
                }
                prev_space = rep.last() == Some(&b' ');
            }
            input = &input[n..];
            if !spec.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if spec.remove_extra_whitespaces {
            while out.ends_with(ws) {
                out.truncate(out.len() - ws.len());
            }
        }
        if suffix && spec.add_dummy_prefix {
            out.extend_from_slice(ws);
        }
        String::from_utf8(out).map_err(|_| self.ckpt("the precompiled_charsmap produced invalid UTF-8"))
    }
}
