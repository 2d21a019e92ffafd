"""PyTorch reference implementations of the IndexTTS2 models, written afresh from the official
code's behaviour (index-tts/index-tts, NVIDIA BigVGAN), plus the checkpoint converter and the
synthetic-fixture writer. Module paths equal official checkpoint keys."""
