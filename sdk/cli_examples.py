"""Worked examples at the end of ``hccatom COMMAND --help``.

A new user reads ``--help`` first; a flag list alone does not say which flags go together.
Every ``hccatom ...`` line here is parsed by the test suite against the real parser, so an
example cannot drift from the flags. ``B`` stands for a bundle folder or .zip.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

DEMO_BUNDLE_HINT = ("# B: a bundle folder or .zip; the packaged demo bundle is printed by\n"
                    "#   python -c 'import hccatom.demo as d; print(d.demo_bundle_path())'")

#: command path -> example lines (``hccatom ...`` commands and ``#`` comments).
EXAMPLES: dict[tuple[str, ...], str] = {
    ("recommend",): f"""\
hccatom recommend --bundle B --arterial arterial_dicom/ --portal portal.nii.gz \\
    --clinical examples/clinical_example.json --json rec.json
hccatom recommend --bundle B --study STUDY_DIR --clinical clinical.json \\
    --report report.pdf          # dicom and report extras
{DEMO_BUNDLE_HINT}""",
    ("study",): """\
hccatom study STUDY_DIR                        # its series, and which are arterial/portal
hccatom study STUDY_DIR --quiet                # no progress on stderr""",
    ("demo",): """\
hccatom demo                                   # a synthetic patient through the chain
hccatom demo --seed 3 --json recommendation.json
hccatom demo --json - --quiet                  # the JSON alone on stdout""",
    ("bench",): f"""\
hccatom bench --small --repeats 1 --warmup 0   # a quick smoke test
hccatom bench --json bench.json                # 512x512x200 synthetic study, 5 runs
hccatom bench --bundle B --arterial art.nii.gz --portal portal.nii.gz \\
    --clinical clinical.json --device cuda
{DEMO_BUNDLE_HINT}""",
    ("bundle", "build"): """\
hccatom bundle build --segmentation export/segmentation \\
    --selection TACE=export/TACE HAIC=export/HAIC TC=export/TC HC=export/HC \\
    --thresholds thresholds.json --out site_bundle.zip --sign-key site.pem""",
    ("bundle", "verify"): """\
hccatom bundle verify B
hccatom bundle verify B --trusted-key site.pub.pem --expect-sha256 DIGEST""",
    ("bundle", "info"): """\
hccatom bundle info B
hccatom bundle info B --json""",
    ("bundle", "keygen"): """\
hccatom bundle keygen --private site.pem --public site.pub.pem   # keep site.pem secret""",
    ("bundle", "sign"): """\
hccatom bundle sign B --key site.pem""",
    ("validate",): """\
hccatom validate --demo --out validation/      # synthetic cohort, demo bundle
hccatom validate cohort.csv --bundle B --out validation/""",
    ("export", "selection"): """\
hccatom export selection --checkpoint tace.pth --cohort TACE --out export/TACE""",
}


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """The default formatter, except that the examples keep their lines (no re-wrapping)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The (name, parser) of each subcommand of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def attach_examples(root: argparse.ArgumentParser) -> None:
    """Give every command in :data:`EXAMPLES` an ``examples:`` epilog."""
    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        text = EXAMPLES.get(path)
        if text is not None:
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in text.splitlines())
            parser.formatter_class = ExamplesHelpFormatter
        for name, child in subcommands(parser):
            walk(child, (*path, name))

    walk(root, ())


def example_commands(path: tuple[str, ...]) -> list[list[str]]:
    """The example command lines of one command, as argument lists (comments and
    continuation backslashes removed), for tests."""
    import shlex

    joined = EXAMPLES[path].replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("hccatom "):
            commands.append(shlex.split(line)[1:])
    return commands


__all__ = ["EXAMPLES", "ExamplesHelpFormatter", "attach_examples", "example_commands",
           "subcommands"]
