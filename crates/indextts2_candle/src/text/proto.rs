//! A minimal protobuf reader (proto2 wire format: varint, fixed64, length-delimited, fixed32) and
//! the parts of `sentencepiece.ModelProto` the encoders read.

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

