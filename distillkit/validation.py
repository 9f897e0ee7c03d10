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
from typing import Annotated, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, validate_call

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


class SettingError(ValueError):
    """Raised by a validator about part of the value it checks: ``key`` (relative to that value; "" for
    the value itself) and a complete ``message``. :func:`explain` names the full key."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(message)


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
PositiveInt = Annotated[Int, Field(ge=1)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
UnitInterval = Annotated[Float, Field(ge=0, le=1)]
# resuming from a checkpoint: auto | true | false (Hydra reads ``resume=true`` as a bool)
Resume = Annotated[Literal["auto", "true", "false"], BeforeValidator(lambda v: str(v).lower() if isinstance(v, bool) else v)]


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


def _message(error: dict) -> str:
    message = re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
    return message[0].lower() + message[1:] if message else message


def explain(err: ValidationError) -> ConfigError:
    """pydantic's first error as a ConfigError at the argument it names.

    A value that fits no member of a union (``'auto'`` or a positive int) is one error at the value's
    key, its members' messages joined by "or" (pydantic reports one error per member, its location
    ending in the member's type, e.g. ``literal['auto']``). A :class:`SettingError` from a validator
    names a key inside the value.
    """
    errors = err.errors()
    first = errors[0]
    loc = list(first["loc"])
    union = [e for e in errors if list(e["loc"])[:-1] == loc[:-1] and e.get("input") == first.get("input")]
    if len(loc) > 1 and len(union) > 1 and any(not str(e["loc"][-1]).isidentifier() for e in union):
        loc = loc[:-1]
        messages = list(dict.fromkeys(_message(e) for e in union))
        message = messages[0] + "".join(f" or {re.sub(r'^input should be ', '', m)}" for m in messages[1:])
        return ConfigError(".".join(map(str, loc)), f"{message} (got {first.get('input')!r})")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):
        return ConfigError(".".join(str(part) for part in [*loc, cause.key] if part != ""), cause.message)
    key = ".".join(str(part) for part in loc) or "?"
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        return ConfigError(key, "is not a setting of this stage (check the spelling; 'distillkit run --cfg job' "
                                "shows the keys)")
    if first["type"] == "missing_argument":
        return ConfigError(key, "is required")
    return ConfigError(key, f"{_message(first)} (got {first.get('input')!r})")


@functools.cache
def _adapter(schema):
    from pydantic import TypeAdapter

    return TypeAdapter(schema)


def check_settings(schema, values: dict, prefix: str = "") -> None:
    """Check plain ``values`` against the annotated dataclass ``schema`` (settings that no constructor
    takes: the dataset's keys, the run's top-level ones); a bad one is a ConfigError under ``prefix``."""
    try:
        _adapter(schema).validate_python(values)
    except ValidationError as err:
        raise explain(err).under(prefix) from None


def build(node, key: str, **kwargs):
    """Call the ``_target_`` of the config ``node`` at ``key`` with its other keys as plain Python
    arguments (interpolations resolved; ``kwargs`` added), as Hydra's ``instantiate`` would with
    ``_recursive_=False, _convert_="all"`` — only faster, which matters because a run (and every job of
    a sweep) builds all its stages before starting.

    Nested stages are not built here: a constructor that takes one builds it with :func:`build` under
    its own relative key, so every error climbs back up with its full key. Any bad setting becomes
    one :class:`ConfigError`; a stage's own :class:`UserError` passes through. A stage or role learns
    its ``key`` (for messages at run time).
    """
    from hydra._internal.utils import _locate  # what instantiate resolves a _target_ with (get_object also logs)

    if isinstance(node, dict):
        node = OmegaConf.create(node)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(key, f"needs a config with a _target_ (got {node!r})")
    settings = OmegaConf.to_container(node, resolve=True)
    target = settings.pop("_target_")
    try:
        constructor = _locate(target)
    except Exception as err:  # not importable
        reason = str(err.__cause__ or err).splitlines()[0]
        raise ConfigError("_target_", f"cannot import '{target}' ({reason})").under(key) from None
    if not callable(constructor):
        raise ConfigError("_target_", f"'{target}' is not a class or function").under(key)
    try:
        built = constructor(**settings, **kwargs)
    except ConfigError as err:
        raise err.under(key) from None
    if hasattr(type(built), "key"):  # stages and roles name their config key in later messages
        built.key = key
    return built


def raw_value(cfg: DictConfig, key: str):
    """The value at the dotted ``key`` (list indices included) as written, interpolations unresolved;
    None when there is no such key."""
    node = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def origin(cfg: DictConfig, key: str) -> str | None:
    """The key whose value ``key`` takes through plain interpolations (``${budget.eval_epochs}``, followed
    to the end of a chain); None when ``key`` holds its own value."""
    seen, found = {key}, None
    while True:
        raw = raw_value(cfg, found or key)
        match = re.fullmatch(r"\$\{([^}:]+)\}", raw) if isinstance(raw, str) else None
        if not match or match.group(1) in seen:
            return found
        found = match.group(1)
        seen.add(found)


def with_origin(err: ConfigError, cfg: DictConfig) -> ConfigError:
    """``err`` noting the budget (or other) key its value was interpolated from, when it was."""
    source = origin(cfg, err.key)
    return ConfigError(err.key, err.message, source) if source and not err.origin else err


def plain(node):
    """A config node (or anything) as plain Python containers."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node

