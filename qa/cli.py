"""Command lines made from the configuration dataclasses, parsed and validated one way.

Each field of a command's config (`qa.config`) becomes a flag: ``--field-name``,
its type from the annotation, its help and extras from the field metadata.
Nested settings (`WindowSettings`, `DecodeSettings`) add their own fields. A
``bool`` field that defaults to True becomes ``--no-field-name``. argparse only
converts types; the values are checked by the config's ``problems()``.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

from qa.config import raise_problems
from qa.files import read_training_args
from qa.settings import flag

Config = TypeVar("Config")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and errors as one line with exit status 2."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _plain_type(annotation: Any) -> Any:
    """``int | None`` -> int, ``list[str] | None`` -> str."""
    if typing.get_origin(annotation) is None:
        return annotation
    return _plain_type(next(item for item in typing.get_args(annotation) if item is not type(None)))


def _default_of(item: Any) -> Any:
    if item.default is not MISSING:
        return item.default
    return item.default_factory()


def add_flags(
    parser: argparse.ArgumentParser,
    config_class: type,
    as_trained: bool = False,
    target: Any = None,
    only_given: bool = False,
) -> None:
    """Add one flag per field of ``config_class``; nested settings add theirs to the current group.

    ``only_given``: no defaults, so that parsing yields just the flags on the command line.
    """
    hints = typing.get_type_hints(config_class)
    target = target or parser
    for item in fields(config_class):
        metadata = dict(item.metadata)
        if "group" in metadata:
            target = parser.add_argument_group(metadata["group"])
        annotation = hints[item.name]
        if is_dataclass(annotation):
            add_flags(parser, annotation, as_trained or metadata.get("as_trained", False), target, only_given)
        else:
            _add_flag(target, item.name, annotation, _default_of(item), metadata, as_trained, only_given)


def _add_flag(
    target: Any, name: str, annotation: Any, default: Any, metadata: dict, as_trained: bool, only_given: bool
) -> None:
    help_text = metadata.get("help", "")
    # argparse.SUPPRESS as the default: the parsed namespace holds only the flags given.
    given_default = {"default": argparse.SUPPRESS} if only_given else {}
    if annotation is bool:
        if default:
            target.add_argument(
                f"--no-{name.replace('_', '-')}",
                dest=name,
                action="store_false",
                help=f"turn off: {help_text}",
                **given_default,
            )
        else:
            target.add_argument(flag(name), dest=name, action="store_true", help=help_text, **given_default)
        return
    options: dict[str, Any] = {"dest": name, "type": _plain_type(annotation), "help": help_text, "default": default}
    options.update(given_default)
    for key in ("choices", "nargs", "const"):
        if key in metadata:
            options[key] = metadata[key]
    if as_trained and not only_given:
        # evaluate.py / predict.py: the checkpoint's training value unless the flag is given.
        options["default"] = None
        options["help"] = f"{help_text} (default: as trained, else {default})"
    target.add_argument(flag(name), **options)


def build_config(config_class: type[Config], values: dict[str, Any], **nested: Any) -> Config:
    """The config from parsed values; ``nested`` gives ready-made nested settings."""
    hints = typing.get_type_hints(config_class)
    arguments = {}
    for item in fields(config_class):
        annotation = hints[item.name]
        if item.name in nested:
            arguments[item.name] = nested[item.name]
        elif is_dataclass(annotation):
            arguments[item.name] = build_config(annotation, values)
        elif item.name in values:
            arguments[item.name] = values[item.name]
    return config_class(**arguments)


def given_flags(config_class: type, argv: list[str] | None) -> set[str]:
    """The fields whose flags appear on the command line (after a successful parse of the same argv)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser, config_class, only_given=True)
    return set(vars(parser.parse_known_args(argv)[0]))


def parse_config(parser: argparse.ArgumentParser, config_class: type[Config], argv: list[str] | None) -> Config:
    """Parse ``argv`` into ``config_class`` and report every bad value in one error."""
    values = vars(parser.parse_args(argv))
    hints = typing.get_type_hints(config_class)
    nested = {
        item.name: settings_as_trained(hints[item.name], values)
        for item in fields(config_class)
        if item.metadata.get("as_trained")
    }
    config = build_config(config_class, values, **nested)
    problems = config.problems()
    if hasattr(config, "flag_problems"):
        problems += config.flag_problems(given_flags(config_class, argv))
    raise_problems(problems)
    return config


def settings_as_trained(settings_class: type[Config], values: dict[str, Any]) -> Config:
    """Settings from the flags given, else from the checkpoint's training_args.json, else the defaults."""
    trained_with = read_training_args(values.get("ckpt"))
    trained_with = trained_with.get("window", trained_with)  # older checkpoints kept the fields flat
    arguments = {}
    for item in fields(settings_class):
        given = values.get(item.name)
        arguments[item.name] = given if given is not None else trained_with.get(item.name, _default_of(item))
    return settings_class(**arguments)


def command_parser(prog: str, description: str, config_class: type) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description)
    add_flags(parser, config_class)
    return parser
