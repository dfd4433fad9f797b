"""torch.hub entry points.

    >>> import torch, audioembed
    >>> net = torch.hub.load("path/to/audioembed", "triplet_resnet50_joint", source="local")
    >>> net = torch.hub.load("path/to/audioembed", "load_model", "path/to/model_folder", source="local")
    >>> e = audioembed.embed("examples/audio/chime_and_knocks.wav", model=net)

From GitHub, ``torch.hub.load("<owner>/audioembed", "triplet_resnet50_joint")``, where
``<owner>`` is the account hosting the repository.

The network takes log-mel windows ``(batch, 96, 64)``; ``audioembed.embed`` runs the frontend.
Imports stay inside the functions so that only the two loaders are listed as entry points.
"""

dependencies = ["torch", "torchaudio", "numpy", "soundfile", "safetensors"]


def triplet_resnet50_joint(pretrained: bool = True, **kwargs):
    """The paper's ResNet-50 trained on joint unsupervised triplets, 128-d unit-norm output.

    ``pretrained=True`` loads the released weights bundled with the package
    (``audioembed.DEFAULT_MODEL``, see MODEL_CARD.md); a checkout without the weights file
    raises ``audioembed.ModelNotAvailableError``. ``pretrained=False``: the
    same network, randomly initialised, in eval mode. ``kwargs`` go to ``audioembed.load_model``
    (``device``, ``cache_dir``, ...).
    """
    from audioembed import DEFAULT_MODEL, AudioResNet, ModelConfig, load_model

    if pretrained:
        return load_model(DEFAULT_MODEL, **kwargs)
    device = kwargs.pop("device", None)
    if kwargs:
        raise TypeError(f"pretrained=False takes only device=, got {sorted(kwargs)}")
    return AudioResNet(ModelConfig()).eval().to(device)


def load_model(name_or_path=None, **kwargs):
    """Any model ``audioembed.load_model`` knows: a registry name, a model folder
    (``config.json`` + ``model.safetensors``) or ``hf-hub:org/repo[@revision]``."""
    from audioembed import load_model as _load

    return _load(name_or_path, **kwargs)
