"""WAV files without extra dependencies: read (PCM 8/16/24/32-bit, IEEE float 32-bit, WAVE_FORMAT_EXTENSIBLE,
any channel count; mono by the mean over channels, as librosa.to_mono) and write (float32 or 16-bit PCM)."""
from __future__ import annotations

import struct

import numpy as np


class WavError(ValueError):
    """The file is not a WAV this reader handles; the message names the file and why."""


def read_mono(path: str) -> tuple[np.ndarray, int]:
    try:
        with open(path, "rb") as f:
            b = f.read()
    except OSError as e:
        raise WavError(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(b) < 12 or b[:4] != b"RIFF" or b[8:12] != b"WAVE":
        raise WavError(f"{path}: not a readable WAV file (no RIFF/WAVE header)")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], int.from_bytes(b[pos + 4:pos + 8], "little")
        body = b[pos + 8:pos + 8 + size]
        if cid == b"fmt " and len(body) >= 16:
            tag, ch, sr = struct.unpack_from("<HHI", body)
            bits = struct.unpack_from("<H", body, 14)[0]
            if tag == 0xFFFE and len(body) >= 26:  # extensible: the sub-format GUID starts with the tag
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, ch, sr, bits)
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise WavError(f"{path}: not a readable WAV file (no fmt or data chunk)")
    tag, ch, sr, bits = fmt
    if ch == 0 or sr == 0:
        raise WavError(f"{path}: invalid header ({ch} channels, {sr} Hz)")
    if tag == 3 and bits == 32:
        x = np.frombuffer(data[: len(data) // 4 * 4], "<f4")
    elif tag == 1 and bits in (8, 16, 24, 32):
        w = bits // 8
        raw = np.frombuffer(data[: len(data) // w * w], np.uint8)
        if bits == 8:
            q = raw.astype(np.int64) - 128  # 8-bit WAV is unsigned
        elif bits == 24:
            t = raw.reshape(-1, 3).astype(np.int64)
            q = t[:, 0] | (t[:, 1] << 8) | (t[:, 2] << 16)
            q = np.where(q >= 2**23, q - 2**24, q)
        else:
            q = raw.view(f"<i{w}").astype(np.int64)
        x = (q / float(2 ** (bits - 1))).astype(np.float32)
    else:
        raise WavError(f"{path}: {bits}-bit samples of format {tag} are not supported "
                       "(8/16/24/32-bit integer or 32-bit float)")
    n = len(x) // ch
    if n == 0:
        raise WavError(f"{path}: the file holds no samples")
    x = x[: n * ch].reshape(n, ch)
    mono = x[:, 0].copy() if ch == 1 else x.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise WavError(f"{path}: holds NaN or infinite samples")
    return mono, sr


def write(path: str, x: np.ndarray, sr: int, pcm16: bool = False) -> None:
    x = np.asarray(x, np.float32).reshape(-1)
    if pcm16:
        data, tag, bits = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes(), 1, 16
    else:
        data, tag, bits = x.astype("<f4").tobytes(), 3, 32
    fmt = struct.pack("<HHIIHH", tag, 1, sr, sr * bits // 8, bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)
