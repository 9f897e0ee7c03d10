"""Model factory keyed by name: ``create_model("convnet", channels=1, num_classes=10, image_size=(28, 28))``.

Every model exposes ``embed(x)`` (features before the classifier) and ``classifier``, so
distribution matching, herding and k-center read embeddings the same way from any network.

A model config (``conf/model``) is ``name`` plus the settings of the model's constructor: the keyword
arguments after ``(channels, num_classes, image_size)``, typed and ranged by their annotations, which
:func:`check_model_settings` checks before a run starts.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any

from omegaconf import DictConfig
from pydantic import AfterValidator, ConfigDict, ValidationError, create_model as pydantic_model

from distillkit.config import group_options, model_config
from distillkit.errors import UserError
from distillkit.models.networks import AlexNet, ConvNet, ResNet, VGG, TimmModel
from distillkit.validation import SettingError, explain, plain

# name -> (class, settings the name implies: defaults a config may change, fixed ones it may not)
MODELS = {
    "convnet": (ConvNet, {}, {}),
    "convnetd4": (ConvNet, {}, {"depth": 4}),
    "convnetd6": (ConvNet, {}, {"depth": 6}),
    "resnet18": (ResNet, {"blocks": (2, 2, 2, 2)}, {}),
    "resnet18_bn": (ResNet, {"blocks": (2, 2, 2, 2), "norm": "batchnorm"}, {}),
    "resnetap10": (ResNet, {"blocks": (1, 1, 1, 1), "avgpool_downsample": True}, {}),
    "vgg11": (VGG, {}, {}),
    "alexnet": (AlexNet, {}, {}),
    "timm": (TimmModel, {}, {}),
}
DATA_ARGUMENTS = ("self", "channels", "num_classes", "image_size")


def unknown_model(name) -> str:
    return f"unknown model '{name}' (choose from: {', '.join(MODELS)})"


def model_class(name: str) -> type:
    """The class that model ``name`` builds (its constructor's annotations type the model's settings)."""
    if name not in MODELS:
        raise UserError(unknown_model(name))
    return MODELS[name][0]


def create_model(name: str, channels: int, num_classes: int, image_size, **kwargs):
    """Build model ``name`` for images of ``channels``×``image_size`` and ``num_classes`` outputs."""
    cls = model_class(name)
    _, defaults, fixed = MODELS[name]
    return cls(channels=channels, num_classes=num_classes, image_size=tuple(image_size),
               **{**defaults, **kwargs, **fixed})


@functools.cache
def _settings_schema(name: str):
    """A pydantic model of the settings model ``name`` takes (its constructor's annotated keywords)."""
    cls, _, fixed = MODELS[name]
    parameters = inspect.signature(cls.__init__, eval_str=True).parameters.values()
    fields = {p.name: (p.annotation, p.default) for p in parameters
              if p.name not in DATA_ARGUMENTS and p.name not in fixed
              and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    open_ended = any(p.kind == p.VAR_KEYWORD for p in parameters)
    return pydantic_model(f"{cls.__name__}Settings", __config__=ConfigDict(extra="allow" if open_ended else "forbid"),
                          **fields)


def check_model_settings(cfg: dict) -> None:
    """Check a model config (``name`` and its settings) without building the model; a bad setting is a
    :class:`~distillkit.validation.SettingError` at its key (``width``, ``name``)."""
    name = cfg.get("name")
    if name not in MODELS:
        raise SettingError("name", unknown_model(name))
    settings = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    try:
        _settings_schema(name).model_validate(settings)
    except ValidationError as err:
        problem = explain(err)
        if problem.message.startswith("is not a setting"):
            problem.message = f"is not a setting of model '{name}'"
        raise SettingError(problem.key, problem.message) from None


def _known_model(value):
    """A name from conf/model, or a model config node whose settings fit the model's constructor."""
    if not isinstance(value, (dict, DictConfig)) and str(value) not in group_options("model"):
        raise SettingError("", f"unknown model '{value}' (choose from: {', '.join(group_options('model'))})")
    check_model_settings(plain(model_config(value)))
    return value


# a model argument of a stage: a name from conf/model, or a model config node (``model@roles.teacher.model=resnet18``)
ModelSpec = Annotated[Any, AfterValidator(_known_model)]
