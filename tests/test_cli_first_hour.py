"""Rough edges a new user meets in the first hour with the command line (README walk-through).

Each test pins one fix: an optional extra refused before any work, the same -q/-v on every
command, messages that say what to do, and ``--help`` pages with examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hccatom.cli import EXIT_NO_EXTRA, build_parser, main
from hccatom.cli_examples import EXAMPLES, example_commands, subcommands
from hccatom.demo import demo_bundle_path
from hccatom.predictor import Predictor

EXAMPLE_CLINICAL = Path(__file__).resolve().parents[1] / "examples" / "clinical_example.json"


def _recommend(real_data: Path, *extra: str) -> list[str]:
    ts = real_data / "totalseg_example"
    return ["recommend", "--bundle", str(demo_bundle_path()),
            "--arterial", str(ts / "example_ct_dicom"),
            "--portal", str(ts / "example_ct_sm.nii.gz"),
            "--clinical", str(EXAMPLE_CLINICAL), *extra]


@pytest.fixture
def no_bundle_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load the bundle (the first step of real work) fails the test."""
    def refuse(*args: object, **kwargs: object) -> Predictor:
        raise AssertionError("the command started work before checking the extra")

    monkeypatch.setattr(Predictor, "from_bundle", refuse)


def test_report_without_matplotlib_is_refused_before_the_chain_runs(
    real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], no_bundle_load: None,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec -> None: not installed
    out = tmp_path / "r.pdf"
    assert main(_recommend(real_data, "--report", str(out))) == EXIT_NO_EXTRA
    err = capsys.readouterr().err
    assert f"--report {out}" in err and "hccatom[report]" in err and "nothing was run" in err
    assert "Traceback" not in err and not out.exists()


def test_study_without_the_dicom_extra_is_refused_before_the_chain_runs(
    real_data: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], no_bundle_load: None,
) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ModuleNotFoundError
    args = ["recommend", "--bundle", str(demo_bundle_path()), "--study",
            str(real_data / "totalseg_example" / "example_ct_dicom"),
            "--clinical", str(EXAMPLE_CLINICAL)]
    assert main(args) == EXIT_NO_EXTRA
    err = capsys.readouterr().err
    assert "hccatom[dicom]" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["-q", "--quiet", "-v", "--verbose"])
def test_every_command_takes_quiet_and_verbose_after_its_name(flag: str) -> None:
    """README/docs: every command takes -q/-v; `hccatom bench -q` used to be a usage error."""
    for argv in (["bench", flag, "--small"], ["recommend", flag, "--bundle", "B",
                                              "--clinical", "c.json"], ["demo", flag]):
        args = build_parser(argv).parse_args(argv)
        assert getattr(args, "quiet" if flag in ("-q", "--quiet") else "verbose") is True


@pytest.mark.parametrize("path", sorted(EXAMPLES), ids=" ".join)
def test_help_shows_examples_that_parse(path: tuple[str, ...]) -> None:
    """Every example in ``--help`` is a command line the parser accepts (no drift)."""
    commands = example_commands(path)
    assert commands
    for argv in commands:
        assert tuple(argv[:len(path)]) == path, argv
        build_parser(argv).parse_args(argv)  # a usage error raises SystemExit
    parser = build_parser(list(path))
    for name in path:
        parser = dict(subcommands(parser))[name]
    text = parser.format_help()
    assert "\nexamples:\n" in text
    assert f"  hccatom {' '.join(path)}" in text  # kept on its own line, not re-wrapped


