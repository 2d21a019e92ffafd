"""IndexTTS2 on Candle, the user-facing Python API (`from indextts2_candle.infer_v2 import IndexTTS2`,
the drop-in for `from indextts.infer_v2 import IndexTTS2`)."""
from .infer_v2 import IndexTTS2, UnsupportedOption

__all__ = ["IndexTTS2", "UnsupportedOption"]
