//! `bpe_model.cc` `Model::Encode`: highest-score adjacent merge, leftmost on ties, unused pieces
//! re-split, user-defined pieces frozen.

use super::normalizer::utf8_char_len;
use super::{PieceType, SentencePiece};
use std::collections::{BinaryHeap, HashMap};

impl SentencePiece {
    /// `bpe_model.cc` `Model::Encode` on normalized text: (piece, id) before the processor's pass.
    pub(super) fn bpe<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
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
}
