//! IndexTTS2 text front end: the official `bpe.model` (a SentencePiece model) in pure Rust, plus
//! the two pieces of Python the official `TextTokenizer` wraps around it (`tokenize_by_CJK_char`
//! and `split_segments`).
//!
//! Input is **already normalized text**: the official `TextNormalizer` (wetext / WeTextProcessing
//! number and symbol rewriting) is not ported; callers pass its output. What is ported:
//!
//! * [`SentencePiece`]: the `ModelProto` file read by a minimal protobuf reader, SentencePiece's
//!   normalizer (precompiled char map = a Darts double-array trie, dummy prefix, extra-whitespace
//!   removal, `▁` escaping, user-defined symbols) and both encoders the file may ask for. Despite
//!   its name the official IndexTTS2 `bpe.model` is `model_type: UNIGRAM` (12000 pieces, 10198 of
//!   them user-defined: CJK characters and tone-numbered pinyin), so the unigram Viterbi of
//!   `unigram_model.cc` (`EncodeOptimized`) is here as well as the BPE merge loop of
//!   `bpe_model.cc` (highest-score adjacent merge, leftmost on ties, unused pieces re-split,
//!   user-defined pieces frozen); then the processor's pass (runs of unknown pieces merged into
//!   one, byte fallback).
//! * [`tokenize_by_cjk_char`]: split around CJK characters, strip, uppercase, join by one space.
//! * [`split_segments`]: the official segmenter over piece strings, quirks included (a `'` after a
//!   sentence end is kept in both segments, `,` then `-` fallbacks, final merge of short neighbours).
//! * [`TextTokenizer`]: `encode` / `tokenize` / `segments`, the official `TextTokenizer.encode` path.
//!
//! Algorithm version: the encoders follow **sentencepiece 0.2.3** (the official IndexTTS2 package
//! needs `>=0.2.1`; pip installs 0.2.3). 0.2.1's unigram encoder is still 0.2.0's and differs from
//! 0.2.3's: user-defined pieces scored `len * max_score - 0.1` (double) instead of `0.1 * (len - 1)`
//! (float), so 0.2.0/0.2.1 compared candidates in double while 0.2.3 sums in f32, where different
//! paths can tie exactly (e.g. `▁ 5 55` vs `▁ 55 5`); 0.2.3 also rebases path scores past ±1e5 and
//! rejects non-finite scores. Hence pyproject pins `sentencepiece>=0.2.3,<0.3`. 0.2.3's BPE rewrite
//! (flat agenda, bit-level float comparator) and normalizer refactor keep the same outputs; its new
//! 100-level cap on re-splitting unused BPE pieces (a guard against malicious models) is not ported.
//!
//! Uppercasing follows Python 3.11's `str.upper` (Unicode 14): [`py_upper`] skips the few case
//! mappings Rust's newer Unicode tables add (tests compare every code point).
use crate::error::{Error, Result};
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// The official `TextTokenizer.punctuation_marks_tokens`: pieces that end a sentence.
pub const SENTENCE_END_PIECES: &[&str] = &[".", "!", "?", "▁.", "▁?", "▁..."];
/// The official default `max_text_tokens_per_segment`.
pub const DEFAULT_MAX_SEGMENT_TOKENS: usize = 120;

const SPACE_SYMBOL: &str = "\u{2581}";

// ---------------------------------------------------------------------------------------------
// Minimal protobuf reader (proto2 wire format: varint, fixed64, length-delimited, fixed32).

struct Pb<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Val<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Pb<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Pb { buf, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next `(field number, value)`, or None at the end of the message.
    fn next(&mut self) -> std::result::Result<Option<(u64, Val<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        let val = match wire {
            0 => Val::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Val::Other
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                Val::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Val::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(format!("unsupported wire type {w} (field {field})")),
        };
        Ok(Some((field, val)))
    }
}

fn pb_str(v: &Val, what: &str) -> std::result::Result<String, String> {
    match v {
        Val::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8")),
        _ => Err(format!("{what} has the wrong wire type")),
    }
}

fn pb_bytes<'a>(v: &Val<'a>, what: &str) -> std::result::Result<&'a [u8], String> {
    match v {
        Val::Bytes(b) => Ok(b),
        _ => Err(format!("{what} has the wrong wire type")),
    }
}

fn pb_int(v: &Val, what: &str) -> std::result::Result<i64, String> {
    match v {
        Val::Varint(x) => Ok(*x as i64),
        _ => Err(format!("{what} has the wrong wire type")),
    }
}

