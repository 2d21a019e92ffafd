//! Python 3.11 string semantics the official pre-tokenizer relies on, where Rust's differ.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isspace_is_pythons() {
        // every c with Python 3.11 `chr(c).isspace()`
        let py: &[u32] = &[0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002,
            0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000];
        let ours: Vec<u32> = (0..0x110000u32).filter_map(char::from_u32).filter(|&c| py_isspace(c)).map(|c| c as u32).collect();
        assert_eq!(ours, py);
    }
}
