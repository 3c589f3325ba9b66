"""The documentation's generated parts (tools/docgen.py) and the pages that use them.

CI builds the site itself with ``mkdocs build --strict`` (.ci/run); these tests check the
generators against the code they describe, without needing mkdocs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hccatom.bundle import Manifest
from hccatom.clinical import FIELD_RANGES, GROUPS, ClinicalVariables

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_docgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_hccatom_docgen", ROOT / "tools" / "docgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


docgen = _load_docgen()


def _rows(table: str) -> list[list[str]]:
    lines = [ln for ln in table.strip().splitlines() if ln.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip("|"))] for ln in lines[2:]]


def test_clinical_table_has_every_variable_in_model_order_with_unit_and_range() -> None:
    rows = _rows(docgen.clinical_table())
    assert len(rows) == len(ClinicalVariables.model_fields) == 20
    expected = [(g, str(i), f"`{n}`") for g, names in GROUPS.items() for i, n in enumerate(names)]
    assert [(r[0], r[1], r[2]) for r in rows] == expected
    by_name = {r[2].strip("`"): r for r in rows}
    for name, (lo, hi, unit) in FIELD_RANGES.items():
        row = by_name[name]
        assert row[4] == unit
        assert row[5] == f"{lo:g} to {hi:g}"
        assert row[3] == ("integer" if isinstance(lo, int) else "number")
    assert by_name["sex"][5] == "`male` / `female`"
    assert by_name["bclc_stage"][5] == "`A` / `B` / `C`"
    assert by_name["pvtt"][3] == "boolean"


def test_manifest_table_lists_every_field_and_whether_it_is_required() -> None:
    rows = _rows(docgen.manifest_fields())
    assert [r[0].strip("`") for r in rows] == list(Manifest.model_fields)
    for row in rows:
        info = Manifest.model_fields[row[0].strip("`")]
        assert row[2] == ("yes" if info.is_required() else "no")
    files = next(r for r in rows if r[0] == "`files`")
    assert files[1] == "`list[FileEntry]`"


def test_command_paths_cover_the_cli_including_lazy_subcommands() -> None:
    from hccatom.cli import LAZY_COMMANDS

    paths = docgen.command_paths()
    for expected in [("recommend",), ("bundle",), ("bundle", "build"), ("bundle", "verify"),
                     ("bundle", "info"), ("export",), ("demo",), *LAZY_COMMANDS]:
        assert expected in paths
    assert len(paths) == len(set(paths))


def _options(path: tuple[str, ...]) -> list[str]:
    from hccatom.cli import build_parser

    parser = docgen._find(build_parser(path), path)
    return [o for action in parser._actions for o in action.option_strings]


@pytest.mark.parametrize("path", [("recommend",), ("bundle", "build"), ("bundle", "verify"),
                                  ("bundle", "info"), ("demo",)])
def test_command_help_is_the_parser_help_with_every_option(path: tuple[str, ...]) -> None:
    text = docgen.command_help(path)
    assert text.startswith(f"usage: hccatom {' '.join(path)}")
    options = _options(path)
    assert "--help" in options and len(options) > 2
    for option in options:
        assert option in text, option
    assert max(len(line) for line in text.splitlines()) <= docgen.HELP_COLUMNS


@pytest.mark.export
def test_cli_reference_has_a_section_and_every_option_for_every_command() -> None:
    pytest.importorskip("torch", reason="`export` subcommand help needs the export extra")
    text = docgen.cli_reference()
    for path in docgen.command_paths():
        assert f"`hccatom {' '.join(path)}`" in text
        for option in _options(path):
            assert option in text
    assert text.count("```text") == len(docgen.command_paths()) + 1


def test_expand_fills_known_placeholders_and_rejects_unknown_ones() -> None:
    page = f"# T\n\n{docgen.placeholder('clinical-table')}\n"
    out = docgen.expand(page)
    assert "`albumin_g_per_l`" in out and "<!--" not in out
    with pytest.raises(ValueError, match="unknown docs placeholder"):
        docgen.expand("<!-- hccatom:no-such-table -->")


def test_pages_use_only_known_placeholders_and_the_nav_lists_every_page() -> None:
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    used = set()
    for name in pages:
        used |= set(re.findall(r"<!-- hccatom:([a-z-]+) -->", (DOCS / name).read_text("utf-8")))
    assert used == set(docgen.GENERATORS)
    nav = re.findall(r"^  - [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text("utf-8"), re.M)
    assert sorted(nav) == pages, "every docs/*.md page belongs in mkdocs.yml's nav (and back)"


def _prose(page: Path) -> str:
    """A page without its HTML comments (the notes for maintainers)."""
    return re.sub(r"<!--.*?-->", "", page.read_text("utf-8"), flags=re.S)


def _resolve(dotted: str) -> bool:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes.

    False when it cannot be checked here (the module needs an extra that is not installed);
    an AttributeError or a missing hccatom module when the name does not exist.
    """
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name and not exc.name.startswith("hccatom"):
                return False  # e.g. torch or pydicom missing: an extra's module
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return True
    raise ModuleNotFoundError(dotted)