// ---------------------------------------------------------------------------------------------
// ModelProto

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: i64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// The `TrainerSpec` fields that matter at encode time (plus the special ids, for information).
#[derive(Clone, Debug)]
pub struct TrainerSpec {
    /// 1 unigram, 2 BPE, 3 word, 4 char (proto default: unigram).
    pub model_type: i64,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec { model_type: 1, byte_fallback: false, treat_whitespace_as_suffix: false, unk_id: 0, bos_id: 1, eos_id: 2, pad_id: -1 }
    }
}

#[derive(Clone, Debug)]
pub struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec { name: String::new(), precompiled_charsmap: Vec::new(), add_dummy_prefix: true, remove_extra_whitespaces: true, escape_whitespaces: true }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ModelProto {
    pub pieces: Vec<Piece>,
    pub trainer_spec: TrainerSpec,
    pub normalizer_spec: NormalizerSpec,
}

fn parse_piece(buf: &[u8]) -> std::result::Result<Piece, String> {
    let mut p = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    let mut r = Pb::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => p.piece = pb_str(&v, "piece")?,
            2 => match v {
                Val::Fixed32(b) => p.score = f32::from_bits(b),
                _ => return Err("piece score has the wrong wire type".into()),
            },
            3 => {
                let t = pb_int(&v, "piece type")?;
                p.kind = PieceType::from_proto(t).ok_or_else(|| format!("unknown piece type {t}"))?;
            }
            _ => {}
        }
    }
    Ok(p)
}

fn parse_trainer(buf: &[u8]) -> std::result::Result<TrainerSpec, String> {
    let mut t = TrainerSpec::default();
    let mut r = Pb::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            3 => t.model_type = pb_int(&v, "model_type")?,
            35 => t.byte_fallback = pb_int(&v, "byte_fallback")? != 0,
            24 => t.treat_whitespace_as_suffix = pb_int(&v, "treat_whitespace_as_suffix")? != 0,
            // int32 fields: negative values are sign-extended 64-bit varints.
            40 => t.unk_id = pb_int(&v, "unk_id")? as i32 as i64,
            41 => t.bos_id = pb_int(&v, "bos_id")? as i32 as i64,
            42 => t.eos_id = pb_int(&v, "eos_id")? as i32 as i64,
            43 => t.pad_id = pb_int(&v, "pad_id")? as i32 as i64,
            _ => {}
        }
    }
    Ok(t)
}

fn parse_normalizer(buf: &[u8]) -> std::result::Result<NormalizerSpec, String> {
    let mut n = NormalizerSpec::default();
    let mut r = Pb::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => n.name = pb_str(&v, "normalizer name")?,
            2 => n.precompiled_charsmap = pb_bytes(&v, "precompiled_charsmap")?.to_vec(),
            3 => n.add_dummy_prefix = pb_int(&v, "add_dummy_prefix")? != 0,
            4 => n.remove_extra_whitespaces = pb_int(&v, "remove_extra_whitespaces")? != 0,
            5 => n.escape_whitespaces = pb_int(&v, "escape_whitespaces")? != 0,
            _ => {}
        }
    }
    Ok(n)
}

