"""Hostile OUTPUT paths of the build and tool commands, refused before any work.

``bundle build --out``, ``bundle keygen --private/--public``, ``export selection|nnunet
--out``, ``explain --out``, ``demo build --out/--work``, ``export triton --out``, ``bench
--json`` and ``validate --calibrate-thresholds``: a missing or non-folder parent, a FIFO or
device, a folder where a file goes (or a file where a folder goes), a broken link and an
unwritable folder are refused with exit code 2 and one line naming the flag and the path.
"Before any work" is asserted, not timed: the function doing each command's work is
replaced by one that fails the test if it is called. What each command does with an
existing output (refuse, replace with --overwrite) is tested at the end.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.bundle.helpers import FUSED, SEGMENTATION
from hostile_fs import needs_fifo, needs_posix_ids, unprivileged

from hccatom.cli import main
from hccatom.demo import demo_bundle_path
from hccatom.path_checks import check_output_folder


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@dataclass(frozen=True)
class Command:
    """One output flag of one command: its arguments, whether the flag names a file or a
    folder, the ``module:function`` doing the work, and the extras the command needs."""

    args: Callable[[Path, Path], list[str]]  # (hostile output, scratch folder) -> argv
    flag: str
    kind: str  # "file" or "folder"
    work: str
    needs: tuple[str, ...] = ()


def _build(out: Path, _tmp: Path) -> list[str]:
    return ["bundle", "build", "-q", "--no-window-before-segmentation", "--segmentation",
            str(SEGMENTATION), "--fused", str(FUSED), "--paper-thresholds", "--out", str(out)]


def _scratch_file(tmp: Path, name: str = "input.bin") -> str:
    f = tmp / name
    f.write_bytes(b"x")
    return str(f)


_EXPORT = ("torch", "onnx", "onnxscript", "safetensors")
COMMANDS: dict[str, Command] = {
    "bundle build --out DIR": Command(_build, "--out", "folder",
                                      "hccatom.bundle.writer:build_bundle"),
    "bundle build --out FILE.zip": Command(_build, "--out", "file",
                                          "hccatom.bundle.writer:build_bundle"),
    "bundle keygen --private": Command(
        lambda out, tmp: ["bundle", "keygen", "-q", "--private", str(out), "--public",
                          str(tmp / "new.pub.pem")],
        "--private", "file", "hccatom.bundle.signer:_write_key_file", ("cryptography",)),
    "bundle keygen --public": Command(
        lambda out, tmp: ["bundle", "keygen", "-q", "--private", str(tmp / "new.pem"),
                          "--public", str(out)],
        "--public", "file", "hccatom.bundle.signer:_write_key_file", ("cryptography",)),
    "export selection --out": Command(
        lambda out, tmp: ["export", "selection", "-q", "--checkpoint", _scratch_file(tmp),
                          "--cohort", "TACE", "--out", str(out)],
        "--out", "folder", "hccatom.export.selection_onnx:export_selection_checkpoint",
        _EXPORT),
    "export nnunet --out": Command(
        lambda out, tmp: ["export", "nnunet", "-q", "--model-folder", str(tmp),
                          "--no-window-before-segmentation", "--out", str(out)],
        "--out", "folder", "hccatom.export.nnunet_export:export_nnunet",
        ("torch", "nnunetv2", "onnx", "onnxscript")),
    "explain --out": Command(
        lambda out, tmp: ["explain", "-q", "--checkpoint", _scratch_file(tmp), "--cohort",
                          "TACE", "--bundle", str(demo_bundle_path()), "--arterial", "a.nii",
                          "--portal", "p.nii", "--clinical", _scratch_file(tmp, "c.json"),
                          "--out", str(out)],
        "--out", "folder", "hccatom.predictor:Predictor.from_bundle", ("torch", "safetensors")),
    "demo build --out": Command(
        lambda out, tmp: ["demo", "build", "-q", "--out", str(out)],
        "--out", "folder", "hccatom.export.demo:build_demo",
        ("torch", "torchvision", "nnunetv2", "onnx", "onnxscript")),
    "demo build --work": Command(
        lambda out, tmp: ["demo", "build", "-q", "--out", str(tmp / "bundle"), "--work",
                          str(out)],
        "--work", "folder", "hccatom.export.demo:build_demo",
        ("torch", "torchvision", "nnunetv2", "onnx", "onnxscript")),
    "export triton --out": Command(
        lambda out, tmp: ["export", "triton", "-q", "--bundle", str(demo_bundle_path()),
                          "--out", str(out)],
        "--out", "folder", "hccatom.serve.repo_cli:write_repository"),
    "bench --json": Command(
        lambda out, tmp: ["bench", "-q", "--small", "--json", str(out)],
        "--json", "file", "hccatom.bench:run_bench"),
    "validate --calibrate-thresholds": Command(
        lambda out, tmp: ["validate", "-q", _scratch_file(tmp, "cohort.csv"), "--bundle",
                          str(demo_bundle_path()), "--out", str(tmp / "validation"),
                          "--calibrate-thresholds", str(out)],
        "--calibrate-thresholds", "folder", "hccatom.validation.cohort:read_cohort",
        ("lifelines", "matplotlib")),
}


def _forbid_work(monkeypatch: pytest.MonkeyPatch, work: str) -> None:
    """Make the command's work function fail the test if it is reached."""
    module_name, _, attr = work.partition(":")
    module = importlib.import_module(module_name)
    owner_name, _, method = attr.partition(".")
    owner = getattr(module, owner_name) if method else module

    def reached(*_a: object, **_k: object) -> None:
        raise AssertionError(f"{work} ran before the output path was checked")

    monkeypatch.setattr(owner, method or attr, reached)