def _defined_classes() -> set[str]:
    """Names of every class defined in the package sources (no import needed)."""
    names: set[str] = set()
    for folder in ("sdk", "engines", "atom", "export"):
        for source in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"^class ([A-Za-z_]\w*)", source.read_text("utf-8"), re.M))
    return names


def _has(cls: type, attr: str) -> bool:
    return hasattr(cls, attr) or attr in getattr(cls, "model_fields", {})


def test_every_python_name_the_pages_mention_exists() -> None:
    """Renames in the code must reach the prose: `hccatom.x.y` and `Class.member` resolve."""
    import hccatom
    from hccatom import bundle, chain, clinical_encoding, errors, predictor, recommendation
    from hccatom.atom import decision, policy

    classes = {
        name: obj
        for module in (hccatom, bundle, chain, clinical_encoding, errors, predictor,
                       recommendation, decision, policy)
        for name in dir(module)
        if isinstance(obj := getattr(module, name), type) and name[0].isupper()
    }
    defined = _defined_classes()
    checked = 0
    for page in sorted(DOCS.glob("*.md")):
        text = _prose(page)
        for dotted in re.findall(r"`(hccatom(?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            checked += _resolve(dotted)  # raises with the missing name
        for cls, attr in re.findall(r"`([A-Z][A-Za-z]+)\.([a-z_][a-z0-9_]*)", text):
            if cls in classes:
                assert _has(classes[cls], attr), f"{page.name}: {cls}.{attr} does not exist"
                checked += 1
        for name in re.findall(r"`([A-Z][A-Za-z]+(?:Error|Spec|Variables|Encoding|Policy))`",
                               text):
            assert name in defined, f"{page.name}: {name} is not a hccatom class"
            checked += 1
    assert checked > 20


@pytest.mark.export
def test_every_cli_option_the_pages_mention_exists() -> None:
    pytest.importorskip("torch", reason="`export` subcommand help needs the export extra")
    reference = docgen.cli_reference()
    not_hccatom = {"--strict", "--8"}  # mkdocs build --strict; the snippet marker --8<--
    for page in sorted(DOCS.glob("*.md")):
        for option in set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", _prose(page))):
            if option not in not_hccatom:
                assert option in reference, f"{page.name}: {option} is no hccatom option"


def test_no_page_is_left_with_a_todo_marker_for_the_lead() -> None:
    """Every ``TODO(lead)`` note of the pre-merge site was replaced by text."""
    left = [f"{p.name}:{i}" for p in sorted(DOCS.glob("*.md"))
            for i, line in enumerate(p.read_text("utf-8").splitlines(), 1) if "TODO(lead)" in line]
    assert not left, f"unfinished docs: {left}"


def test_changelog_has_a_dated_entry_for_this_version_and_the_schema() -> None:
    """The version bumps with the schema or outputs; the changelog says what changed."""
    import hccatom
    from hccatom.bundle.manifest import SCHEMA_VERSION

    text = (ROOT / "CHANGELOG.md").read_text("utf-8")
    version = re.escape(hccatom.__version__)
    entry = re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$(.*?)(?=^## \[|\Z)",
                      text, re.M | re.S)
    assert entry, f"CHANGELOG.md has no dated '## [{hccatom.__version__}] - YYYY-MM-DD' entry"
    assert "### Added" in entry.group(1) or "### Changed" in entry.group(1)
    body = entry.group(1)  # the entry says which bundle schema it has: bumped or unchanged
    assert f"-> {SCHEMA_VERSION}" in body or f"schema unchanged ({SCHEMA_VERSION})" in body
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    assert re.search(rf'^version = "{version}"$', pyproject, re.M), "pyproject.toml version"


def test_docs_examples_script_checks_the_refusals_it_shows() -> None:
    """The signed-bundle walk-through's refusals are run, and their exit codes checked."""
    script = (ROOT / "tools" / "docs_examples.sh").read_text("utf-8")
    for name in ("bundle_verify_wrong_key", "bundle_verify_edited",
                 "bundle_verify_unsigned_trusted", "export_nnunet_no_window"):
        assert re.search(rf"^expect_code [23] {name} ", script, re.M), name
    assert "--sign-key" in script and "--trusted-key" in script
    assert 'exit 1' in script  # an unexpected exit code fails the script


def _load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_hccatom_{name}", ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_marked_python_example_is_run_by_the_examples_script() -> None:
    """A page's ``<!-- example: NAME -->`` block is run (quick mode too) from the page."""
    docs_block = _load_tool("docs_block")
    script = (ROOT / "tools" / "docs_examples.sh").read_text("utf-8")
    run = set(re.findall(r"^example ([a-z0-9-]+) ([a-z]+\.md)$", script, re.M))
    marked = set()
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text("utf-8")
        found = docs_block.blocks(text)
        assert len(found) == text.count("<!-- example: "), f"{page.name}: a marker without a block"
        marked |= {(name, page.name) for name in found}
    assert {"write-demo-case", "recommend-from-python"} <= {name for name, _ in marked}
    assert run == marked, f"run but not marked / marked but not run: {run ^ marked}"
    assert "from hccatom.demo import demo_case" in docs_block.blocks(
        (DOCS / "quickstart.md").read_text("utf-8"))["write-demo-case"]


def test_docs_block_prints_the_block_and_refuses_an_unknown_name(
        capsys: pytest.CaptureFixture[str]) -> None:
    docs_block = _load_tool("docs_block")
    page = ROOT / "docs" / "quickstart.md"
    assert docs_block.main([str(page), "recommend-from-python"]) == 0
    assert "Predictor.from_bundle(demo_bundle_path()" in capsys.readouterr().out
    assert docs_block.main([str(page), "no-such-example"]) == 1
    assert "no block marked" in capsys.readouterr().err
    with pytest.raises(ValueError, match="marked twice"):
        docs_block.blocks("<!-- example: a -->\n```python\nx\n```\n" * 2)


def test_quick_docs_examples_run_in_ci() -> None:
    """CI runs the fast part of the examples script; the slow steps are marked SLOW."""
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert re.search(r"^bash tools/docs_examples\.sh --quick ", ci, re.M)
    script = (ROOT / "tools" / "docs_examples.sh").read_text("utf-8")
    assert script.count("SLOW") >= 3 and 'if [ "$QUICK" = 1 ]' in script


def _flag_codes_in_code() -> set[str]:
    """Every quality flag code the package can raise (``QualityFlag(code="...")``)."""
    codes: set[str] = set()
    for folder in ("sdk", "atom"):
        for source in (ROOT / folder).rglob("*.py"):
            codes |= set(re.findall(r'\bcode="([a-z_]+)"', source.read_text("utf-8")))
    return codes


def test_every_quality_flag_is_documented_and_every_documented_flag_exists() -> None:
    """safety.md's flag table lists every code the code raises (DICOM's in dicom.md)."""
    codes = _flag_codes_in_code()
    assert {"synthetic_models_on_non_phantom", "small_tumour", "phases_far_apart"} <= codes
    prose = {p.name: _prose(p) for p in DOCS.glob("*.md")}
    for code in sorted(codes):
        assert any(f"`{code}`" in text for text in prose.values()), f"flag {code} undocumented"
    table = re.search(r"^## Flags$(.*?)(?=^## |\Z)", prose["safety.md"], re.M | re.S)
    assert table, "safety.md has a '## Flags' section"
    first_cells = re.findall(r"^\| ([^|]+) \|", table.group(1), re.M)
    documented = {code for cell in first_cells for code in re.findall(r"`([a-z_]+)`", cell)}
    assert len(documented) >= 15, f"flag rows not found in safety.md: {sorted(documented)}"
    assert documented <= codes, f"documented but never raised: {sorted(documented - codes)}"