impl ModelProto {
    /// Parses a serialized `sentencepiece.ModelProto`.
    pub fn parse(buf: &[u8]) -> std::result::Result<Self, String> {
        let mut m = ModelProto::default();
        let mut r = Pb::new(buf);
        while let Some((f, v)) = r.next()? {
            match f {
                1 => m.pieces.push(parse_piece(pb_bytes(&v, "pieces")?)?),
                2 => m.trainer_spec = parse_trainer(pb_bytes(&v, "trainer_spec")?)?,
                3 => m.normalizer_spec = parse_normalizer(pb_bytes(&v, "normalizer_spec")?)?,
                _ => {}
            }
        }
        Ok(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Precompiled char map: <u32 LE trie size><Darts double-array units><NUL-separated replacements>.

struct CharsMap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

impl CharsMap {
    fn decode(blob: &[u8]) -> std::result::Result<Self, String> {
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
fn utf8_char_len(b: &[u8]) -> Option<usize> {
    let n = match *b.first()? {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    std::str::from_utf8(b.get(..n)?).ok().map(|_| n)
}

// ---------------------------------------------------------------------------------------------
// SentencePiece processor (unigram and BPE models)

/// A loaded SentencePiece model (unigram or BPE): normalizer + encoder, same output as `sentencepiece` 0.2.3.
pub struct SentencePiece {
    path: String,
    proto: ModelProto,
    /// normal, user-defined and unused pieces (the ones BPE merges may produce)
    pieces: HashMap<String, u32>,
    /// control, unknown and byte pieces
    reserved: HashMap<String, u32>,
    unk_id: u32,
    /// user-defined pieces, matched whole (longest first) and never merged
    user_defined: std::collections::HashSet<Vec<u8>>,
    user_max_len: usize,
    /// longest normal/user-defined/unused piece in bytes (bounds the unigram lattice)
    piece_max_len: usize,
    /// every proper prefix of those pieces: the unigram lattice stops where none continues
    piece_prefixes: std::collections::HashSet<String>,
    /// min score over NORMAL pieces, initialised as C++ does (FLT_MAX)
    min_score: f32,
    charsmap: Option<CharsMap>,
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

    fn kind(&self, id: u32) -> PieceType {
        self.proto.pieces.get(id as usize).map_or(PieceType::Normal, |p| p.kind)
    }

    /// Longest user-defined piece at the start of `s`.
    fn user_prefix(&self, s: &[u8]) -> Option<usize> {
        (1..=self.user_max_len.min(s.len())).rev().find(|&n| self.user_defined.contains(&s[..n]))
    }

    fn ckpt(&self, m: impl std::fmt::Display) -> Error {
        Error::Checkpoint(format!("{}: {m}", self.path))
    }

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

    /// `bpe_model.cc` `Model::Encode` on normalized text: (piece, id) before the processor's pass.
    fn bpe<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        #[derive(Clone, Copy)]
        struct Sym {
            start: usize,
            len: usize,
            prev: isize,
            next: isize,
            freeze: bool,
        }
        struct Pair {
            score: f32,
            left: usize,
            right: usize,
            size: usize,
        }
        impl PartialEq for Pair {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == std::cmp::Ordering::Equal
            }
        }
        impl Eq for Pair {}
        impl PartialOrd for Pair {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Pair {
            // Highest score first, then the leftmost pair. `+ 0.0` folds -0.0 into 0.0 as C++ `<` does.
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                (self.score + 0.0).total_cmp(&(o.score + 0.0)).then(o.left.cmp(&self.left))
            }
        }

        let bytes = normalized.as_bytes();
        let mut syms: Vec<Sym> = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (len, freeze) = match self.user_prefix(&bytes[pos..]) {
                Some(n) => (n, true),
                None => (utf8_char_len(&bytes[pos..]).unwrap_or(1), false),
            };
            let i = syms.len() as isize;
            syms.push(Sym { start: pos, len, prev: i - 1, next: if pos + len >= bytes.len() { -1 } else { i + 1 }, freeze });
            pos += len;
        }
        if syms.is_empty() {
            return Vec::new();
        }
        let piece = |s: &Sym| &normalized[s.start..s.start + s.len];
        let mut agenda: BinaryHeap<Pair> = BinaryHeap::new();
        let mut rev_merge: HashMap<&'a str, (&'a str, &'a str)> = HashMap::new();
        let add = |syms: &Vec<Sym>, agenda: &mut BinaryHeap<Pair>, rev: &mut HashMap<&'a str, (&'a str, &'a str)>, l: isize, r: isize| {
            if l < 0 || r < 0 {
                return;
            }
            let (a, b) = (syms[l as usize], syms[r as usize]);
            if a.freeze || b.freeze {
                return;
            }
            let merged = &normalized[a.start..a.start + a.len + b.len];
            let Some(&id) = self.pieces.get(merged) else { return };
            agenda.push(Pair { score: self.proto.pieces[id as usize].score, left: l as usize, right: r as usize, size: merged.len() });
            if self.kind(id) == PieceType::Unused {
                rev.insert(merged, (&normalized[a.start..a.start + a.len], &normalized[b.start..b.start + b.len]));
            }
        };
        for i in 1..syms.len() {
            add(&syms, &mut agenda, &mut rev_merge, i as isize - 1, i as isize);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (syms[top.left], syms[top.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
                continue; // stale pair
            }
            syms[top.left].len += r.len;
            syms[top.left].next = r.next;
            if r.next >= 0 {
                syms[r.next as usize].prev = top.left as isize;
            }
            syms[top.right].len = 0;
            let (prev, next) = (syms[top.left].prev, syms[top.left].next);
            add(&syms, &mut agenda, &mut rev_merge, prev, top.left as isize);
            add(&syms, &mut agenda, &mut rev_merge, top.left as isize, next);
        }
        // Unused pieces are split back into the pair that formed them (explicit stack: no recursion).
        let mut out = Vec::new();
        let mut idx: isize = 0;
        while idx >= 0 {
            let s = syms[idx as usize];
            let mut stack = vec![piece(&s)];
            while let Some(w) = stack.pop() {
                let id = self.piece_to_id(w);
                match rev_merge.get(w) {
                    Some(&(a, b)) if self.kind(id) == PieceType::Unused => {
                        stack.push(b);
                        stack.push(a);
                    }
                    _ => out.push((w, id)),
                }
            }
            idx = s.next;
        }
        out
    }

    /// `unigram_model.cc` `Model::EncodeOptimized` as of sentencepiece 0.2.3: Viterbi over all
    /// vocabulary matches, unknown characters at `min_score - 10`, user-defined pieces at
    /// `0.1 * (len - 1)`. Every score and sum is f32 (since 0.2.3 the user-defined score is a float,
    /// so no candidate is widened to double: sums that round to the same f32 tie, and the first
    /// candidate, the one with the earlier start, keeps the slot). When the running score leaves
    /// ±1e5 the frontier is rebased to 0, as the C++ does, so f32 rounding matches there too.
    fn unigram<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            score: f32,
            starts_at: Option<usize>,
        }
        const RESET: f32 = 100_000.0;
        let size = normalized.len();
        let unk_score: f32 = self.min_score - 10.0;
        let mut best = vec![Best { id: self.unk_id, score: 0.0, starts_at: None }; size + 1];
        let mut start = 0;
        let mut frontier = 0usize;
        while start < size {
            let mut till = best[start].score;
            if !(-RESET..=RESET).contains(&till) {
                let offset = till;
                for i in start..=frontier.min(size) {
                    if i == start || best[i].starts_at.is_some() {
                        best[i].score -= offset;
                    }
                }
                till = 0.0;
            }
            let mblen = normalized[start..].chars().next().map_or(1, char::len_utf8);
            let mut has_single = false;
            for end in start + 1..=size.min(start + self.piece_max_len) {
                if !normalized.is_char_boundary(end) {
                    continue;
                }
                let key = &normalized[start..end];
                let Some(&id) = self.pieces.get(key) else {
                    if self.piece_prefixes.contains(key) {
                        continue;
                    }
                    break; // no piece starts with `key` (Darts' traverse returns -2)
                };
                let kind = self.kind(id);
                if kind == PieceType::Unused {
                    continue;
                }
                frontier = frontier.max(end);
                let length = end - start;
                let score: f32 = if kind == PieceType::UserDefined {
                    (0.1 * (length as f64 - 1.0)) as f32
                } else {
                    self.proto.pieces[id as usize].score
                };
                let cand = score + till;
                let t = &mut best[end];
                if t.starts_at.is_none() || cand > t.score {
                    *t = Best { id, score: cand, starts_at: Some(start) };
                }
                has_single |= length == mblen;
            }
            if !has_single {
                frontier = frontier.max(start + mblen);
                let cand = unk_score + till;
                let t = &mut best[start + mblen];
                if t.starts_at.is_none() || cand > t.score {
                    *t = Best { id: self.unk_id, score: cand, starts_at: Some(start) };
                }
            }
            start += mblen;
        }
        let mut out = Vec::new();
        let mut end = size;
        while end > 0 {
            let Some(s) = best[end].starts_at else { break };
            out.push((&normalized[s..end], best[end].id));
            end = s;
        }
        out.reverse();
        out
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

// ---------------------------------------------------------------------------------------------
// The official pre-tokenizer and segmenter.

/// Python's `str.isspace` (differs from Rust's `char::is_whitespace` on U+001C..U+001F).
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Lowercase letters that Rust's Unicode tables uppercase but Python 3.11's (Unicode 14) do not.
fn upper_added_after_unicode14(c: char) -> bool {
    matches!(c as u32, 0x19B | 0x264 | 0x1C8A | 0xA7CD | 0xA7CF | 0xA7D3 | 0xA7D5 | 0xA7DB | 0x10D70..=0x10D85 | 0x16EBB..=0x16ED3)
}

/// Python 3.11's `str.upper()` (full case mapping, e.g. `ß` → `SS`).
pub fn py_upper(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if upper_added_after_unicode14(c) {
            out.push(c);
        } else {
            out.extend(c.to_uppercase());
        }
    }
    out
}

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

/// The official `split_segments`: sentence ends first, then `,` and `-` for over-long runs, then
/// fixed-size chunks; finally neighbours are merged while they fit in `max_tokens`.
///
/// Errors (`Error::Input`): `max_tokens == 0`, and the one input shape on which the official
/// recursion never terminates (it raises `RecursionError`): an over-long run holding both `,`
/// and `-`, none of which can split it.
pub fn split_segments<S: AsRef<str>>(pieces: &[S], max_tokens: usize) -> Result<Vec<Vec<String>>> {
    if max_tokens == 0 {
        return Err(Error::Input("max_tokens must be at least 1".into()));
    }
    let pieces: Vec<&str> = pieces.iter().map(|p| p.as_ref()).collect();
    split_by(&pieces, SENTENCE_END_PIECES, max_tokens, 0)
}

fn split_by(pieces: &[&str], split: &[&str], max: usize, depth: usize) -> Result<Vec<Vec<String>>> {
    // Depth 3 re-enters depth 1 with the same run and the same separators: the official loops.
    if depth >= 3 {
        return Err(Error::Input(format!(
            "split_segments does not terminate on this run of {} pieces (the official code raises RecursionError)",
            pieces.len()
        )));
    }
    if pieces.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments: Vec<Vec<String>> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for (i, &tok) in pieces.iter().enumerate() {
        cur.push(tok.to_string());
        if cur.len() <= max {
            if split.contains(&tok) && cur.len() > 2 {
                // The official appends a following `'` here, and (its `i += 1` being a no-op in a
                // `for` loop) also starts the next segment with it: the `'` appears twice.
                if let Some(&next) = pieces.get(i + 1) {
                    if next == "'" || next == "▁'" {
                        cur.push(next.to_string());
                    }
                }
                segments.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let has = |t: &str| cur.iter().any(|c| c == t);
        let sub = if !(split.contains(&",") || split.contains(&"▁,")) && (has(",") || has("▁,")) {
            split_by(&refs(&cur), &[",", "▁,"], max, depth + 1)?
        } else if !split.contains(&"-") && has("-") {
            split_by(&refs(&cur), &["-"], max, depth + 1)?
        } else {
            cur.chunks(max).map(|c| c.to_vec()).collect()
        };
        segments.extend(sub);
        cur.clear();
    }
    if !cur.is_empty() {
        segments.push(cur);
    }
    let mut merged: Vec<Vec<String>> = Vec::new();
    for seg in segments.into_iter().filter(|s| !s.is_empty()) {
        match merged.last_mut() {
            Some(last) if last.len() + seg.len() <= max => last.extend(seg),
            _ => merged.push(seg),
        }
    }
    Ok(merged)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
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

    #[test]
    fn isspace_is_pythons() {
        // every c with Python 3.11 `chr(c).isspace()`
        let py: &[u32] = &[0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002,
            0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000];
        let ours: Vec<u32> = (0..0x110000u32).filter_map(char::from_u32).filter(|&c| py_isspace(c)).map(|c| c as u32).collect();
        assert_eq!(ours, py);
    }

    #[test]
    fn segments_quirks() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // a sentence end followed by ' keeps the ' in both segments
        let toks = p(&["▁A", "▁B", "▁C", ".", "'", "▁D", "▁E", "▁F", "."]);
        let s = split_segments(&toks, 4).unwrap();
        assert_eq!(s, vec![p(&["▁A", "▁B", "▁C", ".", "'"]), p(&["'", "▁D", "▁E", "▁F"]), p(&["."])]);
        assert!(split_segments(&toks, 0).is_err());
        assert!(split_segments::<String>(&[], 3).unwrap().is_empty());
        // both , and - early in an over-long run: the official recursion never ends
        let bad = p(&["▁,", "-", "▁A", "▁B", "▁C"]);
        assert!(split_segments(&bad, 3).is_err());
    }

    #[test]
    fn bad_model_bytes_are_errors() {
        for b in [&b""[..], b"\x0a", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0b\x00", b"garbage!"] {
            assert!(matches!(SentencePiece::from_bytes(b, "x.model"), Err(Error::Checkpoint(_))));
        }
    }
}
