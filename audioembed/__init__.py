"""audioembed: unsupervised semantic audio embeddings (Jansen et al., ICASSP 2018).

    >>> from audioembed import embed
    >>> e = embed("clip.wav")          # (128,) float32, unit norm

Importing this package downloads nothing; only ``hf-hub:`` model names reach the network.
"""
__version__ = "0.5.0"  # the release of the bundled weights (MODEL_CARD.md)

import importlib

# Where each public name lives. They are imported on first use (PEP 562), so that
# ``import audioembed.cli`` for ``audioembed --help`` does not import torch (seconds, ~600 MB).
_EXPORTS = {
    "Embeddings": "api", "embed": "api",
    "AudioembedError": "errors", "AudioError": "audio_io", "SilentAudioWarning": "audio_io", "TruncatedAudioWarning": "audio_io",
    "ModelNotAvailableError": "loading", "load_model": "loading",
    "AudioResNet": "model", "ModelConfig": "model",
    "keep_freed_memory": "allocator",
    "Classifier": "classify",
    "ModelFormatError": "model_folder", "save_model_folder": "model_folder",
    "DEFAULT_MODEL": "registry", "list_models": "registry",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audioembed' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"audioembed.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
