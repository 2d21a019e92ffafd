"""ONE compare function and the layer walk built on it.

`compare` reports what a user needs to locate an error: shape, max|Δ| and where, mean|Δ|, cosine,
SNR in dB, and the atol / rtol that would have passed. `walk` compares taps in forward order and
names the FIRST one out of tolerance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .tolerances import Tolerance, lookup


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
    tol: Tolerance | None = None
    ok: bool = False
    reason: str = ""

    def row(self) -> dict:
        d = asdict(self)
        d["tol"] = None if self.tol is None else {"atol": self.tol.atol, "rtol": self.tol.rtol}
        return d

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        tol = "" if self.tol is None else f" (atol {self.tol.atol:.1e}, rtol {self.tol.rtol:.1e})"
        return (f"{mark} {self.name:<40} {str(self.shape):<18} max|Δ| {self.max_abs:.3e} at {self.argmax} "
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


def walk(model: str, case: str, mode: str, device: str, ref_taps: dict, candle_taps: dict, dtype: str = "float32") -> Walk:
    """Compares taps in the reference's forward order; every tap must exist on both sides."""
    w = Walk(model, case, mode, device)
    for name, ref in ref_taps.items():
        if name not in candle_taps:
            w.missing.append(name)
            continue
        w.rows.append(compare(name, ref, candle_taps[name], lookup(model, name, device, dtype)))
    w.extra = [n for n in candle_taps if n not in ref_taps]
    return w
