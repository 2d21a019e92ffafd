"""ONE compare function and the layer walk built on it.

`compare` reports what a user needs to locate an error: shape, max|Δ| and where, mean|Δ|, cosine,
SNR in dB, and the atol / rtol that would have passed. `walk` compares taps in forward order and
names the FIRST one out of tolerance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .tolerances import FAULT_MARGIN, NoiseFloor, Tolerance, rule


@dataclass
class Comparison:
    name: str
    shape: tuple
    ref_shape: tuple
    max_abs: float
    argmax: tuple
    mean_abs: float
    cosine: float
    snr_db: float
    atol_needed: float  # smallest atol (in the table's units, see tolerances.py) that passes with rtol = 0
    rtol_needed: float  # smallest rtol that passes with the table's atol
    tol: "Tolerance | NoiseFloor | None" = None
    ok: bool = False
    reason: str = ""
    # Noise-floor rule (tolerances.py): Candle vs float64, the float32 reference's own error vs float64.
    err_rms: float = float("nan")
    noise_max: float = float("nan")  # max|ref32 − ref64| (floored)
    noise_rms: float = float("nan")  # rms(ref32 − ref64) (floored)
    ratio_max: float = float("nan")  # max|err| / noise_max
    ratio_rms: float = float("nan")  # rms(err) / noise_rms

    @property
    def margin(self) -> float:
        """How far past its threshold this tap is (> 1 fails): the larger of the two ratios over k."""
        if isinstance(self.tol, NoiseFloor):
            return max(self.ratio_max / self.tol.k_max, self.ratio_rms / self.tol.k_rms)
        return float("nan")

    def row(self) -> dict:
        d = asdict(self)
        if isinstance(self.tol, NoiseFloor):
            d["tol"] = {"rule": "noise", "k_max": self.tol.k_max, "k_rms": self.tol.k_rms}
        else:
            d["tol"] = None if self.tol is None else {"rule": "fixed", "atol": self.tol.atol, "rtol": self.tol.rtol,
                                                       "note": self.tol.note}
        return d

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        if isinstance(self.tol, NoiseFloor):
            return (f"{mark} {self.name:<44} {str(self.shape):<18} ratio max {self.ratio_max:8.2f} rms {self.ratio_rms:7.2f} "
                    f"(k {self.tol.k_max:g}/{self.tol.k_rms:g})  max|Δ| {self.max_abs:.3e} at {self.argmax} "
                    f"rms|Δ| {self.err_rms:.2e}  ref32 noise max {self.noise_max:.2e} rms {self.noise_rms:.2e}  "
                    f"SNR {self.snr_db:6.1f} dB{'  ' + self.reason if self.reason else ''}")
        tol = "" if self.tol is None else f" (atol {self.tol.atol:.1e}, rtol {self.tol.rtol:.1e})"
        return (f"{mark} {self.name:<44} {str(self.shape):<18} max|Δ| {self.max_abs:.3e} at {self.argmax} "
                f"mean|Δ| {self.mean_abs:.3e} cos {self.cosine:.8f} SNR {self.snr_db:6.1f} dB "
                f"needs atol {self.atol_needed:.1e} / rtol {self.rtol_needed:.1e}{tol}{'  ' + self.reason if self.reason else ''}")


def compare(name: str, ref, got, tol: Tolerance | None) -> Comparison:
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.shape != got.shape:
        return Comparison(name, got.shape, ref.shape, float("inf"), (), float("inf"), float("nan"), float("-inf"),
                          float("inf"), float("inf"), tol, False, f"shape mismatch: reference {ref.shape}, candle {got.shape}")
    if np.issubdtype(ref.dtype, np.integer) or np.issubdtype(got.dtype, np.integer):
        diff = (ref.astype(np.int64) != got.astype(np.int64))
        n = int(diff.sum())
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if n else ()
        return Comparison(name, got.shape, ref.shape, float(n), idx, float(n) / max(diff.size, 1), 1.0 if n == 0 else 0.0,
                          float("inf") if n == 0 else 0.0, float(n), float(n), tol, n == 0,
                          "" if n == 0 else f"{n} integer values differ (first at {idx})")
    r = ref.astype(np.float64)
    g = got.astype(np.float64)
    if r.size == 0:
        return Comparison(name, got.shape, ref.shape, 0.0, (), 0.0, 1.0, float("inf"), 0.0, 0.0, tol, True)
    d = np.abs(r - g)
    if not np.all(np.isfinite(g)):
        bad = tuple(int(i) for i in np.unravel_index(int(np.argmax(~np.isfinite(g))), g.shape))
        return Comparison(name, got.shape, ref.shape, float("inf"), bad, float("inf"), float("nan"), float("-inf"),
                          float("inf"), float("inf"), tol, False, "candle output has NaN/Inf")
    i = int(np.argmax(d))
    max_abs = float(d.flat[i])
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    cosine = float(np.dot(r.ravel(), g.ravel()) / denom) if denom > 0 else (1.0 if max_abs == 0 else 0.0)
    err = float(np.sum((r - g) ** 2))
    sig = float(np.sum(r**2))
    snr = float("inf") if err == 0 else (10 * np.log10(sig / err) if sig > 0 else float("-inf"))
    scale = max(1.0, float(np.max(np.abs(r))))  # atol is relative to the tap's peak once it exceeds 1
    atol = (tol.atol if tol else 0.0) * scale
    excess = np.maximum(d - atol, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(excess > 0, excess / np.abs(r), 0.0)
    rtol_needed = float(np.max(rel)) if rel.size else 0.0
    c = Comparison(name, got.shape, ref.shape, max_abs, tuple(int(v) for v in np.unravel_index(i, d.shape)),
                   float(d.mean()), cosine, snr, max_abs / scale, rtol_needed, tol)
    if tol is not None:
        c.ok = bool(np.all(d <= atol + tol.rtol * np.abs(r)))
        if c.ok and tol.min_snr_db is not None and snr < tol.min_snr_db:
            c.ok, c.reason = False, f"SNR {snr:.1f} dB below {tol.min_snr_db} dB"
    return c


def compare_noise(name: str, ref64, ref32, got, tol: "Tolerance | NoiseFloor") -> Comparison:
    """The noise-floor comparison (tolerances.py). `ref64`: the float64 reference; `ref32`: the float32
    reference on the same input (its noise). Integer taps are exact against the float32 reference;
    a hand-set row compares against the float32 reference as `compare` does."""
    ref64, ref32, got = np.asarray(ref64), np.asarray(ref32), np.asarray(got)
    is_int = any(np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_ for a in (ref32, got))
    if is_int or not isinstance(tol, NoiseFloor):
        return compare(name, ref32, got, tol)
    if ref32.shape != ref64.shape:
        return Comparison(name, got.shape, ref64.shape, float("inf"), (), float("inf"), float("nan"), float("-inf"),
                          float("inf"), float("inf"), tol, False,
                          f"the float32 reference's shape {ref32.shape} differs from the float64 one's {ref64.shape}")
    c = compare(name, ref64, got, None)
    if not np.isfinite(c.max_abs) or ref64.size == 0:
        c.tol = tol
        c.ok = ref64.size == 0 and got.shape == ref64.shape
        if not c.ok:  # a hard failure (shape, NaN/Inf) stands infinitely past any threshold
            c.ratio_max = c.ratio_rms = float("inf")
        return c
    r = ref64.astype(np.float64)
    e = got.astype(np.float64) - r
    n = ref32.astype(np.float64) - r
    peak = float(np.max(np.abs(r)))
    rms_ref = float(np.sqrt(np.mean(r * r)))
    c.err_rms = float(np.sqrt(np.mean(e * e)))
    floor = tol.floor  # one ulp of the noise run's dtype
    c.noise_max = max(float(np.max(np.abs(n))), floor * peak, 1e-30)
    c.noise_rms = max(float(np.sqrt(np.mean(n * n))), floor * rms_ref, 1e-30)
    c.ratio_max = c.max_abs / c.noise_max
    c.ratio_rms = c.err_rms / c.noise_rms
    c.tol = tol
    c.ok = c.ratio_max <= tol.k_max and c.ratio_rms <= tol.k_rms
    if not c.ok:
        c.reason = f"{c.margin:.1f}× past the noise-floor threshold"
    return c


def effect_ratios(bad, good, ref64, ref32) -> tuple[float, float]:
    """A fault's own effect (Candle with it − Candle without it, same inputs) in units of the float32
    reference's error against float64: (max ratio, rms ratio). Below k, no float32 run can see it."""
    effect = np.asarray(bad, np.float64) - np.asarray(good, np.float64)
    noise = np.asarray(ref32, np.float64) - np.asarray(ref64, np.float64)
    rms = lambda a: float(np.sqrt(np.mean(a * a)))  # noqa: E731
    return (float(np.abs(effect).max()) / max(float(np.abs(noise).max()), 1e-30),
            rms(effect) / max(rms(noise), 1e-30))


