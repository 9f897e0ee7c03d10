"""The one validation layer: every stage, role and schedule states the type and range of each of its
settings in its constructor's signature, and :func:`build` turns a bad value anywhere into one
:class:`UserError` line that names the full config key (``evaluator.epochs: must be at least 1 (got -1)``).

Constructors are wrapped with :func:`validated` (pydantic's ``validate_call``) and annotated with the
types below. Checks that involve several settings raise :class:`ConfigError` with the key relative
to the stage (``ConfigError("max_start_epoch", ...)``); :func:`build` prefixes the stage's own key,
so a message is right wherever the stage sits in the config (``generator.``, ``roles.experts.curriculum.scorer.``).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError, validate_call

from distillkit.errors import UserError


class ConfigError(UserError):
    """A bad setting, at ``key`` relative to the stage that raised it; :func:`build` makes the key absolute."""

    def __init__(self, key: str, message: str, origin: str | None = None):
        self.key, self.message, self.origin = key, message, origin
        super().__init__(str(self))

    def __str__(self) -> str:
        origin = f" (set by {self.origin})" if self.origin else ""
        return f"{self.key}: {self.message}{origin}"

    def under(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.message, self.origin)


def _not_bool(value):
    # pydantic reads true/false as 1/0; a switch given where a number belongs is a mistake
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _known_model(value):
    from distillkit.config import model_config

    model_config(value)  # a name from conf/model or a config node with a known `name`
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
PositiveInt = Annotated[Int, Field(ge=1)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
UnitInterval = Annotated[Float, Field(ge=0, le=1)]
# a model: a name from conf/model, or a model config node (``model@roles.teacher.model=resnet18``)
ModelSpec = Annotated[Any, AfterValidator(_known_model)]


def validated(function):
    """Check a constructor's arguments against its annotations (pydantic) before it runs; a bad one is a
    :class:`ConfigError` at the argument's name (which :func:`build` makes a full config key)."""
    checked = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        except ValidationError as err:
            raise explain(err) from None

    return wrapper


def one_of(key: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else a ConfigError naming ``key``."""
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(map(str, choices))} (got {value!r})")
    return value


def explain(err: ValidationError) -> ConfigError:
    """pydantic's first error as a ConfigError at the argument it names."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "?"
    message = re.sub(r"^Value error, ", "", first["msg"])
    message = message[0].lower() + message[1:] if message else message
    if first["type"] == "unexpected_keyword_argument":
        return ConfigError(key, "is not a setting of this stage (check the spelling; 'distillkit run --cfg job' "
                                "shows the keys)")
    if first["type"] == "missing_argument":
        return ConfigError(key, "is required")
    return ConfigError(key, f"{message} (got {first.get('input')!r})")


def build(node, key: str, **kwargs):
    """Instantiate the ``_target_`` of the config ``node`` at ``key`` with plain Python arguments.

    Nested stages are not built here: a constructor that takes one builds it with :func:`build` under
    its own relative key, so every error climbs back up with its full key. Any bad setting becomes
    one :class:`ConfigError`; a stage's own :class:`UserError` passes through. A stage or role learns
    its ``key`` (for messages at run time).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if isinstance(node, dict):
        node = OmegaConf.create(node)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(key, f"needs a config with a _target_ (got {node!r})")
    try:
        built = instantiate(node, _recursive_=False, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise cause.under(key) from None
        if isinstance(cause, UserError):
            raise cause from None
        if cause is None:  # the target itself cannot be imported or called
            raise ConfigError("_target_", str(err).splitlines()[0]).under(key) from None
        raise
    if hasattr(type(built), "key"):  # stages and roles name their config key in later messages
        built.key = key
    return built


def with_origin(err: ConfigError, cfg: DictConfig) -> ConfigError:
    """``err`` noting the budget (or other) key its value was interpolated from, when it was."""
    try:
        raw = OmegaConf.select(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)), err.key)
    except Exception:  # a key inside a list or below a value: no origin to report
        return err
    match = re.fullmatch(r"\$\{([^}:]+)\}", raw) if isinstance(raw, str) else None
    if match and match.group(1) != err.key:
        return ConfigError(err.key, err.message, match.group(1))
    return err


def plain(node):
    """A config node (or anything) as plain Python containers."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node

