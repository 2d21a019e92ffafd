//! The official `split_segments` over piece strings, quirks included (a `'` after a sentence end
//! is kept in both segments, `,` then `-` fallbacks, final merge of short neighbours).

use crate::error::{Error, Result};

/// The official `TextTokenizer.punctuation_marks_tokens`: pieces that end a sentence.
pub const SENTENCE_END_PIECES: &[&str] = &[".", "!", "?", "▁.", "▁?", "▁..."];
/// The official default `max_text_tokens_per_segment`.
pub const DEFAULT_MAX_SEGMENT_TOKENS: usize = 120;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