def fault_margin_ok(c: Comparison) -> bool:
    """A fault's first divergent tap must stand FAULT_MARGIN × past its threshold (or be a hard failure)."""
    if isinstance(c.tol, NoiseFloor) and np.isfinite(c.ratio_max):
        return c.margin >= FAULT_MARGIN
    return not c.ok  # integer taps (exact) and hard failures (shape, NaN) have no ratio


@dataclass
class Walk:
    model: str
    case: str
    mode: str  # "chained" | "injected" | "output"
    device: str
    rows: list[Comparison] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # reference taps Candle never produced
    extra: list[str] = field(default_factory=list)  # Candle taps the reference does not have

    @property
    def first_failure(self) -> str | None:
        for r in self.rows:
            if not r.ok:
                return r.name
        if self.missing:
            return self.missing[0]
        return self.extra[0] if self.extra else None

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    def row_of(self, name: str) -> Comparison | None:
        return next((r for r in self.rows if r.name == name), None)

    @property
    def worst(self) -> Comparison | None:
        """The noise-rule tap closest to (or furthest past) its threshold."""
        rows = [r for r in self.rows if isinstance(r.tol, NoiseFloor)]
        return max(rows, key=lambda r: r.margin) if rows else None

    def table(self) -> str:
        head = f"[{self.model} / {self.case} / {self.mode} / {self.device}]"
        lines = [head] + [r.line() for r in self.rows]
        if self.missing:
            lines.append(f"FAIL taps missing on the Candle side: {self.missing}")
        if self.extra:
            lines.append(f"FAIL taps Candle has but the reference lacks: {self.extra}")
        if not self.ok:
            lines.append(f"FIRST DIVERGENT TAP: {self.first_failure}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(f"parity failed at `{self.first_failure}`\n{self.table()}")


def walk(model: str, case: str, mode: str, device: str, ref_taps: dict, candle_taps: dict, dtype: str = "float32", *,
         noise_taps: dict) -> Walk:
    """Compares taps in the reference's forward order; every tap must exist on both sides.
    `ref_taps` come from the float64 reference, `noise_taps` from the float32 one (its own noise);
    each tap is judged by its rule (tolerances.rule: the noise floor unless an exception row)."""
    w = Walk(model, case, mode, device)
    for name, ref in ref_taps.items():
        if name not in candle_taps:
            w.missing.append(name)
            continue
        if name not in noise_taps:
            w.missing.append(f"{name} (float32 reference)")
        else:
            w.rows.append(compare_noise(name, ref, noise_taps[name], candle_taps[name], rule(model, name, device, dtype)))
    w.extra = [n for n in candle_taps if n not in ref_taps]
    return w
