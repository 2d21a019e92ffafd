//! The logits processors of transformers 4.52.1 as the vendored `generate` chains them, on one
//! float32 row each (`RepetitionPenaltyLogitsProcessor`, `TemperatureLogitsWarper`,
//! `TopKLogitsWarper`, `TopPLogitsWarper`), plus the float32 softmax / log-softmax around them.
//! Python scalars meet float32 tensors as float32 (torch's wrapped-number rule), so every
//! parameter is cast to f32 before use, except `1 − top_p`, which Python computes in double and
//! torch then compares in float32.

/// `log_softmax` over one row (f64 accumulation of the exponentials; the result is float32).
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = sum.ln() as f32;
    for x in row.iter_mut() {
        *x = (*x - max) - lse;
    }
}

/// `softmax` over one row (f64 accumulation; float32 out).
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&v| (v / sum) as f32).collect()
}

/// Repetition penalty: every token id in `ids` (prompt included, each counted once) has its score
/// multiplied by the penalty when negative and divided by it otherwise.
pub fn repetition_penalty(row: &mut [f32], ids: &[i64], penalty: f64) {
    let p = penalty as f32;
    let mut seen = std::collections::BTreeSet::new();
    for &id in ids {
        let i = id as usize;
        if i < row.len() && seen.insert(i) {
            let s = row[i];
            row[i] = if s < 0.0 { s * p } else { s / p };
        }
    }
}

pub fn temperature(row: &mut [f32], t: f64) {
    let t = t as f32;
    for x in row.iter_mut() {
        *x /= t;
    }
}

/// Top-k: everything strictly below the k-th largest score becomes −inf (ties at the k-th kept);
/// k is raised to `min_keep` and capped at the vocabulary, as the warper's constructor does.
pub fn top_k(row: &mut [f32], k: usize, min_keep: usize) {
    let k = k.max(min_keep).min(row.len());
    if k == 0 {
        return;
    }
    let mut v = row.to_vec();
    // Descending by value; NaN never reaches here (logits are finite or −inf).
    let (_, kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let thr = *kth;
    for x in row.iter_mut() {
        if *x < thr {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// Top-p over the ascending sort (`torch.sort`, see `stl`): the tokens whose cumulative probability is ≤ 1 − top_p are
/// removed, the last `min_keep` are always kept. torch's CPU cumsum accumulates in double and
/// rounds every partial sum to float32; the threshold is compared in float32.
/// `one_too_few` (a fault) also removes the smallest surviving token.
pub fn top_p(row: &mut [f32], p: f64, min_keep: usize, one_too_few: bool) {
    let n = row.len();
    let idx = super::stl::argsort_asc(row); // torch.sort's CPU order, ties included
    let sorted: Vec<f32> = idx.iter().map(|&i| row[i]).collect();
    let probs = softmax(&sorted);
    let thr = (1.0 - p) as f32;
    let mut acc = 0f64;
    let mut remove: Vec<bool> = probs
        .iter()
        .map(|&q| {
            acc += q as f64;
            (acc as f32) <= thr
        })
        .collect();
    for r in remove.iter_mut().skip(n.saturating_sub(min_keep)) {
        *r = false;
    }
    if one_too_few {
        if let Some(j) = remove.iter().position(|r| !r) {
            if j < n.saturating_sub(min_keep) {
                remove[j] = true;
            }
        }
    }
    for (j, &i) in idx.iter().enumerate() {
        if remove[j] {
            row[i] = f32::NEG_INFINITY;
        }
    }
}

/// `torch.topk(x, n)` order for the candidates: descending, ties by lower index.
pub fn top_n_desc(x: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_counts_each_token_once_and_respects_sign() {
        let mut r = vec![-1.0f32, 2.0, 3.0];
        repetition_penalty(&mut r, &[0, 0, 1, 7], 2.0);
        assert_eq!(r, vec![-2.0, 1.0, 3.0]);
    }

    #[test]
    fn top_k_keeps_ties_and_min_keep() {
        let mut r = vec![1.0f32, 3.0, 3.0, 0.0];
        top_k(&mut r, 1, 1);
        assert_eq!(r, vec![f32::NEG_INFINITY, 3.0, 3.0, f32::NEG_INFINITY]);
        let mut r = vec![1.0f32, 3.0, 2.0, 0.0];
        top_k(&mut r, 1, 2);
        assert_eq!(r.iter().filter(|x| x.is_finite()).count(), 2);
    }

    #[test]
    fn top_p_keeps_min_tokens() {
        let mut r = vec![10.0f32, 0.0, -10.0];
        top_p(&mut r, 0.5, 2, false);
        assert!(r[0].is_finite() && r[1].is_finite() && r[2].is_infinite());
        let mut r = vec![10.0f32, 0.0, -10.0];
        top_p(&mut r, 0.5, 1, false);
        assert_eq!(r.iter().filter(|x| x.is_finite()).count(), 1);
    }
}
