"""Each step's options declared once, as dataclass fields that carry their help text.

A field made with `setting(default, "help")` is a user-facing option. Everything a user can
set is derived from those declarations: the click options of the step's command
(`click_options`), the keys and JSON Schema of the run file (`from_mapping`, `json_schema`) and
the KFP pipeline parameters (`kfp_parameters`). The name is the field's name everywhere
(`--field-name` on the command line), so an interface cannot drift from the declaration.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

HELP = "help"


def setting(
    default: Any,
    help: str,
    *,
    choices: Iterable[str] | None = None,
    aliases: Iterable[str] = (),
    envvar: str | None = None,
    metavar: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    open_minimum: bool = False,
    kfp: bool = True,
) -> Any:
    """A dataclass field that is a user-facing option: default, help and constraints."""
    metadata = {
        HELP: help,
        "choices": tuple(choices) if choices else None,
        "aliases": tuple(aliases),
        "envvar": envvar,
        "metavar": metavar,
        "minimum": minimum,
        "maximum": maximum,
        "open_minimum": open_minimum,
        "kfp": kfp,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def fraction(default: Any, help: str, **constraints: Any) -> Any:
    """A `setting` that is a share or probability, in [0, 1]."""
    return setting(default, help, minimum=0.0, maximum=1.0, **constraints)


@dataclass(frozen=True)
class Setting:
    """One declared option, as every interface sees it."""

    name: str
    type: Any  # int, float, str, bool, tuple, or one of those | None
    default: Any
    help: str
    choices: tuple[str, ...] | None
    aliases: tuple[str, ...]
    envvar: str | None
    metavar: str | None
    minimum: float | None
    maximum: float | None
    open_minimum: bool
    kfp: bool

    @property
    def flag(self) -> str:
        """The command-line option: `--field-name`."""
        return "--" + self.name.replace("_", "-")

    @property
    def base_type(self) -> Any:
        """The type without `| None`."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if _is_union(self.type) and len(args) == 1:
            return args[0]
        return typing.get_origin(self.type) or self.type

    @property
    def optional(self) -> bool:
        """Whether None is a valid value ("not set")."""
        return _is_union(self.type) and type(None) in typing.get_args(self.type)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def settings_of(cls: type, exclude: Iterable[str] = ()) -> list[Setting]:
    """The declared options of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    skipped = set(exclude)
    found = []
    for item in dataclasses.fields(cls):
        if HELP not in item.metadata or item.name in skipped:
            continue
        default = (
            item.default_factory() if item.default is dataclasses.MISSING else item.default  # type: ignore[misc]
        )
        meta = item.metadata
        found.append(
            Setting(
                name=item.name,
                type=hints[item.name],
                default=default,
                help=meta[HELP],
                choices=meta["choices"],
                aliases=meta["aliases"],
                envvar=meta["envvar"],
                metavar=meta["metavar"],
                minimum=meta["minimum"],
                maximum=meta["maximum"],
                open_minimum=meta["open_minimum"],
                kfp=meta["kfp"],
            )
        )
    return found


class ConfigError(ValueError):
    """A run file or mapping that does not match the declaration (names the key and file)."""


def suggestion(key: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' when a known name is close to `key`, else ''."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(item: Setting, value: Any, where: str) -> Any:
    """`value` as the declared type; text (from KFP or YAML) is parsed, others checked."""
    if value is None:
        if item.optional:
            return None
        raise ConfigError(f"{where}: {item.name} may not be empty")
    kind = item.base_type
    if kind in (dict, tuple) and isinstance(value, str) and value.strip()[:1] in ("{", "["):
        import json  # KFP hands dicts and lists inside a dict parameter over as JSON text

        value = json.loads(value)
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
        if kind is tuple:  # the only tuple option is a ratio triple (ingest's split)
            if isinstance(value, (list, tuple)):
                value = ",".join(str(part) for part in value)
            return parse_ratios(value)
        if kind is dict:
            if not isinstance(value, Mapping):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: {item.name} must be {getattr(kind, '__name__', kind)}, not {value!r}"
        ) from None
    return value


def check_value(item: Setting, value: Any, where: str) -> None:
    """Choices and minimum, with the same message on every interface."""
    if value is None:
        return
    if item.choices and value not in item.choices:
        raise ConfigError(
            f"{where}: {item.name} must be one of {', '.join(item.choices)}, not {value!r}"
        )
    low = item.minimum
    if low is not None and (value <= low if item.open_minimum else value < low):
        relation = ">" if item.open_minimum else ">="
        raise ConfigError(f"{where}: {item.name} must be {relation} {low}, not {value!r}")
    if item.maximum is not None and value > item.maximum:
        raise ConfigError(f"{where}: {item.name} must be <= {item.maximum}, not {value!r}")


def from_mapping(cls: type, values: Mapping[str, Any], where: str, base: Any = None) -> Any:
    """A `cls` from a run-file section or KFP dict: unknown keys are errors with a suggestion,
    values are coerced to the declared types, the rest keep `base`'s (or the defaults)."""
    declared = {item.name: item for item in settings_of(cls)}
    changes = {}
    for key, value in values.items():
        if key not in declared:
            raise ConfigError(
                f"{where}: unknown key {key!r}{suggestion(key, declared)}; "
                f"known: {', '.join(declared)}"
            )
        item = declared[key]
        changes[key] = coerce(item, value, where)
        check_value(item, changes[key], where)
    try:
        return dataclasses.replace(base if base is not None else cls(), **changes)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def as_mapping(config: Any) -> dict[str, Any]:
    """The declared options of a config object, as plain JSON-ready values."""
    values = {}
    for item in settings_of(type(config)):
        value = getattr(config, item.name)
        values[item.name] = list(value) if isinstance(value, tuple) else value
    return values


JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", tuple: "array"}
JSON_TYPES[dict] = "object"


def json_schema(cls: type, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON Schema of one run-file section (additionalProperties false: typos fail)."""
    properties = {}
    for item in settings_of(cls, exclude):
        kind = JSON_TYPES[item.base_type]
        schema: dict[str, Any] = {
            "type": [kind, "null"] if item.optional else kind,
            "description": item.help,
            "default": list(item.default) if isinstance(item.default, tuple) else item.default,
        }
        if item.choices:
            schema["enum"] = list(item.choices)
        if item.minimum is not None:
            schema["exclusiveMinimum" if item.open_minimum else "minimum"] = item.minimum
        if item.maximum is not None:
            schema["maximum"] = item.maximum
        properties[item.name] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


def click_options(cls: type, exclude: Iterable[str] = (), unset_default: bool = False) -> Callable:
    """A decorator adding one click option per declared field of `cls` (same order).
    With `unset_default` an option not given is None (an override of a run file), and the
    short aliases are left out (they would clash across sections)."""
    import click

    def option(item: Setting) -> Callable:
        names = [item.flag, *([] if unset_default else item.aliases), item.name]
        extra: dict[str, Any] = {"help": item.help, "show_default": not unset_default}
        if item.envvar and not unset_default:
            extra.update(envvar=item.envvar, show_envvar=True)
        default = None if unset_default else item.default
        if item.base_type is bool:
            names[0] = f"{item.flag}/--no-{item.flag[2:]}"
            return click.option(*names, default=default, **extra)
        if item.base_type is dict:  # LABEL=P pairs, repeatable
            return click.option(
                *names,
                multiple=True,
                metavar=item.metavar,
                callback=lambda ctx, param, pairs: parse_pairs(pairs, param.opts[-1]),
                help=item.help,
            )
        if item.choices:
            kind: Any = click.Choice(item.choices)
        elif item.base_type is tuple:
            kind = _ratios()
        elif item.base_type is int and (item.minimum, item.maximum) != (None, None):
            kind = click.IntRange(min=item.minimum, max=item.maximum)
        elif item.base_type is float and (item.minimum, item.maximum) != (None, None):
            kind = click.FloatRange(item.minimum, item.maximum, min_open=item.open_minimum)
        else:
            kind = item.base_type
        return click.option(*names, type=kind, default=default, metavar=item.metavar, **extra)

    def decorate(command: Callable) -> Callable:
        for item in reversed(settings_of(cls, exclude)):
            command = option(item)(command)
        return command

    return decorate


def config_from_options(cls: type, options: dict[str, Any], base: Any = None) -> Any:
    """Pop `cls`'s declared options out of a click command's keyword arguments into a `cls`."""
    names = [item.name for item in settings_of(cls)]
    values = {name: options.pop(name) for name in names if name in options}
    try:
        return dataclasses.replace(base if base is not None else cls(), **values)
    except ValueError as error:
        import click

        raise click.UsageError(str(error)) from None


def parse_pairs(pairs: Iterable[str], option: str) -> dict[str, float]:
    """KEY=NUMBER pairs (the last '=' splits, so keys may contain '=') into a dict."""
    import click

    found = {}
    for pair in pairs:
        key, sep, value = pair.rpartition("=")
        try:
            found[key] = float(value)
        except ValueError:
            key = ""
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not LABEL=P", param_hint=option)
    return found


def parse_ratios(text: str) -> tuple[float, ...]:
    """Parse "70/10/20" or "0.7,0.1,0.2" into fractions that sum to 1."""
    try:
        parts = [float(p) for p in str(text).replace("/", ",").split(",")]
    except ValueError:
        raise ValueError(f"need three numbers like 70/10/20, got {text!r}") from None
    total = sum(parts)
    if len(parts) != 3 or total <= 0 or any(p < 0 for p in parts):
        raise ValueError(f"need three non-negative numbers like 70/10/20, got {text!r}")
    return tuple(p / total for p in parts)


def _ratios_type() -> Any:
    import click

    class Ratios(click.ParamType):
        name = "TRAIN/VAL/TEST"

        def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
            if isinstance(value, tuple):
                return value
            try:
                return parse_ratios(value)
            except ValueError as error:
                self.fail(str(error), param, ctx)

    return Ratios()


_RATIOS: list[Any] = []


def _ratios() -> Any:
    """One shared click type for train/validation/test ratios (click loads only in CLIs)."""
    if not _RATIOS:
        _RATIOS.append(_ratios_type())
    return _RATIOS[0]


def kfp_parameters(sections: Iterable[tuple[type, Iterable[str]]]) -> list[Setting]:
    """The pipeline parameters a set of config sections declares (kfp=True fields)."""
    found: list[Setting] = []
    for cls, exclude in sections:
        found.extend(item for item in settings_of(cls, exclude) if item.kfp)
    names = [item.name for item in found]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(f"config fields {clashes} are declared in two sections")
    return found
