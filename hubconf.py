"""torch.hub entry points: one per released model of ``audioembed.registry``, and ``load_model``.

    >>> import torch, audioembed
    >>> net = torch.hub.load("path/to/audioembed", "triplet_resnet50_joint", source="local")
    >>> net = torch.hub.load("path/to/audioembed", "load_model", "path/to/model_folder", source="local")
    >>> e = audioembed.embed("examples/audio/chime_and_knocks.wav", model=net)

From GitHub, ``torch.hub.load("<owner>/audioembed", "triplet_resnet50_joint")``, where
``<owner>`` is the account hosting the repository.

The network takes log-mel windows ``(batch, 96, 64)``; ``audioembed.embed`` runs the frontend.
The registry's entries are made here (a name's ``-`` and ``.`` become ``_``); everything else this
module binds starts with ``_``, so that torch.hub lists only the loaders.
"""

import audioembed.registry as _registry

dependencies = ["torch", "torchaudio", "numpy", "soundfile", "safetensors"]


def _entry_point(entry):
    def load(pretrained: bool = True, **kwargs):
        from audioembed import AudioResNet, ModelConfig, load_model

        if pretrained:
            return load_model(entry.name, **kwargs)
        device = kwargs.pop("device", None)
        if kwargs:
            raise TypeError(f"pretrained=False takes only device=, got {sorted(kwargs)}")
        return AudioResNet(ModelConfig()).eval().to(device)

    load.__name__ = load.__qualname__ = entry.identifier
    load.__doc__ = (
        f"{entry.description}; 128-d unit-norm output ({entry.license}; {entry.paper}).\n\n"
        f"``pretrained=True`` loads the released weights ({entry.source}, see MODEL_CARD.md, "
        "checked against their sha256); a checkout without the weights file raises "
        "``audioembed.ModelNotAvailableError``. ``pretrained=False``: the same network, randomly "
        "initialised, in eval mode. ``kwargs`` go to ``audioembed.load_model`` (``device``, "
        "``cache_dir``, ...).")
    return load


for _entry in _registry.released():
    globals()[_entry.identifier] = _entry_point(_entry)


def load_model(name_or_path=None, **kwargs):
    """Any model ``audioembed.load_model`` knows: a registry name, a model folder
    (``config.json`` + ``model.safetensors``) or ``hf-hub:org/repo[@revision]``."""
    from audioembed import load_model as _load

    return _load(name_or_path, **kwargs)