def _run(cmd: Command, out: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    if not _has(*cmd.needs):
        pytest.skip(f"needs {', '.join(cmd.needs)} (an optional extra) for this command")
    _forbid_work(monkeypatch, cmd.work)
    capsys.readouterr()
    code = main(cmd.args(out, tmp))
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def _hostile(case: str, tmp: Path, kind: str) -> tuple[Path, str]:
    """(the output path, what the message must say) for one hostile case; file outputs end
    in .zip (``bundle build --out`` takes a .zip name as a file, anything else a folder)."""
    name = "out.zip" if kind == "file" else "out"
    if case == "missing folder":
        return tmp / "missing" / name, "does not exist"
    if case == "parent is a file":
        (tmp / "plain").write_text("x")
        return tmp / "plain" / name, "not a folder"
    if case == "fifo":
        os.mkfifo(tmp / name)
        return tmp / name, "named pipe"
    if case == "device":
        return Path("/dev/null"), "character device"
    if case == "wrong kind":
        if kind == "file":
            (tmp / "a_folder.zip").mkdir()
            return tmp / "a_folder.zip", "existing folder"
        (tmp / "a_file").write_text("x")
        return tmp / "a_file", "not a folder"
    if case == "broken link":
        os.symlink(tmp / "nowhere" / "target", tmp / "dangling.zip")
        return tmp / "dangling.zip", "broken symbolic link"
    raise AssertionError(case)


CASES = ("missing folder", "parent is a file", "fifo", "device", "wrong kind", "broken link")
#: A new output FOLDER is made with its missing parents (mkdir -p), as before: that case
#: applies to file outputs only (a folder output is refused when no ancestor is writable).
PAIRS = [(name, case) for name, cmd in COMMANDS.items() for case in CASES
         if not (case == "missing folder" and cmd.kind == "folder")]


@needs_fifo
@pytest.mark.parametrize(("name", "case"), PAIRS)
def test_hostile_output_is_refused_before_the_work(
        name: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cmd = COMMANDS[name]
    if case == "device" and not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null here")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out, needle = _hostile(case, tmp_path, cmd.kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(cmd, out, scratch, monkeypatch, capsys)
    assert code == 2, (name, case, err)
    assert needle in err and cmd.flag in err and str(out) in err, err
    assert len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside
    assert not (scratch / "new.pem").exists() and not (scratch / "new.pub.pem").exists()
    if case == "broken link":
        assert not (tmp_path / "nowhere").exists()  # never written through the link


@needs_posix_ids
@pytest.mark.parametrize("name", ["bundle build --out FILE.zip", "bundle build --out DIR",
                                  "bundle keygen --private", "bench --json",
                                  "export triton --out"])
def test_unwritable_output_folder(name: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cmd = COMMANDS[name]
    if not _has(*cmd.needs):
        pytest.skip(f"needs {', '.join(cmd.needs)}")
    _forbid_work(monkeypatch, cmd.work)

    def check(folder: Path) -> None:
        ro = folder / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        scratch = folder / "scratch"
        scratch.mkdir()
        out = ro / ("out.zip" if cmd.kind == "file" else "out")
        capsys.readouterr()
        code = main(cmd.args(out, scratch))
        err = capsys.readouterr().err
        assert code == 2 and "not writable" in err and cmd.flag in err, err
        assert list(ro.iterdir()) == []

    unprivileged(check)


# --- existing outputs: what each command did before, still -----------------------------------
def test_bundle_build_refuses_an_existing_output_without_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(_build(out, tmp_path)) == 1  # ExportError, before anything is copied
    err = capsys.readouterr().err
    assert "exists; choose another --out or pass --overwrite" in err, err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.skipif(not _has("cryptography"), reason="keygen needs cryptography")
def test_keygen_never_replaces_a_key_silently(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub = tmp_path / "site.pem", tmp_path / "site.pub.pem"
    args = ["bundle", "keygen", "-q", "--private", str(priv), "--public", str(pub)]
    assert main(args) == 0
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    first = priv.read_bytes(), pub.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "never replaced silently" in capsys.readouterr().err
    assert (priv.read_bytes(), pub.read_bytes()) == first
    other_pub = tmp_path / "other.pub.pem"  # only the private key exists: still refused
    assert main(["bundle", "keygen", "--private", str(priv), "--public", str(other_pub)]) == 2
    assert priv.read_bytes() == first[0] and not other_pub.exists()
    capsys.readouterr()
    priv.chmod(0o644)  # --overwrite: a new key, private again whatever the old mode was
    assert main([*args, "--overwrite"]) == 0
    assert priv.read_bytes() != first[0] and stat.S_IMODE(priv.stat().st_mode) == 0o600


@pytest.mark.skipif(not _has("cryptography"), reason="keygen needs cryptography")
def test_keygen_replaces_a_link_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pem"
    target.write_text("not yours to change")
    link = tmp_path / "site.pem"
    os.symlink(target, link)
    base = ["bundle", "keygen", "-q", "--private", str(link), "--public",
            str(tmp_path / "site.pub.pem")]
    assert main(base) == 2
    assert main([*base, "--overwrite"]) == 0
    assert target.read_text() == "not yours to change"
    assert not link.is_symlink() and b"PRIVATE KEY" in link.read_bytes()
    assert main(["bundle", "keygen", "-q", "--private", str(link), "--public",
                 str(link)]) == 2  # one path for both keys


@pytest.mark.skipif(not _has("lifelines", "matplotlib"), reason="needs the validate extra")
def test_validate_refuses_an_existing_calibration_folder_before_scoring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cmd = COMMANDS["validate --calibrate-thresholds"]
    existing = tmp_path / "calibrated"
    existing.mkdir()
    code, err = _run(cmd, existing, tmp_path, monkeypatch, capsys)
    assert code == 2 and "exists; choose a new folder" in err, err


def test_export_triton_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient", reason="needs the serve extra (tritonclient[grpc])")
    from hccatom.serve.errors import RepositoryError
    from hccatom.serve.triton_repo import write_repository

    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RepositoryError, match="not empty"):
        write_repository(demo_bundle_path(), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_existing_output_folders_are_accepted_for_exports(tmp_path: Path) -> None:
    # export selection/nnunet/explain write into an existing folder (replacing their own
    # files), as they did; the check lets an existing writable folder through
    (tmp_path / "earlier.onnx").write_bytes(b"x")
    assert check_output_folder(tmp_path, "--out") == tmp_path

