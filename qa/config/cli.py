"""Command lines made from the configuration dataclasses, parsed and validated one way.

Each field of a command's config (`qa.config.train`) becomes a flag: ``--field-name``,
its type from the annotation, its help and extras from the field metadata.
Nested settings (`WindowSettings`, `DecodeSettings`) add their own fields. A
``bool`` field that defaults to True becomes ``--no-field-name``. argparse only
converts types; the values are checked by the config's ``problems()``.

Why not `transformers.HfArgumentParser`, which also makes flags from dataclasses: it takes flat
dataclasses only (our window and decoding settings are nested and shared by three commands), its
errors are argparse's usage dump rather than one line with exit status 2, and what is ours anyway
would stay: run_qa.py switches that set another flag's value, evaluate.py's "as trained" defaults
read from a checkpoint, and ``--config`` checked key by key against the flags' own rules.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from qa.config.settings import field_flag, flag, raise_problems
from qa.errors import QAError
from qa.files import read_json_object, read_training_args

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class CommandConfig(Protocol):
    """A command's flags: a dataclass that lists its own invalid values."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def problems(self) -> list[str]: ...


Config = TypeVar("Config", bound=CommandConfig)
Settings = TypeVar("Settings", bound="DataclassInstance")


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
    config_class: type[DataclassInstance],
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
        if isinstance(annotation, type) and is_dataclass(annotation):
            add_flags(parser, annotation, as_trained or metadata.get("as_trained", False), target, only_given)
        else:
            _add_flag(target, item.name, annotation, _default_of(item), metadata, as_trained, only_given)


def _add_flag(
    target: Any, name: str, annotation: Any, default: Any, metadata: dict, as_trained: bool, only_given: bool
) -> None:
    help_text = metadata.get("help", "")
    # A field may be named apart from its flag (``print_json`` for --json) where the flag's word would
    # mislead as an attribute; fields read from --config files keep their flag's name (the file's key).
    shown = metadata.get("flag", name)
    # run_qa.py / run_qa_no_trainer.py spellings of the same flag, listed beside ours in --help.
    aliases = list(metadata.get("run_qa", ()))
    # argparse.SUPPRESS as the default: the parsed namespace holds only the flags given.
    given_default = {"default": argparse.SUPPRESS} if only_given else {}
    for switch, value in metadata.get("run_qa_switches", {}).items():
        target.add_argument(
            switch,
            dest=name,
            action="store_const",
            const=value,
            default=argparse.SUPPRESS,
            help=f"run_qa.py's spelling of {flag(name)} {value}"
            if not isinstance(value, bool)
            else "run_qa.py's switch, on by default here",
        )
    if annotation is bool:
        if default:
            target.add_argument(
                f"--no-{shown.replace('_', '-')}",
                dest=name,
                action="store_false",
                help=f"turn off: {help_text}",
                **given_default,
            )
        else:
            target.add_argument(flag(shown), *aliases, dest=name, action="store_true", help=help_text, **given_default)
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
    target.add_argument(flag(shown), *aliases, **options)


def run_qa_aliases(config_class: type) -> list[tuple[str, str]]:
    """(run_qa.py spelling, our flag) for every field of ``config_class`` and its nested settings."""
    hints = typing.get_type_hints(config_class)
    table = []
    for item in fields(config_class):
        if is_dataclass(hints[item.name]):
            table += run_qa_aliases(hints[item.name])
            continue
        table += [(alias, field_flag(item)) for alias in item.metadata.get("run_qa", ())]
        for switch, value in item.metadata.get("run_qa_switches", {}).items():
            if isinstance(value, bool):
                table.append((switch, f"(on by default; --no-{item.name.replace('_', '-')} turns it off)"))
            else:
                table.append((switch, f"{flag(item.name)} {value}"))
    for switch, meaning in getattr(config_class, "RUN_QA_NO_OPS", {}).items():
        table.append((switch, f"(accepted: {meaning})"))
    return table


def build_config(config_class: type[Settings], values: dict[str, Any], **nested: Any) -> Settings:
    """The config from parsed values; ``nested`` gives ready-made nested settings."""
    hints = typing.get_type_hints(config_class)
    arguments = {}
    for item in fields(config_class):
        annotation = hints[item.name]
        if item.name in nested:
            arguments[item.name] = nested[item.name]
        elif isinstance(annotation, type) and is_dataclass(annotation):
            arguments[item.name] = build_config(annotation, values)
        elif item.name in values:
            arguments[item.name] = values[item.name]
    return config_class(**arguments)


