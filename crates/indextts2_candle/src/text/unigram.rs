//! `unigram_model.cc` `Model::EncodeOptimized` (sentencepiece 0.2.3): Viterbi over the lattice.

use super::{PieceType, SentencePiece};

impl SentencePiece {
    /// `unigram_model.cc` `Model::EncodeOptimized` as of sentencepiece 0.2.3: Viterbi over all
    /// vocabulary matches, unknown characters at `min_score - 10`, user-defined pieces at
    /// `0.1 * (len - 1)`. Every score and sum is f32 (since 0.2.3 the user-defined score is a float,
    /// so no candidate is widened to double: sums that round to the same f32 tie, and the first
    /// candidate, the one with the earlier start, keeps the slot). When the running score leaves
    /// ±1e5 the frontier is rebased to 0, as the C++ does, so f32 rounding matches there too.
    pub(super) fn unigram<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
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
}
