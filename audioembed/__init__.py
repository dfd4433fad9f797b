"""audioembed: unsupervised semantic audio embeddings (Jansen et al., ICASSP 2018).

    >>> from audioembed import embed
    >>> e = embed("clip.wav")          # (128,) float32, unit norm

Importing this package downloads nothing; only ``hf-hub:`` model names reach the network.
"""
__version__ = "0.1.0"

from audioembed.api import Embeddings, embed
from audioembed.audio_io import AudioError, SilentAudioWarning
from audioembed.loading import ModelNotAvailableError, load_model
from audioembed.model import AudioResNet, ModelConfig
from audioembed.model_folder import ModelFormatError, save_model_folder
from audioembed.registry import DEFAULT_MODEL, list_models

__all__ = [
    "AudioError", "AudioResNet", "DEFAULT_MODEL", "Embeddings", "ModelConfig", "ModelFormatError",
    "ModelNotAvailableError", "SilentAudioWarning", "__version__", "embed", "list_models",
    "load_model", "save_model_folder",
]
