//! The official `TextTokenizer` without its normalizer: the CJK pre-tokenizer
//! (`tokenize_by_CJK_char`) and the `encode` / `tokenize` / segment path of `infer_v2`.

use super::py::{py_strip, py_upper};
use super::{split_segments, SentencePiece};
use crate::error::Result;
use std::path::Path;

/// The character ranges `tokenize_by_CJK_char` isolates.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x2E80..=0xA4CF | 0xA840..=0xD7AF | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF65..=0xFFDC | 0x20000..=0x2FFFF)
}

/// `tokenize_by_CJK_char(line)`: every CJK character becomes its own word, the rest stays in
/// runs; each part is stripped and uppercased, empty parts dropped, parts joined by one space.
pub fn tokenize_by_cjk_char(line: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        let s = py_strip(s);
        if !s.is_empty() {
            parts.push(py_upper(s));
        }
    };
    let line = py_strip(line);
    let mut run_start = 0;
    for (i, c) in line.char_indices() {
        if is_cjk(c) {
            push(&line[run_start..i]);
            push(&line[i..i + c.len_utf8()]);
            run_start = i + c.len_utf8();
        }
    }
    push(&line[run_start..]);
    parts.join(" ")
}

/// The official `TextTokenizer` without its normalizer: `bpe.model` + pre-tokenizer + segmenter.
pub struct TextTokenizer {
    sp: SentencePiece,
}

impl TextTokenizer {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(TextTokenizer { sp: SentencePiece::load(path)? })
    }

    pub fn from_sentencepiece(sp: SentencePiece) -> Self {
        TextTokenizer { sp }
    }

    pub fn sentencepiece(&self) -> &SentencePiece {
        &self.sp
    }

    /// `TextTokenizer.encode` with out_type=str|int: empty → nothing; one non-space character
    /// (after strip) → SentencePiece on the raw text; else on `tokenize_by_cjk_char(text)`.
    fn pairs(&self, text: &str) -> Result<Vec<(String, u32)>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if py_strip(text).chars().count() == 1 {
            return self.sp.encode(text);
        }
        self.sp.encode(&tokenize_by_cjk_char(text))
    }

    /// GPT text token ids (no start/stop tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.pairs(text)?.into_iter().map(|(_, id)| id).collect())
    }

    /// Piece strings, as `TextTokenizer.tokenize`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        Ok(self.pairs(text)?.into_iter().map(|(p, _)| p).collect())
    }

    /// `split_segments(tokenize(text), max_tokens)` with each piece mapped by `PieceToId`, as
    /// `infer_v2` does before the GPT.
    pub fn segments(&self, text: &str, max_tokens: usize) -> Result<Vec<Vec<u32>>> {
        let pieces = self.tokenize(text)?;
        Ok(split_segments(&pieces, max_tokens)?
            .into_iter()
            .map(|seg| seg.iter().map(|p| self.sp.piece_to_id(p)).collect())
            .collect())
    }

    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.sp.piece_to_id(piece)
    }

    pub fn id_to_piece(&self, id: u32) -> Result<&str> {
        self.sp.id_to_piece(id)
    }

    pub fn piece_size(&self) -> usize {
        self.sp.piece_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_pre_tokenizer() {
        assert_eq!(tokenize_by_cjk_char("你好世界是 hello world 的中文"), "你 好 世 界 是 HELLO WORLD 的 中 文");
        assert_eq!(tokenize_by_cjk_char("  a\u{3000}b  "), "A B");
        assert_eq!(tokenize_by_cjk_char("\u{1c}x\u{1f}"), "X");
        assert_eq!(tokenize_by_cjk_char("straße"), "STRASSE");
    }
}
