//! The SentencePiece processor: piece tables from the `ModelProto`, then `Encode` = normalizer,
//! the model's encoder (unigram or BPE), and the processor's pass (runs of unknown pieces merged
//! into one, byte fallback).

use super::normalizer::CharsMap;
use super::{ModelProto, PieceType};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// A loaded SentencePiece model (unigram or BPE): normalizer + encoder, same output as `sentencepiece` 0.2.3.
pub struct SentencePiece {
    pub(super) path: String,
    pub(super) proto: ModelProto,
    /// normal, user-defined and unused pieces (the ones BPE merges may produce)
    pub(super) pieces: HashMap<String, u32>,
    /// control, unknown and byte pieces
    pub(super) reserved: HashMap<String, u32>,
    pub(super) unk_id: u32,
    /// user-defined pieces, matched whole (longest first) and never merged
    pub(super) user_defined: std::collections::HashSet<Vec<u8>>,
    pub(super) user_max_len: usize,
    /// longest normal/user-defined/unused piece in bytes (bounds the unigram lattice)
    pub(super) piece_max_len: usize,
    /// every proper prefix of those pieces: the unigram lattice stops where none continues
    pub(super) piece_prefixes: std::collections::HashSet<String>,
    /// min score over NORMAL pieces, initialised as C++ does (FLT_MAX)
    pub(super) min_score: f32,
    pub(super) charsmap: Option<CharsMap>,
}

