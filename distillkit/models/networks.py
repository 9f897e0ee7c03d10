"""The classic dataset-distillation networks (ConvNet, ResNet, VGG, AlexNet) and a timm wrapper.

Shapes follow the DC/DSA/DM/MTT code base so published numbers stay comparable: a 1-channel
28×28 input is padded to 32×32 by the first convolution; "instance norm" is GroupNorm(C, C)
with affine parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from distillkit.errors import UserError
from distillkit.validation import PositiveInt

# The settings a model config may carry (conf/model) are its constructor's keyword arguments after
# (channels, num_classes, image_size); their annotations are checked before a run starts
# (distillkit.models.check_model_settings).
Norm = Literal["instancenorm", "batchnorm", "groupnorm", "none"] | None
Act = Literal["relu", "leakyrelu", "sigmoid", "gelu"]
Pooling = Literal["avgpool", "maxpool", "none"] | None


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind in ("none", None):
        return nn.Identity()
    raise UserError(f"unknown norm '{kind}' (instancenorm, batchnorm, groupnorm, none)")


def make_act(kind: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid,
            "gelu": nn.GELU}
    if kind not in acts:
        raise UserError(f"unknown activation '{kind}' (choose from: {', '.join(acts)})")
    return acts[kind]()


def make_pool(kind: str) -> nn.Module:
    if kind == "avgpool":
        return nn.AvgPool2d(2, ceil_mode=True)
    if kind == "maxpool":
        return nn.MaxPool2d(2, ceil_mode=True)
    if kind in ("none", None):
        return nn.Identity()
    raise UserError(f"unknown pooling '{kind}' (avgpool, maxpool, none)")


def _feature_dim(features: nn.Module, channels: int, image_size) -> int:
    try:
        with torch.no_grad():
            return features(torch.zeros(2, channels, *image_size)).flatten(1).shape[1]
    except (RuntimeError, ValueError) as err:
        raise UserError(f"{channels}×{image_size[0]}×{image_size[1]} images are too small for this network "
                        f"({str(err).splitlines()[0]}); pick a shallower model") from None


class Classifier(nn.Module):
    """``features`` then a linear ``classifier``; ``embed`` returns the flattened features."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ConvNet(Classifier):
    """ConvNet-D: D × [conv3×3 → norm → act → pool], then one linear layer."""

    def __init__(self, channels, num_classes, image_size, width: PositiveInt = 128, depth: PositiveInt = 3,
                 norm: Norm = "instancenorm", act: Act = "relu", pooling: Pooling = "avgpool"):
        super().__init__()
        padded = image_size[0] + (4 if channels == 1 and image_size[0] == 28 else 0)
        if norm == "instancenorm" and padded // 2 ** (depth - 1) < 2:
            raise UserError(f"ConvNet-{depth} with instance norm needs images of at least {2 ** depth} pixels "
                            f"(got {image_size[0]}): its last norm would see a single pixel")
        layers, in_ch = [], channels
        for d in range(depth):
            pad = 3 if channels == 1 and d == 0 and image_size[0] == 28 else 1
            layers += [nn.Conv2d(in_ch, width, 3, padding=pad), make_norm(norm, width), make_act(act),
                       make_pool(pooling)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(_feature_dim(self.features, channels, image_size), num_classes)


class BasicBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride, norm, avgpool_downsample):
        super().__init__()
        conv_stride = 1 if avgpool_downsample else stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, conv_stride, 1, bias=False)
        self.bn1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, out_ch)
        self.pool = nn.AvgPool2d(2) if avgpool_downsample and stride > 1 else nn.Identity()
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(2) if avgpool_downsample and stride > 1 else nn.Identity(),
                nn.Conv2d(in_ch, out_ch, 1, 1 if avgpool_downsample else stride, bias=False),
                make_norm(norm, out_ch))

    def forward(self, x):
        out = torch.relu(self.bn1(self.pool(self.conv1(x))))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(Classifier):
    """CIFAR-style ResNet (3×3 stem); ``avgpool_downsample`` gives ResNetAP (IDC/Minimax)."""

    def __init__(self, channels, num_classes, image_size, blocks: tuple[PositiveInt, ...] = (2, 2, 2, 2),
                 norm: Norm = "instancenorm", width: PositiveInt = 64, avgpool_downsample: bool = False):
        super().__init__()
        stem = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), make_norm(norm, width), nn.ReLU()]
        if image_size[0] > 64:  # ImageNet-size inputs: downsample early as the reference nets do
            stem += [nn.AvgPool2d(2) if avgpool_downsample else nn.MaxPool2d(3, 2, 1)]
        layers, in_ch = [], width
        for i, n in enumerate(blocks):
            out_ch = width * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(in_ch, out_ch, 2 if i > 0 and j == 0 else 1, norm, avgpool_downsample))
                in_ch = out_ch
        self.features = nn.Sequential(*stem, *layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(in_ch, num_classes)


class VGG(Classifier):
    """VGG-11 with instance norm (DC's ``VGG11``); ``norm=batchnorm`` gives ``VGG11BN``."""

    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, channels, num_classes, image_size, norm: Norm = "instancenorm"):
        super().__init__()
        layers, in_ch = [], channels
        for i, v in enumerate(self.CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            pad = 3 if channels == 1 and i == 0 and image_size[0] == 28 else 1
            layers += [nn.Conv2d(in_ch, v, 3, padding=pad), make_norm(norm, v), nn.ReLU()]
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(_feature_dim(self.features, channels, image_size), num_classes)


class AlexNet(Classifier):
    """DC's AlexNet variant for 32×32 inputs."""

    def __init__(self, channels, num_classes, image_size):
        super().__init__()
        pool = lambda: nn.MaxPool2d(2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 5, 1, 4 if channels == 1 else 2), nn.ReLU(), pool(),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(), pool(),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), pool())
        self.classifier = nn.Linear(_feature_dim(self.features, channels, image_size), num_classes)


class TimmModel(nn.Module):
    """Any timm model by name (``model=timm model.timm_name=resnet18``); weights only when asked."""

    def __init__(self, channels, num_classes, image_size, timm_name: str = "resnet18", pretrained: bool = False,
                 **kwargs):
        super().__init__()
        try:
            import timm
        except Exception as err:  # timm imports torchvision, which can be broken on CPU-only installs
            raise UserError(f"timm models need a working timm/torchvision install ({type(err).__name__}: "
                            f"{str(err).splitlines()[0]})") from None
        if timm_name not in timm.list_models(pretrained=pretrained) and timm_name not in timm.list_models():
            raise UserError(f"timm has no model '{timm_name}'")
        self.net = timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes,
                                     in_chans=channels, **kwargs)
        self.classifier = self.net.get_classifier()

    def embed(self, x):
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def forward(self, x):
        return self.net(x)
