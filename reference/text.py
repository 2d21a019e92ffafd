"""Reference text front end: the official `TextTokenizer.encode` path on the `sentencepiece` package.

Behaviour of `indextts/utils/front.py` (`TextTokenizer.encode`, `split_segments[_by_token]`) and
`indextts/utils/common.py` (`tokenize_by_CJK_char`), written afresh. The official `TextNormalizer`
(wetext) is not part of it: input is normalized text.
"""
from __future__ import annotations

import os
import re

# CJK ranges of the official pre-tokenizer (from NLTK).
_CJK = re.compile(
    "([\u1100-\u11ff\u2e80-\ua4cf\ua840-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff65-\uffdc\U00020000-\U0002ffff])"
)

SENTENCE_END_PIECES = [".", "!", "?", "▁.", "▁?", "▁..."]
DEFAULT_MAX_SEGMENT_TOKENS = 120


def tokenize_by_cjk_char(line: str) -> str:
    """Each CJK character a word of its own; parts stripped, uppercased and joined by one space."""
    parts = (p.strip() for p in _CJK.split(line.strip()))
    return " ".join(p.upper() for p in parts if p)


def split_segments(pieces: list[str], max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS) -> list[list[str]]:
    """The official segmenter (sentence ends, then `,`, then `-`, then fixed chunks; short neighbours merged).

    Raises RecursionError where the official does (an over-long run with `,` and `-` that cannot split it).
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    return _split(list(pieces), SENTENCE_END_PIECES, max_tokens)


def _split(pieces: list[str], seps: list[str], limit: int) -> list[list[str]]:
    if not pieces:
        return []
    out: list[list[str]] = []
    cur: list[str] = []
    for i, tok in enumerate(pieces):
        cur.append(tok)
        if len(cur) <= limit:
            if tok in seps and len(cur) > 2:
                # Official quirk: a following quote is copied into this segment and still starts the next.
                if i + 1 < len(pieces) and pieces[i + 1] in ("'", "▁'"):
                    cur.append(pieces[i + 1])
                out.append(cur)
                cur = []
            continue
        if "," not in seps and "▁," not in seps and ("," in cur or "▁," in cur):
            out.extend(_split(cur, [",", "▁,"], limit))
        elif "-" not in seps and "-" in cur:
            out.extend(_split(cur, ["-"], limit))
        else:
            out.extend(cur[k:k + limit] for k in range(0, len(cur), limit))
        cur = []
    if cur:
        out.append(cur)
    merged: list[list[str]] = []
    for seg in out:
        if not seg:
            continue
        if merged and len(merged[-1]) + len(seg) <= limit:
            merged[-1] = merged[-1] + seg
        else:
            merged.append(seg)
    return merged


class TextTokenizer:
    """`bpe.model` + the official pre-tokenizer and segmenter (no text normalizer)."""

    def __init__(self, path: str):
        import sentencepiece as spm

        if not os.path.exists(path):
            raise ValueError(f"vocab_file {path} does not exist")
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=path)

    def _encode(self, text: str, out_type):
        if len(text) == 0:
            return []
        if len(text.strip()) == 1:
            return self.sp.Encode(text, out_type=out_type)
        return self.sp.Encode(tokenize_by_cjk_char(text), out_type=out_type)

    def encode(self, text: str) -> list[int]:
        return self._encode(text, int)

    def tokenize(self, text: str) -> list[str]:
        return self._encode(text, str)

    def segments(self, text: str, max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS) -> list[list[int]]:
        return [[self.sp.PieceToId(p) for p in seg] for seg in split_segments(self.tokenize(text), max_tokens)]

    def normalize(self, text: str) -> str:
        return self.sp.normalize(text)

    def piece_size(self) -> int:
        return self.sp.GetPieceSize()