impl SentencePiece {
    /// Loads a `.model` file; any problem is `Error::Checkpoint` naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref();
        let path_s = p.display().to_string();
        let buf = std::fs::read(p).map_err(|e| Error::Checkpoint(format!("cannot read SentencePiece model {path_s}: {e}")))?;
        Self::from_bytes(&buf, &path_s)
    }

    /// Builds from the serialized proto; `name` is used in error messages.
    pub fn from_bytes(buf: &[u8], name: &str) -> Result<Self> {
        let bad = |m: String| Error::Checkpoint(format!("{name} is not a usable SentencePiece model: {m}"));
        let proto = ModelProto::parse(buf).map_err(bad)?;
        if proto.pieces.is_empty() {
            return Err(bad("no pieces".into()));
        }
        if !matches!(proto.trainer_spec.model_type, 1 | 2) {
            return Err(bad(format!(
                "model_type {} is not supported (1 unigram and 2 BPE are)",
                proto.trainer_spec.model_type
            )));
        }
        let mut pieces = HashMap::new();
        let mut reserved = HashMap::new();
        let mut unk_id = None;
        let mut user_defined = std::collections::HashSet::new();
        let mut bytes_seen = [false; 256];
        for (i, sp) in proto.pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| bad("too many pieces".into()))?;
            if sp.piece.is_empty() {
                return Err(bad(format!("piece {i} is empty")));
            }
            let normal = matches!(sp.kind, PieceType::Normal | PieceType::UserDefined | PieceType::Unused);
            let map = if normal { &mut pieces } else { &mut reserved };
            if map.insert(sp.piece.clone(), id).is_some() {
                return Err(bad(format!("piece `{}` is defined twice", sp.piece)));
            }
            match sp.kind {
                PieceType::UserDefined => {
                    user_defined.insert(sp.piece.as_bytes().to_vec());
                }
                PieceType::Unknown => {
                    if unk_id.replace(id).is_some() {
                        return Err(bad("more than one unknown piece".into()));
                    }
                }
                PieceType::Byte => {
                    if !proto.trainer_spec.byte_fallback {
                        return Err(bad(format!("byte piece `{}` although byte_fallback is false", sp.piece)));
                    }
                    let b = piece_to_byte(&sp.piece).ok_or_else(|| bad(format!("byte piece `{}` is invalid", sp.piece)))?;
                    bytes_seen[b as usize] = true;
                }
                _ => {}
            }
        }
        let unk_id = unk_id.ok_or_else(|| bad("no unknown piece".into()))?;
        if proto.trainer_spec.byte_fallback && bytes_seen.iter().any(|s| !s) {
            return Err(bad("byte_fallback is true but the 256 byte pieces are not all there".into()));
        }
        let user_max_len = user_defined.iter().map(|u| u.len()).max().unwrap_or(0);
        let piece_max_len = pieces.keys().map(|p| p.len()).max().unwrap_or(0);
        let piece_prefixes = pieces
            .keys()
            .flat_map(|p| p.char_indices().skip(1).map(move |(i, _)| p[..i].to_string()))
            .collect();
        // sentencepiece 0.2.3 refuses NaN / infinite scores in unigram models.
        if proto.trainer_spec.model_type == 1 {
            if let Some((i, p)) = proto.pieces.iter().enumerate().find(|(_, p)| !p.score.is_finite()) {
                return Err(bad(format!("piece {i} (`{}`) has score {}", p.piece, p.score)));
            }
        }
        let mut min_score = f32::MAX;
        for p in proto.pieces.iter().filter(|p| p.kind == PieceType::Normal) {
            min_score = min_score.min(p.score);
        }
        let cm = &proto.normalizer_spec.precompiled_charsmap;
        let charsmap = if cm.is_empty() { None } else { Some(CharsMap::decode(cm).map_err(bad)?) };
        Ok(SentencePiece {
            path: name.to_string(),
            proto,
            pieces,
            reserved,
            unk_id,
            user_defined,
            user_max_len,
            piece_max_len,
            piece_prefixes,
            min_score,
            charsmap,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }
    pub fn piece_size(&self) -> usize {
        self.proto.pieces.len()
    }
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// `PieceToId`: reserved pieces first, then normal ones, else the unknown id.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.reserved.get(piece).or_else(|| self.pieces.get(piece)).copied().unwrap_or(self.unk_id)
    }

    /// `IdToPiece`; an id outside the vocabulary is `Error::Input`.
    pub fn id_to_piece(&self, id: u32) -> Result<&str> {
        self.proto
            .pieces
            .get(id as usize)
            .map(|p| p.piece.as_str())
            .ok_or_else(|| Error::Input(format!("id {id} is outside the vocabulary of {} ({} pieces)", self.path, self.piece_size())))
    }

    pub(super) fn kind(&self, id: u32) -> PieceType {
        self.proto.pieces.get(id as usize).map_or(PieceType::Normal, |p| p.kind)
    }

    /// Longest user-defined piece at the start of `s`.
    pub(super) fn user_prefix(&self, s: &[u8]) -> Option<usize> {
        (1..=self.user_max_len.min(s.len())).rev().find(|&n| self.user_defined.contains(&s[..n]))
    }

    pub(super) fn ckpt(&self, m: impl std::fmt::Display) -> Error {
        Error::Checkpoint(format!("{}: {m}", self.path))
    }

    /// `SentencePieceProcessor::Encode`: (piece, id) pairs, as `sp.Encode(text, out_type=str|int)`.
    pub fn encode(&self, text: &str) -> Result<Vec<(String, u32)>> {
        let normalized = self.normalize(text)?;
        let raw = if self.proto.trainer_spec.model_type == 1 { self.unigram(&normalized) } else { self.bpe(&normalized) };
        let byte_fallback = self.proto.trainer_spec.byte_fallback;
        let mut out: Vec<(String, u32)> = Vec::with_capacity(raw.len());
        let mut prev_unk = false;
        let mut consumed = 0usize;
        for (w, id) in raw {
            let kind = self.kind(id);
            let unk = kind == PieceType::Unknown;
            if kind == PieceType::Control {
                // Has no surface: SentencePiece does not advance over it, then fails its final check.
                out.push((w.to_string(), id));
            } else {
                if unk && byte_fallback {
                    for b in w.bytes() {
                        let p = format!("<0x{b:02X}>");
                        let bid = self.piece_to_id(&p);
                        out.push((p, bid));
                    }
                } else if unk && prev_unk {
                    if let Some(last) = out.last_mut() {
                        last.0.push_str(w);
                    }
                } else {
                    out.push((w.to_string(), id));
                }
                consumed += w.len();
            }
            prev_unk = unk;
        }
        if consumed != normalized.len() {
            return Err(Error::Input(format!("{}: not all normalized characters were consumed (a control piece matched the text)", self.path)));
        }
        Ok(out)
    }

    pub fn encode_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode(text)?.into_iter().map(|(_, id)| id).collect())
    }

    pub fn encode_pieces(&self, text: &str) -> Result<Vec<String>> {
        Ok(self.encode(text)?.into_iter().map(|(p, _)| p).collect())
    }
}

/// `<0xAB>` → 0xAB, exactly the 256 spellings SentencePiece writes.
fn piece_to_byte(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_model_bytes_are_errors() {
        for b in [&b""[..], b"\x0a", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0b\x00", b"garbage!"] {
            assert!(matches!(SentencePiece::from_bytes(b, "x.model"), Err(Error::Checkpoint(_))));
        }
    }
}