def given_flags(config_class: type[DataclassInstance], argv: list[str] | None) -> set[str]:
    """The fields whose flags appear on the command line (after a successful parse of the same argv)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser, config_class, only_given=True)
    return set(vars(parser.parse_known_args(argv)[0]))


def parse_config(parser: argparse.ArgumentParser, config_class: type[Config], argv: list[str] | None) -> Config:
    """Parse ``argv`` into ``config_class`` and report every bad value in one error.

    With ``--config FILE`` (train.py), settings come from the file unless a flag on the command line gives them.
    """
    values = vars(parser.parse_args(argv))
    given = given_flags(config_class, argv)
    config_file = values.pop("config", None)
    if config_file is not None:
        from_file = settings_from_file(config_class, Path(config_file), given)
        # A flag given wins over the file, and so over the file's settings that would override what it says.
        clears: Callable[[str, Any], tuple[str, ...]] | None = getattr(config_class, "settings_cleared_by", None)
        if clears is not None:
            for name in given:
                for cleared in clears(name, values[name]):
                    if cleared not in given:
                        from_file.pop(cleared, None)
        values.update(from_file)
    hints = typing.get_type_hints(config_class)
    nested = {
        item.name: settings_as_trained(hints[item.name], values)
        for item in fields(config_class)
        if item.metadata.get("as_trained")
    }
    config = build_config(config_class, values, **nested)
    problems = config.problems() + config.file_problems() if hasattr(config, "file_problems") else config.problems()
    if hasattr(config, "flag_problems"):
        problems += config.flag_problems(given)
    raise_problems(problems)
    return config


def settings_as_trained(settings_class: type[Settings], values: dict[str, Any]) -> Settings:
    """Settings from the flags given, else from the checkpoint's training_args.json, else the defaults."""
    trained_with = read_training_args(values.get("ckpt"))
    trained_with = trained_with.get("window", trained_with)  # older checkpoints kept the fields flat
    arguments = {}
    for item in fields(settings_class):
        given = values.get(item.name)
        arguments[item.name] = given if given is not None else trained_with.get(item.name, _default_of(item))
    return settings_class(**arguments)


def settings_from_file(config_class: type[DataclassInstance], path: Path, given: set[str]) -> dict[str, Any]:
    """The values a JSON settings file gives (``training_args.json`` of a run works as is), flattened as
    argparse gives them, without those the command line gives. Unknown keys and values of the wrong type
    are refused together in one error; fields marked ``replayed=False`` (--resume, --overwrite-output-dir:
    how one invocation treats its output directory) are not taken from a file."""
    where = f"--config {path}"
    if path.is_dir():
        raise QAError(f"{where}: is a directory, not a JSON file (give its training_args.json, say)")
    if not path.is_file():
        raise QAError(f"{where}: no such file")
    document = read_json_object(path, "the settings")
    hints = typing.get_type_hints(config_class)
    nested = {item.name: hints[item.name] for item in fields(config_class) if is_dataclass(hints[item.name])}
    values: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[str] = []

    # training_args.json of older runs kept the window settings at the top level: find them in their settings
    owner_of_flat_key = {item.name: owner for owner in nested.values() for item in fields(owner)}

    def take(owner: type, key: str, value: Any, shown: str) -> None:
        item = next((item for item in fields(owner) if item.name == key), None)
        if item is None:
            unknown.append(shown)
        elif item.metadata.get("replayed", True) and key not in given:
            annotation = typing.get_type_hints(owner)[key]
            problem = _type_problem(annotation, value) or _choice_problem(item.metadata.get("choices"), value)
            if problem:
                problems.append(f"'{shown}' {problem}")
            else:
                values[key] = float(value) if _plain_type(annotation) is float and value is not None else value

    for key, value in document.items():
        if key in nested:
            if not isinstance(value, dict):
                problems.append(f"'{key}' must be an object")
                continue
            for inner_key, inner_value in value.items():
                take(nested[key], inner_key, inner_value, f"{key}.{inner_key}")
        else:
            take(owner_of_flat_key.get(key, config_class), key, value, key)
    if unknown:
        problems.insert(0, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}")
    if problems:
        raise QAError(f"{where}: {'; '.join(problems)}")
    return values


def _choice_problem(choices: tuple | None, value: Any) -> str | None:
    """A value from a file meets the rule of its flag: one of the flag's choices."""
    if choices is None or value is None or value in choices:
        return None
    return f"must be one of {', '.join(map(str, choices))}, got {value!r}"


def _type_problem(annotation: Any, value: Any) -> str | None:
    if value is None:
        return None if type(None) in typing.get_args(annotation) else "must not be null"
    plain = _plain_type(annotation)
    is_list = any(typing.get_origin(option) is list for option in (annotation, *typing.get_args(annotation)))
    if is_list:
        ok = isinstance(value, list) and all(isinstance(entry, plain) for entry in value)
        return None if ok else f"must be a list of {plain.__name__}"
    if plain is bool:
        ok = isinstance(value, bool)
    elif plain is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif plain is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, plain)
    wanted = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(plain, plain.__name__)
    return None if ok else f"must be {wanted}, got {value!r}"


def command_parser(prog: str, description: str, config_class: type, settings_file: bool = False) -> ArgumentParser:
    """The parser of one command; ``settings_file`` adds ``--config FILE`` (flags given override the file)."""
    parser = ArgumentParser(prog=prog, description=description)
    if settings_file:
        parser.add_argument(
            "--config",
            metavar="FILE",
            help="start from the settings in this JSON file (an earlier run's training_args.json works as is); "
            "flags given here override it",
        )
    add_flags(parser, config_class)
    for switch, meaning in getattr(config_class, "RUN_QA_NO_OPS", {}).items():
        parser.add_argument(
            switch, action="store_true", dest="_no_op", default=argparse.SUPPRESS, help=f"accepted: {meaning}"
        )
    return parser
