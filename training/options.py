"""Command-line flags derived from the stages' config dataclasses, so each option is spelled once.

A config field carries its help in ``field(metadata={"help": ...})`` (see :func:`opt`); its name gives the
flag (``gan_start`` → ``--gan-start``), its annotation the type (``bool`` → ``--x/--no-x``, ``list[T]``
→ several values; ``metadata["parse"]`` reads each). A nested config's fields become flags too, named
with the nesting field's ``metadata["suffix"]`` (``weights.gan`` → ``--gan-weight``);
``metadata["flag"]`` names a flag outright. Every derived flag defaults to None, so what a user leaves
unset keeps the value of the config (or preset) it is applied to (:func:`apply_flags`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

SKIP = {"cli": False}  # metadata of a field that is not a flag (set by the stage itself)


def opt(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:  # noqa: A002 - argparse's word
    """A config field with its command-line help."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, suffix: str = "", dest: str = "", only: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of the dataclass ``cls`` (recursing into nested configs), or per field named
    in ``only``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or (only and f.name not in only):
            continue
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            add_config_arguments(parser, kind, f.metadata.get("suffix", ""), f"{dest}{f.name}.")
            continue
        flag = "--" + f.metadata.get("flag", f.name.replace("_", "-") + suffix)
        base, many = _scalar(kind)
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = f" (default {default})" if default not in (None, "", ()) else ""
        kwargs: dict[str, Any] = {"dest": dest + f.name, "default": None, "help": f.metadata.get("help", "") + shown}
        if base is not bool:
            kwargs["metavar"] = f.name.upper()
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = f.metadata.get("parse", base)
            if many:
                kwargs["nargs"] = "*"
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kwargs)


def apply_flags(config: Any, args: argparse.Namespace, dest: str = "") -> Any:
    """``config`` with the fields given on the command line replaced (nested configs likewise)."""
    changes = {}
    for f in dataclasses.fields(config):
        if not f.metadata.get("cli", True):
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = apply_flags(value, args, f"{dest}{f.name}.")
        elif getattr(args, dest + f.name, None) is not None:
            given = getattr(args, dest + f.name)
            changes[f.name] = tuple(given) if isinstance(value, tuple) else given
    return dataclasses.replace(config, **changes)


def _scalar(kind: Any) -> tuple[type, bool]:
    """(element type, several values?) of an annotation such as ``int``, ``float | None``, ``tuple[str, ...]``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _scalar(next(a for a in typing.get_args(kind) if a is not type(None)))
    if origin in (list, tuple):
        return typing.get_args(kind)[0], True
    return kind, False
