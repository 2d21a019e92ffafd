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
//!
//! Layout (one file per seam): `proto` (the protobuf reader and `ModelProto`), `normalizer`
//! (precompiled char map, `Normalizer::Normalize`), `sentencepiece` (the processor: load, piece
//! tables, the encoder's final pass), `unigram` and `bpe` (the two encoders), `py` (Python string
//! semantics), `tokenizer` (the CJK pre-tokenizer and `TextTokenizer`), `segmenter` (`split_segments`).

mod bpe;
mod normalizer;
mod proto;
mod py;
mod segmenter;
mod sentencepiece;
mod tokenizer;
mod unigram;

pub use proto::{ModelProto, NormalizerSpec, Piece, PieceType, TrainerSpec};
pub use py::{py_isspace, py_strip, py_upper};
pub use segmenter::{split_segments, DEFAULT_MAX_SEGMENT_TOKENS, SENTENCE_END_PIECES};
pub use sentencepiece::SentencePiece;
pub use tokenizer::{is_cjk, tokenize_by_cjk_char, TextTokenizer};