def test_a_missing_bundle_says_where_bundles_come_from(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _recommend(real_data)
    argv[argv.index("--bundle") + 1] = str(tmp_path / "path" / "to" / "bundle")
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "no such bundle" in err and "hccatom bundle build" in err
    assert "demo_bundle_path()" in err and "Traceback" not in err


def test_commands_that_need_the_export_extra_say_so_in_the_command_list() -> None:
    text = build_parser(["--help"]).format_help()
    entry = text.split("\n    explain ", 1)[1].split("\n\n", 1)[0]  # the entry, wrapped
    assert "needs the export extra" in " ".join(entry.split())


def test_every_missing_extra_is_one_exit_code_and_kind() -> None:
    """export/explain/validate/report used to exit 1, dicom 2 and serve 4: now all 5."""
    from hccatom.cli import error_message, exit_code_for
    from hccatom.dicom.errors import DicomExtraMissingError
    from hccatom.errors import ExtraMissingError, InputError
    from hccatom.report import ReportUnavailableError
    from hccatom.serve.errors import ServeExtraMissingError

    for cls in (ExtraMissingError, DicomExtraMissingError, ReportUnavailableError,
                ServeExtraMissingError):
        exc = cls("x needs the y extra: pip install 'hccatom[y]'")
        assert exit_code_for(exc) == EXIT_NO_EXTRA, cls
        assert error_message(exc).startswith("hccatom: not installed: "), cls
    assert issubclass(DicomExtraMissingError, InputError)  # still what callers caught before


@pytest.mark.parametrize(("argv", "module"), [
    (["validate", "--demo", "--out", "never"], "lifelines"),
    (["export", "selection", "--checkpoint", "c.pth", "--cohort", "TACE", "--out", "never"],
     "onnxscript"),
])
def test_commands_needing_an_extra_exit_5_before_any_work(
    argv: list[str], module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # find_spec -> None: not installed
    assert main(argv) == EXIT_NO_EXTRA
    err = capsys.readouterr().err
    assert err.startswith("hccatom: not installed: ") and "pip install" in err
    assert "nothing was done" in err and not (tmp_path / "never").exists()


def test_readme_use_it_example_names_files_that_exist() -> None:
    """README's "Use it" example runs from the repository root: every path it names exists
    and the code compiles (the run itself is `hccatom recommend` on the same files)."""
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("## Use it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    compile(block, "README.md", "exec")
    paths = re.findall(r'"((?:tests|examples)/[^"]+)"', block)
    assert len(paths) == 3
    for rel in paths:
        assert (root / rel).exists(), rel


@pytest.mark.parametrize("flag", ["--json", "--report"])
def test_an_output_in_a_missing_folder_is_refused_before_the_chain_runs(
    flag: str, real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    no_bundle_load: None,
) -> None:
    """It used to run the whole chain, then fail as an internal FileNotFoundError."""
    if flag == "--report":
        pytest.importorskip("matplotlib", reason="--report needs the report extra")
    out = tmp_path / "no" / "such" / "folder" / "out.pdf"
    assert main(_recommend(real_data, flag, str(out))) == 2
    err = capsys.readouterr().err
    assert f"{flag} {out}" in err and "does not exist" in err and "Traceback" not in err
    folder = tmp_path / "taken.pdf"
    folder.mkdir()
    assert main(_recommend(real_data, flag, str(folder))) == 2  # a folder, not a file
    assert "folder" in capsys.readouterr().err


def test_demo_json_in_a_missing_folder_is_refused_before_the_demo_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_bundle_load: None,
) -> None:
    out = tmp_path / "missing" / "rec.json"
    assert main(["demo", "--json", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_study_without_two_phases_says_how_to_give_the_series_folders(
    real_data: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A single real series has no Series Instance UID: choosing by UID is impossible, so the
    message also names --arterial/--portal folders without --study."""
    pytest.importorskip("pydicom", reason="--study needs the dicom extra")
    pytest.importorskip("highdicom", reason="--study needs the dicom extra")
    args = ["recommend", "--bundle", str(demo_bundle_path()), "--study",
            str(real_data / "totalseg_example" / "example_ct_dicom"),
            "--clinical", str(EXAMPLE_CLINICAL)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no series UID" in err and "--arterial DIR --portal DIR" in err


def test_hccatom_alone_prints_the_command_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2  # still a usage error for scripts
    err = capsys.readouterr().err
    assert "recommend" in err and "demo" in err and "arguments are required" not in err


def test_install_lines_and_extras_table_agree_with_ci_and_pyproject() -> None:
    """The "everything" install line is the same in README, the quick start and .ci/run, and
    the quick start's table lists every extra of pyproject.toml (it had fallen behind)."""
    import re

    root = Path(__file__).resolve().parents[1]
    full = re.compile(r'"torchvision==[^"]+" -e "\.\[([a-z,]+)\]"')
    lines = {name: full.findall((root / name).read_text())
             for name in ("README.md", "docs/quickstart.md", ".ci/run")}
    extras = {name: {frozenset(found.split(",")) for found in hits}
              for name, hits in lines.items()}
    assert all(len(v) == 1 for v in extras.values()), lines
    assert len(set.union(*extras.values())) == 1, lines
    section = (root / "pyproject.toml").read_text().split(
        "[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    declared = re.findall(r"^([a-z]+) = \[", section, re.M)
    assert "export" in declared and "report" in declared
    table = (root / "docs" / "quickstart.md").read_text()
    for extra in declared:
        assert f"| `{extra}` |" in table, extra


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_bad_thread_count_is_bad_input_not_an_internal_error(
    threads: str, real_data: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_recommend(real_data, "--threads", threads, "--device", "cpu")) == 2
    err = capsys.readouterr().err
    assert "--threads) must be a whole number >= 1" in err and f"got {threads}." in err
    assert "internal error" not in err


def test_a_folder_or_file_that_is_no_bundle_says_what_to_pass(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bundle", "verify", str(tmp_path)]) == 3
    assert "Pass the folder that holds manifest.json" in capsys.readouterr().err
    ct = real_data / "totalseg_example" / "example_ct_sm.nii.gz"
    assert main(["bundle", "info", str(ct)]) == 3
    assert "not a file inside it" in capsys.readouterr().err
