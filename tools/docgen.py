"""Generated documentation parts: tables and references built from the code itself.

The docs pages hold placeholders such as ``<!-- hccatom:clinical-table -->``; the MkDocs hook
(``tools/mkdocs_hooks.py``) replaces each with the markdown produced here, so the published
tables (clinical variables, manifest fields, CLI reference) cannot drift from the code.
``python tools/docgen.py NAME`` prints one part (NAME: one of :data:`GENERATORS`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: argparse wraps help text to the terminal width; fix it so the output is reproducible.
HELP_COLUMNS = 100


def clinical_table() -> str:
    """The 20 clinical variables: group, position, JSON field, type, unit, allowed values."""
    from hccatom.clinical import FIELD_RANGES, GROUPS, ClinicalVariables

    fields = ClinicalVariables.model_fields
    rows = [
        "| group | # | field (JSON key) | type | unit | allowed | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, names in GROUPS.items():
        for position, name in enumerate(names):
            info = fields[name]
            annotation: Any = info.annotation
            description = (info.description or "").split(" [")[0]
            if name in FIELD_RANGES:
                lo, hi, unit = FIELD_RANGES[name]
                kind = "integer" if annotation is int else "number"
                allowed = f"{lo:g} to {hi:g}"
            elif annotation is bool:
                kind, unit, allowed = "boolean", "-", "`true` / `false`"
            else:  # an Enum
                kind, unit = "string", "-"
                allowed = " / ".join(f"`{m.value}`" for m in annotation)
            rows.append(
                f"| {group} | {position} | `{name}` | {kind} | {unit} | {allowed} | "
                f"{description} |"
            )
    return "\n".join(rows) + "\n"


def _type_name(annotation: Any) -> str:
    """A short readable type: module prefixes dropped (``list[FileEntry]``)."""
    text = getattr(annotation, "__name__", None) if not hasattr(annotation, "__args__") else None
    text = text or str(annotation)
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+", "", text)


def manifest_fields() -> str:
    """Top-level fields of ``manifest.json``: name, type, required, description.

    A field without a description of its own gets the first line of its type's docstring.
    """
    from pydantic import BaseModel

    from hccatom.bundle import Manifest

    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, info in Manifest.model_fields.items():
        description = info.description or ""
        inner = getattr(info.annotation, "__args__", (info.annotation,))[0]
        if not description and isinstance(inner, type) and issubclass(inner, BaseModel):
            description = (inner.__doc__ or "").strip().splitlines()[0]
        type_name = _type_name(info.annotation).replace(" | ", " or ")  # no pipes in tables
        rows.append(
            f"| `{name}` | `{type_name}` | {'yes' if info.is_required() else 'no'} | "
            f"{description.replace('|', chr(92) + '|')} |"
        )
    return "\n".join(rows) + "\n"


@contextlib.contextmanager
def _help_width(columns: int) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _summary(parser: argparse.ArgumentParser, name: str) -> str:
    """The one-line help the parent parser lists for subcommand ``name``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return str(choice.help or "")
    return ""


def _find(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        parser = _subparsers(parser)[name]
    return parser


def command_paths() -> list[tuple[str, ...]]:
    """Every ``hccatom`` subcommand path, in CLI order (lazy ones included)."""
    from hccatom.cli import LAZY_COMMANDS, build_parser

    found: list[tuple[str, ...]] = []

    def walk(path: tuple[str, ...]) -> None:
        if path in LAZY_COMMANDS:  # a leaf; configuring it would import its module
            return
        for name in _subparsers(_find(build_parser(path), path)):
            child = (*path, name)
            found.append(child)
            walk(child)

    walk(())
    for path in LAZY_COMMANDS:  # subcommands that exist only once their parent is chosen
        if path not in found:
            found.append(path)
    return found


def command_help(path: tuple[str, ...]) -> str:
    """``hccatom <path> --help`` as the CLI prints it (fixed width)."""
    from hccatom.cli import build_parser

    with _help_width(HELP_COLUMNS):
        return _find(build_parser(path), path).format_help()


def cli_reference() -> str:
    """Every command's ``--help``, generated from the argparse parser itself."""
    from hccatom.cli import build_parser

    with _help_width(HELP_COLUMNS):
        top = build_parser(()).format_help()
    parts = ["## `hccatom`\n", "```text", top.rstrip(), "```\n"]
    for path in command_paths():
        level = "#" * min(2 + len(path) - 1, 4)
        parts.append(f"#{level} `hccatom {' '.join(path)}`\n")
        summary = _summary(_find(build_parser(path[:-1]), path[:-1]), path[-1])
        if summary:
            parts.append(summary[0].upper() + summary[1:] + ".\n")
        parts += ["```text", command_help(path).rstrip(), "```\n"]
    return "\n".join(parts)


GENERATORS: dict[str, Callable[[], str]] = {
    "clinical-table": clinical_table,
    "manifest-fields": manifest_fields,
    "cli-reference": cli_reference,
}


def placeholder(name: str) -> str:
    """The marker a docs page holds where the generated part ``name`` goes."""
    return f"<!-- hccatom:{name} -->"


def expand(markdown: str) -> str:
    """Replace every known placeholder; an unknown ``<!-- hccatom:... -->`` is an error."""
    for name, make in GENERATORS.items():
        marker = placeholder(name)
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    if "<!-- hccatom:" in markdown:
        start = markdown.index("<!-- hccatom:")
        raise ValueError(f"unknown docs placeholder {markdown[start:start + 60]!r}; "
                         f"known: {sorted(GENERATORS)}")
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Print one generated part."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in GENERATORS:
        print(f"usage: python tools/docgen.py {{{','.join(GENERATORS)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(GENERATORS[args[0]]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
