"""Model factory keyed by name: ``create_model("convnet", channels=1, num_classes=10, image_size=(28, 28))``.

Every model exposes ``embed(x)`` (features before the classifier) and ``classifier``, so
distribution matching, herding and k-center read embeddings the same way from any network.
"""

from __future__ import annotations

from distillkit.errors import UserError
from distillkit.models.networks import AlexNet, ConvNet, ResNet, VGG, TimmModel

MODELS = {
    "convnet": ConvNet,
    "convnetd4": lambda **kw: ConvNet(**{**kw, "depth": 4}),
    "convnetd6": lambda **kw: ConvNet(**{**kw, "depth": 6}),
    "resnet18": lambda **kw: ResNet(**{"blocks": (2, 2, 2, 2), **kw}),
    "resnet18_bn": lambda **kw: ResNet(**{"blocks": (2, 2, 2, 2), "norm": "batchnorm", **kw}),
    "resnetap10": lambda **kw: ResNet(**{"blocks": (1, 1, 1, 1), "avgpool_downsample": True, **kw}),
    "vgg11": VGG,
    "alexnet": AlexNet,
    "timm": TimmModel,
}


def create_model(name: str, channels: int, num_classes: int, image_size, **kwargs):
    """Build model ``name`` for images of ``channels``×``image_size`` and ``num_classes`` outputs."""
    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (choose from: {', '.join(MODELS)})")
    return MODELS[name](channels=channels, num_classes=num_classes, image_size=tuple(image_size), **kwargs)
