#!/usr/bin/env python3
"""Fit vact.rs's GELU-erf polynomials (crates/indextts2_candle/src/vact.rs).

1. ERFCX_HALF32: ½·erfcx(a/√2) = t·Q(t − C) with t = 1/(1 + p·a) (p = 0.5: t = 2/(2 + a)) for
   a = |x| ∈ [0, 15], C the centre of t's range, Q with f32 coefficients in the power basis of
   s = t − C. Targets are mpmath's erfc·e^{z²} at 40 digits.
2. EXPM1_TAIL_MINIMAX: e^r = 1 + r + r²·P(r) for |r| ≤ 0.35, P of degree 4, f32 coefficients.

Each fit minimises the relative error (Lawson's iteratively reweighted least squares, i.e.
near-minimax) in float64 on Chebyshev points; then the coefficients are rounded to f32 one at a
time from the constant term up, the rest refitted after each (so the rounding of the low terms is
compensated by the high ones). The errors printed are those of the f32 coefficients in exact
arithmetic; the kernel's own (f32 evaluation included) is measured by the crate's
`vact::tests::accuracy_against_f64`.

Usage: python3 scripts/fit_erfcx.py [P [DEGREE]]   (defaults: the values vact.rs uses)
"""
import sys

import mpmath
import numpy as np

mpmath.mp.dps = 40
A_MAX = 15.0


def f32(v):
    return float(np.float32(v))


def target(a):
    z = mpmath.mpf(a) / mpmath.sqrt(2)
    return float(mpmath.erfc(z) * mpmath.exp(z * z) / 2)


def fit(p, deg, n=1200, lawson=40):
    p32 = f32(p)
    t_lo, t_hi = 1.0 / (1.0 + p32 * A_MAX), 1.0
    c = f32((t_lo + t_hi) / 2)
    k = np.arange(n)
    ts = (t_lo + t_hi) / 2 + (t_hi - t_lo) / 2 * np.cos(np.pi * (k + 0.5) / n)
    ts = np.concatenate([ts, [t_lo, t_hi]])
    a = (1.0 / ts - 1.0) / p32
    a[-1] = 0.0
    ys = np.array([target(v) for v in a]) / ts
    s = ts - c
    half = (t_hi - t_lo) / 2
    V = np.vander(s / half, deg + 1, increasing=True)  # scaled: well conditioned
    w = np.ones_like(s)
    fixed = []  # f32 coefficients already rounded (power basis of s, unscaled)
    for j in range(deg + 1):
        # refit the free coefficients j..deg with the first j fixed at their f32 values
        rhs = ys - sum(fixed[i] * s**i for i in range(j))
        Vj = V[:, j:]
        w = np.ones_like(s)
        for _ in range(lawson):
            sw = np.sqrt(w) / ys
            coef, *_ = np.linalg.lstsq(Vj * sw[:, None], rhs * sw, rcond=None)
            err = np.abs(Vj @ coef - rhs) / ys
            w = w * err
            w = w / w.sum()
        fixed.append(f32(coef[0] / half**j))
    P = np.array(fixed)
    approx = np.polyval(P[::-1], s)
    rel = np.max(np.abs(approx - ys) / ys)
    return p32, c, P, rel


def fit_expm1(deg=4, r_max=0.35, n=800, lawson=40):
    k = np.arange(n)
    rs = np.concatenate([r_max * np.cos(np.pi * (k + 0.5) / n), [-r_max, r_max]])
    ys = np.array([float((mpmath.exp(mpmath.mpf(r)) - 1 - r) / mpmath.mpf(r) ** 2) for r in rs])
    ex = np.array([float(mpmath.exp(mpmath.mpf(r))) for r in rs])
    V = np.vander(rs / r_max, deg + 1, increasing=True)
    fixed = []
    for j in range(deg + 1):
        rhs = ys - sum(fixed[i] * rs**i for i in range(j))
        Vj = V[:, j:]
        w = np.ones_like(rs)
        for _ in range(lawson):
            # the error in e^r is r²·(error in P), relative to e^r
            sw = np.sqrt(w) * rs**2 / ex
            coef, *_ = np.linalg.lstsq(Vj * sw[:, None], rhs * sw, rcond=None)
            err = np.abs(Vj @ coef - rhs) * rs**2 / ex
            w = w * err
            w = w / w.sum()
        fixed.append(f32(coef[0] / r_max**j))
    P = np.array(fixed)
    approx = 1 + rs + rs**2 * np.polyval(P[::-1], rs)
    return P, np.max(np.abs(approx - ex) / ex)


def main():
    p = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    deg = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    p32, c, P, rel = fit(p, deg)
    print(f"p = {p32!r}, t in [{1 / (1 + p32 * A_MAX):.6f}, 1], degree {deg}")
    print(f"max relative error with f32 coefficients (exact arithmetic): {rel:.3e} = {rel * 2**24:.4f} ulp(2^-24)")
    print(f"// t = 1/(1 + {str(np.float32(p32))}·a)")
    print(f"const ERFCX_C: f32 = {str(np.float32(c))};")
    print(f"const ERFCX_HALF32: [f32; {deg + 1}] = [")
    for v in P:
        print(f"    {str(np.float32(v))},")
    print("];")
    P, rel = fit_expm1()
    print(f"e^r = 1 + r + r²·P(r), |r| ≤ 0.35: max relative error {rel:.3e} = {rel * 2**24:.4f} ulp(2^-24)")
    print(f"const EXPM1_TAIL_MINIMAX: [f32; {len(P)}] = [{', '.join(str(np.float32(v)) for v in P)}];")


if __name__ == "__main__":
    main()
