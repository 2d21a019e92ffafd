//! `torch.topk(x, k, largest=True, sorted=True)` on CPU, tie order included. ATen's CPU kernel
//! fills (value, index) pairs and calls libstdc++: `std::partial_sort` when k·64 ≤ n, else
//! `std::nth_element` at k − 1 followed by `std::sort` of the first k − 1, all with the strict
//! comparator `a.value > b.value`. Among equal values (the zero-probability entries that
//! multinomial must pick when fewer than n entries are positive) the result is fixed by those
//! algorithms, so they are re-implemented here step for step (heap select/sort, introselect with
//! median-of-three and unguarded partition, introsort with insertion sort below 16 elements).
type E = (f32, usize);

#[inline]
fn gt(a: &E, b: &E) -> bool {
    a.0 > b.0
}

#[inline]
fn lt(a: &E, b: &E) -> bool {
    a.0 < b.0
}

pub fn topk(vals: &[f32], k: usize) -> Vec<usize> {
    let n = vals.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let mut q: Vec<E> = vals.iter().copied().zip(0..).collect();
    if k * 64 <= n {
        heap_select(gt, &mut q, k);
        sort_heap(gt, &mut q[..k]);
    } else {
        introselect(gt, &mut q, k - 1);
        sort(gt, &mut q[..k - 1]);
    }
    q[..k].iter().map(|e| e.1).collect()
}

/// `torch.sort(x, descending=False)` indices on CPU as `std::sort` of (value, index) pairs by
/// value orders them (the tie order decides which of equal tokens top-p removes).
pub fn argsort_asc(vals: &[f32]) -> Vec<usize> {
    let mut q: Vec<E> = vals.iter().copied().zip(0..).collect();
    sort(lt, &mut q);
    q.iter().map(|e| e.1).collect()
}

fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// Sift `value` into the hole at `hole` of the heap `q[..len]` (libstdc++ `__adjust_heap`).
fn adjust_heap<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E], mut hole: usize, len: usize, value: E) {
    let top = hole;
    let mut second = hole;
    while len >= 1 && second < (len - 1) / 2 {
        second = 2 * (second + 1);
        if gt(&q[second], &q[second - 1]) {
            second -= 1;
        }
        q[hole] = q[second];
        hole = second;
    }
    if len.is_multiple_of(2) && len >= 2 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        q[hole] = q[second - 1];
        hole = second - 1;
    }
    // `__push_heap`
    while hole > top {
        let parent = (hole - 1) / 2;
        if !gt(&q[parent], &value) {
            break;
        }
        q[hole] = q[parent];
        hole = parent;
    }
    q[hole] = value;
}

fn make_heap<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E]) {
    let len = q.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let v = q[parent];
        adjust_heap(gt, q, parent, len, v);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// `__pop_heap(first, first + len, result)`.
fn pop_heap<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E], len: usize, result: usize) {
    let v = q[result];
    q[result] = q[0];
    adjust_heap(gt, q, 0, len, v);
}

/// `__heap_select(first, first + m, last)`.
fn heap_select<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E], m: usize) {
    make_heap(gt, &mut q[..m]);
    for i in m..q.len() {
        if gt(&q[i], &q[0]) {
            pop_heap(gt, q, m, i);
        }
    }
}

fn sort_heap<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E]) {
    let mut last = q.len();
    while last > 1 {
        last -= 1;
        pop_heap(gt, q, last, last);
    }
}

fn move_median_to_first<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E], result: usize, a: usize, b: usize, c: usize) {
    let pick = if gt(&q[a], &q[b]) {
        if gt(&q[b], &q[c]) {
            b
        } else if gt(&q[a], &q[c]) {
            c
        } else {
            a
        }
    } else if gt(&q[a], &q[c]) {
        a
    } else if gt(&q[b], &q[c]) {
        c
    } else {
        b
    };
    q.swap(result, pick);
}

/// `__unguarded_partition_pivot` on `q` (whole slice) → cut index.
fn partition_pivot<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E]) -> usize {
    let last = q.len();
    let mid = last / 2;
    move_median_to_first(gt, q, 0, 1, mid, last - 1);
    let (mut f, mut l) = (1usize, last);
    loop {
        while gt(&q[f], &q[0]) {
            f += 1;
        }
        l -= 1;
        while gt(&q[0], &q[l]) {
            l -= 1;
        }
        if f >= l {
            return f;
        }
        q.swap(f, l);
        f += 1;
    }
}

fn insertion_sort<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E]) {
    for i in 1..q.len() {
        let v = q[i];
        if gt(&v, &q[0]) {
            q.copy_within(0..i, 1);
            q[0] = v;
        } else {
            let mut j = i;
            while j > 0 && gt(&v, &q[j - 1]) {
                q[j] = q[j - 1];
                j -= 1;
            }
            q[j] = v;
        }
    }
}

/// `std::nth_element(first, first + nth, last)` (libstdc++ `__introselect`).
fn introselect<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E], nth: usize) {
    if nth >= q.len() {
        return;
    }
    let (mut first, mut last) = (0usize, q.len());
    let mut depth = 2 * lg(q.len());
    while last - first > 3 {
        if depth == 0 {
            heap_select(gt, &mut q[first..last], nth - first + 1);
            q.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = first + partition_pivot(gt, &mut q[first..last]);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(gt, &mut q[first..last]);
}

/// `std::sort` (libstdc++ introsort + final insertion sort).
fn sort<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E]) {
    if q.len() < 2 {
        return;
    }
    introsort_loop(gt, q, 2 * lg(q.len()));
    if q.len() > 16 {
        insertion_sort(gt, &mut q[..16]);
        for i in 16..q.len() {
            // `__unguarded_linear_insert`
            let v = q[i];
            let mut j = i;
            while j > 0 && gt(&v, &q[j - 1]) {
                q[j] = q[j - 1];
                j -= 1;
            }
            q[j] = v;
        }
    } else {
        insertion_sort(gt, q);
    }
}

fn introsort_loop<C: Fn(&E, &E) -> bool + Copy>(gt: C, q: &mut [E], mut depth: usize) {
    let mut last = q.len();
    while last > 16 {
        if depth == 0 {
            heap_select(gt, &mut q[..last], last);
            sort_heap(gt, &mut q[..last]);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(gt, &mut q[..last]);
        introsort_loop(gt, &mut q[cut..last], depth);
        last = cut;
    }
}

#[cfg(test)]
mod tests {
    use super::topk;

    #[test]
    fn topk_values_are_the_largest_in_order() {
        let v: Vec<f32> = (0..300).map(|i| ((i * 37) % 101) as f32).collect();
        for k in [1, 4, 6, 17, 40] {
            let got: Vec<f32> = topk(&v, k).iter().map(|&i| v[i]).collect();
            let mut want = v.clone();
            want.sort_by(|a, b| b.partial_cmp(a).unwrap());
            assert_eq!(got, want[..k].to_vec(), "k={k}");
        }
    }
}
