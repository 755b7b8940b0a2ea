"""The stack config loader (layer 3 of ``infra/``): schema plus every check, from a flat Pulumi map.

:func:`parse_config` runs once, before any resource is declared. A bad value stops the program with
the key, the value and what is allowed (:class:`ConfigError`), instead of surfacing minutes later as a
cloud API error halfway through an update. The models are in :mod:`infra.schema`, the checks that
read a whole parsed config in :mod:`infra.checks`. ``python -m infra.config`` prints the configuration
table of docs/platform.md from the models' field descriptions (a test keeps it in sync).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError

from infra import checks
from infra.naming import PROJECT

# Monitoring: the config model the alert tests (tests/monitoring) read from here.
from infra.schema import SECRET_KEYS, Monitoring, StackConfig
from infra.schema.base import empty_to_none

__all__ = [
    "NAMESPACE",
    "ConfigError",
    "Monitoring",
    "StackConfig",
    "config_reference_markdown",
    "load_from_pulumi",
    "parse_config",
]

NAMESPACE = f"{PROJECT}:"


class ConfigError(Exception):
    """The stack config is invalid; ``problems`` lists one line per bad key."""

    def __init__(self, stack: str, problems: list[str]) -> None:
        self.stack = stack
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config for stack {stack!r}:\n{lines}")


# --------------------------------------------------------------------------- parsing


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to programs as JSON text; scalars stay strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _key_path(loc: Iterable[int | str]) -> str:
    path = NAMESPACE.rstrip(":")
    first = True
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += (":" if first else ".") + part
            first = False
    return path


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The camelCase keys allowed at ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = next((f for name, f in current.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return []
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return []


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = _key_path(loc) if loc else NAMESPACE.rstrip(":")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(StackConfig, loc)
            problems.append(f"{key}: unknown key; allowed keys here: {', '.join(allowed)}")
            continue
        if err["type"] == "missing":
            problems.append(f"{key}: required key is missing")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        shown = "<secret>" if loc and loc[0] in SECRET_KEYS else repr(value)
        if isinstance(value, dict):
            problems.append(f"{key}: {msg}")
        else:
            problems.append(f"{key}: got {shown}; {msg}")
    return problems


def parse_config(
    raw: Mapping[str, Any],
    *,
    secret_keys: Iterable[str] = (),
    stack: str = "<stack>",
    aws_region: str | None = None,
) -> StackConfig:
    """Parse a flat Pulumi config map (``{"purchase-classifier:cluster": "<json>", ...}``).

    Keys of other namespaces (``aws:region``, ``kubernetes:...``) are ignored here. Raises
    :class:`ConfigError` listing every problem at once, so a user fixes the file in one pass.
    """
    secret = set(secret_keys)
    data: dict[str, Any] = {}
    problems: list[str] = []
    for full_key, value in raw.items():
        if not full_key.startswith(NAMESPACE):
            continue
        key = full_key.removeprefix(NAMESPACE)
        if key in SECRET_KEYS and empty_to_none(value) is not None and full_key not in secret:
            problems.append(
                f"{full_key}: is stored in plain text; it is a secret, set it with "
                f"`pulumi config set --secret {full_key} <value>`"
            )
        data[key] = _decode(value)
    try:
        parsed = StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(stack, problems + _problems(exc)) from None
    problems.extend(checks.problems(parsed, aws_region=aws_region, prefix=NAMESPACE))
    if problems:
        raise ConfigError(stack, problems)
    return parsed


def load_from_pulumi() -> StackConfig:
    """Read the running program's config (CLI or mocks) and parse it.

    The Python SDK has no public "list all keys" call; the language host passes the whole map in
    ``PULUMI_CONFIG`` and the mocks/automation API set it in ``pulumi.runtime.config``. Reading the
    full map is what lets unknown keys (typos) be rejected instead of silently ignored.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env()) | set(runtime_config._SECRET_KEYS.get())
    return parse_config(raw, secret_keys=secret_keys, stack=pulumi.get_stack(), aws_region=raw.get("aws:region"))


# --------------------------------------------------------------------------- documentation


def _iter_fields(model: type[BaseModel], prefix: str) -> Iterable[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        nested = [
            c
            for c in (annotation, *getattr(annotation, "__args__", ()))
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = "—" if isinstance(made, BaseModel) else f"`{json.dumps(made)}`"
        else:
            default = f"`{json.dumps(field.default)}`" if field.default is not None else "—"
        yield key, _type_name(annotation), default, field.description or ""
        if nested:
            yield from _iter_fields(nested[0], f"{key}.")


def _type_name(annotation: Any) -> str:
    """A YAML-flavoured type name for the reference table (independent of module names)."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (UnionType, Union):
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean", SecretStr: "string"}.get(
        annotation, str(annotation)
    )


def config_reference_markdown() -> str:
    """The stack configuration table of docs/platform.md, generated from the field descriptions."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, type_name, default, description in _iter_fields(StackConfig, NAMESPACE):
        lines.append(f"| `{key}` | {type_name} | {default} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(config_reference_markdown(), end="")
