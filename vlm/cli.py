"""Config parsing shared by every ``python -m vlm <stage>``.

One dataclass per stage, parsed by transformers' ``HfArgumentParser`` (the parser HF users know:
field docstrings via ``metadata={"help": …}`` become ``--help``). Three small additions:

* ``--config FILE.yaml`` supplies defaults from YAML; flags on the command line override it.
  An unknown YAML key is an error naming the file and the key.
* Fields with ``metadata={"positional": True}`` may also be given positionally, in declaration
  order (``python -m vlm metrics preds.jsonl`` ≡ ``--predictions preds.jsonl``).
* A bad command line is a DataError, like bad data: one ``flags: --name: what`` line per problem, exit 2 —
  argparse's own errors (a missing or unknown option, a bad choice or type) and the stage Config's checks in
  ``__post_init__``, which run as the dataclass is built from the flags, before any data or model loads.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import types
from pathlib import Path
from typing import Sequence, TypeVar

import yaml

from vlm.data.errors import DataError

C = TypeVar("C")


def _positional_fields(config_cls: type) -> list[tuple[str, bool]]:
    """(name, takes a list) of the fields marked positional, in declaration order."""
    return [(f.name, getattr(f.type, "__origin__", f.type) is list or str(f.type).startswith("list"))
            for f in dataclasses.fields(config_cls) if f.metadata.get("positional")]


def _expand_positionals(argv: list[str], fields: list[tuple[str, bool]]) -> list[str]:
    """Turn leading bare tokens into ``--name value`` pairs (only before the first flag); a list field
    takes every remaining bare token."""
    out: list[str] = []
    i = 0
    for name, is_list in fields:
        take = 0
        while i + take < len(argv) and not argv[i + take].startswith("-") and (is_list or take == 0):
            take += 1
        if take:
            out += [f"--{name}", *argv[i:i + take]]
            i += take
    return out + argv[i:]


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    for i, tok in enumerate(argv):
        if tok == "--config" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if tok.startswith("--config="):
            return tok.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def load_yaml_defaults(path: str, config_cls: type) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DataError.single(p, "-", "config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"line {mark.line + 1}" if mark else "-"
        raise DataError.single(p, loc, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise DataError.single(p, "top level", "expected a mapping of option: value")
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError([(str(p), f"key '{k}'", f"unknown option (known: {', '.join(sorted(known))})") for k in unknown])
    return data


def _argparse_problems(message: str) -> list[tuple[str, str, str]]:
    """argparse's message -> ``flags: --name: what`` lines (every missing required option on its own line).
    argparse names an option by all its spellings (``--out_dir/--out-dir``): the first is the field's name."""
    required = "the following arguments are required: "
    if message.startswith(required):
        return [("flags", names.split("/")[0], "required") for names in message[len(required):].split(", ")]
    if message.startswith("argument ") and ": " in message:
        names, what = message[len("argument "):].split(": ", 1)
        return [("flags", names.split("/")[0], what)]
    return [("flags", "-", message)]


def _parser_class():
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        """HfArgumentParser that knows our one extra field metadata key, ``positional``, and reports a bad
        command line as a DataError (one line per problem, exit 2) instead of argparse's usage block."""

        def error(self, message: str):
            raise DataError(_argparse_problems(message))

        @staticmethod
        def _parse_dataclass_field(parser, field):
            if field.metadata.get("positional"):
                field = copy.copy(field)
                meta = {k: v for k, v in field.metadata.items() if k != "positional"}
                meta["help"] = (meta.get("help", "") + " (may also be given positionally)").strip()
                field.metadata = types.MappingProxyType(meta)
            HfArgumentParser._parse_dataclass_field(parser, field)

    return Parser


def parse_config(config_cls: type[C], argv: Sequence[str] | None = None, prog: str | None = None) -> C:
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = _split_config_flag(argv)
    argv = _expand_positionals(argv, _positional_fields(config_cls))
    parser = _parser_class()(config_cls, prog=prog, description=config_cls.__doc__)
    parser.add_argument("--config", metavar="FILE.yaml", help="read defaults for these options from a YAML file")
    if config_path:
        defaults = load_yaml_defaults(config_path, config_cls)
        parser.set_defaults(**defaults)
        # A required option supplied by YAML is no longer required on the command line.
        for action in parser._actions:
            if action.dest in defaults:
                action.required = False
    # the Config's __post_init__ checks the values: a DataError from here on names every bad flag
    parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    cfg, unused = parsed[0], parsed[-1]  # between them: the namespace holding --config
    if unused:
        options = [tok for tok in unused if tok.startswith("-")]
        raise DataError([("flags", tok, "unknown option") for tok in options]
                        or [("flags", tok, "unexpected argument") for tok in unused])
    return cfg
