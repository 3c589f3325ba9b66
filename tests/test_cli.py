"""The ``hccatom`` CLI: recommend, bundle build/verify/info, exit codes, lazy subcommands.

Runs ``main([...])`` in-process for speed, plus a few real console-script subprocesses
(exit codes, no traceback, no torch imported by the runtime commands).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures.bundle.helpers import (
    FUSED,
    SEGMENTATION,
    build_fixture_bundle,
    clinical_example,
    phantom,
    selection_dirs,
)

from hccatom.atom import MODELS
from hccatom.cli import exit_code_for, main
from hccatom.ct_io import write_volume
from hccatom.errors import (
    BundleIntegrityError,
    CTInputError,
    EngineInputError,
    EngineUnavailableError,
    NoTumourError,
    ScoreInputError,
)
from hccatom.recommendation import Recommendation

#: ``bundle build`` for the fixture segmentation (its spec does not record the window choice)
BUILD = ["bundle", "build", "--no-window-before-segmentation"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    ph = phantom()
    out = {
        "bundle": build_fixture_bundle(d / "bundle.zip"),
        "arterial": write_volume(ph["arterial"], d / "art.nii.gz"),
        "portal": write_volume(ph["portal"], d / "ven.nrrd"),
        "clinical": d / "clinical.json",
        "dir": d,
    }
    out["clinical"].write_text(json.dumps(clinical_example()))
    return out


def _recommend_args(files: dict[str, Path], **over: str) -> list[str]:
    args = {"--bundle": str(files["bundle"]), "--arterial": str(files["arterial"]),
            "--portal": str(files["portal"]), "--clinical": str(files["clinical"]),
            "--device": "cpu"}
    args.update(over)
    return ["recommend", *[x for kv in args.items() for x in kv]]


def test_recommend_prints_summary_and_writes_json(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec.json"
    assert main(_recommend_args(files, **{"--json": str(out)})) == 0
    text = capsys.readouterr().out
    rec = Recommendation.from_json(out)
    assert f"Recommendation: {rec.final_plan}" in text
    for m in MODELS:
        assert f"{rec.scores[m].score:.3f}" in text
    assert "Timings (ms)" in text and "Research use only" in text
    assert rec.decision.rationale[-1].rule_id in text


def test_recommend_json_to_stdout(files: dict[str, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_recommend_args(files, **{"--json": "-"})) == 0
    rec = Recommendation.model_validate_json(capsys.readouterr().out)
    assert set(rec.scores) == set(MODELS)


@pytest.mark.parametrize(
    ("over", "code", "needle"),
    [
        ({"--portal": "missing.nrrd"}, 2, "--portal missing.nrrd: no such file"),
        ({"--bundle": "nowhere.zip"}, 3, "no such bundle"),
        ({"--device": "cuda"}, 4, "engine unavailable"),
    ],
)
def test_recommend_exit_codes(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str],
    over: dict[str, str], code: int, needle: str,
) -> None:
    if over.get("--device") == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("CUDA present")
    assert main(_recommend_args(files, **over)) == code
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_recommend_precision_flag(files: dict[str, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--precision takes Predictor.from_bundle's choices, errors and exit codes."""
    assert main(_recommend_args(files, **{"--precision": "fp32"})) == 0
    assert "network graphs fp32)" in capsys.readouterr().out
    # the fixture bundle has no fp16 twins: forcing fp16 is a bad-bundle error naming it
    assert main(_recommend_args(files, **{"--precision": "fp16"})) == 3
    err = capsys.readouterr().err
    assert "precision='fp16'" in err and "no fp16 graph" in err and "Traceback" not in err
    assert main(_recommend_args(files, **{"--precision": "bf16"})) == 2
    assert "invalid choice: 'bf16'" in capsys.readouterr().err


def test_bad_clinical_lists_every_problem(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(clinical_example(), albumin_g_per_l=3.8, ecog=7)))
    assert main(_recommend_args(files, **{"--clinical": str(bad)})) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err
    assert "  - albumin_g_per_l:" in err and "  - ecog:" in err


def test_tampered_bundle_is_exit_3(files: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "b"
    build_fixture_bundle(d)
    f = d / "selection" / "fused" / "model.onnx"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    assert main(_recommend_args(files, **{"--bundle": str(d)})) == 3
    assert "selection/fused/model.onnx" in capsys.readouterr().err
    assert main(["bundle", "verify", str(d)]) == 3
    assert main(["bundle", "info", str(d)]) == 3


def test_bundle_build_verify_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    th = tmp_path / "th.json"
    th.write_text(json.dumps({"TACE": 0.5, "HAIC": 0.4, "TC": 0.6, "HC": 0.7}))
    sel = [f"{k}={v}" for k, v in selection_dirs().items()]
    out = tmp_path / "site.zip"
    priv, pub = tmp_path / "site.pem", tmp_path / "site.pub.pem"
    assert main(["bundle", "keygen", "--private", str(priv), "--public", str(pub)]) == 0
    assert "keep it secret" in capsys.readouterr().out
    code = main([*BUILD, "--segmentation", str(SEGMENTATION), "--selection", *sel,
                 "--fused", str(FUSED), "--thresholds", str(th), "--out", str(out),
                 "--version", "2.1.0", "--synthetic", "--sign-key", str(priv)])
    assert code == 0, capsys.readouterr().err
    assert "signed and verified" in capsys.readouterr().out
    assert main(["bundle", "verify", str(out), "--trusted-key", str(pub)]) == 0
    assert "verified: all checks passed; the manifest is signed by a trusted key" in (
        capsys.readouterr().out)
    assert main(["bundle", "verify", str(out)]) == 0  # valid, but no key trusted: says so
    text = capsys.readouterr().out
    assert "NOT attested" in text and "bundle digest" in text
    other = tmp_path / "other.pub.pem"
    assert main(["bundle", "keygen", "--private", str(tmp_path / "o.pem"), "--public",
                 str(other)]) == 0
    assert main(["bundle", "verify", str(out), "--trusted-key", str(other), "--no-run"]) == 3
    assert "not among the trusted keys" in capsys.readouterr().err
    assert main(["bundle", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "site 2.1.0" in info and "TACE 0.5000" in info and "signature:" in info
    assert main(["bundle", "info", "--json", str(out)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["thresholds"]["HC"] == 0.7 and manifest["version"] == "2.1.0"
    # existing output without --overwrite: export error, exit 1, one line
    code = main([*BUILD, "--segmentation", str(SEGMENTATION), "--selection", *sel,
                 "--paper-thresholds", "--out", str(out)])
    assert code == 1
    assert "--overwrite" in capsys.readouterr().err


def test_bundle_build_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # thresholds are required (no silent paper defaults for a site's own models)
    assert main([*BUILD, "--segmentation", str(SEGMENTATION), "--fused", str(FUSED),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--thresholds" in capsys.readouterr().err
    assert main([*BUILD, "--segmentation", str(SEGMENTATION), "--selection",
                 "TACE", "--paper-thresholds", "--out", str(tmp_path / "x")]) == 2
    assert "TACE=DIR" in capsys.readouterr().err
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text('{"tie_preference": "XYZ"}')
    assert main([*BUILD, "--segmentation", str(SEGMENTATION), "--fused", str(FUSED),
                 "--paper-thresholds", "--policy", str(bad_policy),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--policy" in capsys.readouterr().err


def test_verify_reports_failed_model_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sel"
    for m, d in selection_dirs().items():
        shutil.copytree(d, root / m)
    shutil.copyfile(selection_dirs()["TACE"] / "model.onnx", root / "HAIC" / "model.onnx")
    sel = [f"{m}={root / m}" for m in MODELS]
    out = tmp_path / "b"
    assert main([*BUILD, "--segmentation", str(SEGMENTATION), "--selection", *sel,
                 "--fused", str(FUSED), "--paper-thresholds", "--out", str(out),
                 "--no-verify"]) == 0
    capsys.readouterr()
    assert main(["bundle", "verify", str(out)]) == 3
    assert "[FAIL] fused = separate" in capsys.readouterr().out


def test_exit_code_mapping() -> None:
    assert exit_code_for(CTInputError("x")) == 2
    assert exit_code_for(ScoreInputError("x")) == 2
    assert exit_code_for(NoTumourError("x")) == 2
    assert exit_code_for(BundleIntegrityError("x")) == 3
    assert exit_code_for(EngineInputError("x")) == 3
    assert exit_code_for(EngineUnavailableError("x")) == 4
    assert exit_code_for(RuntimeError("x")) == 1


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["recommend"]) == 2
    assert "--bundle" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("recommend", "bundle", "export", "demo"):
        assert cmd in out


def _run_cli(args: list[str], block_torch: bool = False,
             hide_modules: bool = False) -> subprocess.CompletedProcess[str]:
    guard = textwrap.dedent(
        """
        import builtins, sys
        real = builtins.__import__
        def guarded(name, *a, **k):
            if name.split('.')[0] in {'torch', 'nnunetv2', 'onnx'}:
                raise ModuleNotFoundError('blocked in this test: ' + name, name=name)
            return real(name, *a, **k)
        builtins.__import__ = guarded
        """
    ) if block_torch else ""
    if hide_modules:  # find_spec too: as in an installation without the extra
        guard += textwrap.dedent(
            """
            import importlib.util
            real_find = importlib.util.find_spec
            def find(name, *a, **k):
                if name.split('.')[0] in {'torch', 'torchvision', 'nnunetv2', 'onnx'}:
                    return None
                return real_find(name, *a, **k)
            importlib.util.find_spec = find
            """
        )
    code = guard + "import sys\nfrom hccatom.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_runtime_commands_run_without_torch(files: dict[str, Path]) -> None:
    r = _run_cli(_recommend_args(files), block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "Recommendation:" in r.stdout
    r = _run_cli(["bundle", "info", str(files["bundle"])], block_torch=True)
    assert r.returncode == 0, r.stderr


def test_export_help_prints_without_torch_and_running_says_what_to_install(
    tmp_path: Path,
) -> None:
    for cmd in (["export", "selection"], ["export", "nnunet"], ["demo", "build"]):
        r = _run_cli([*cmd, "--help"], block_torch=True)
        assert r.returncode == 0, r.stderr
        assert "--out" in r.stdout
    out = tmp_path / "never"
    r = _run_cli(["demo", "build", "--out", str(out), "--quick"], block_torch=True,
                 hide_modules=True)
    assert r.returncode == 5  # EXIT_NO_EXTRA
    assert 'pip install "torch==2.14.1" "torchvision==0.29.1" "hccatom[export]"' in r.stderr
    assert "nothing was done" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_debug_shows_the_traceback(files: dict[str, Path]) -> None:
    r = _run_cli(["--debug", *_recommend_args(files, **{"--bundle": "nowhere"})])
    assert r.returncode == 3
    assert "Traceback" in r.stderr and "BundleNotFoundError" in r.stderr
    r = _run_cli(_recommend_args(files, **{"--bundle": "nowhere"}))
    assert r.returncode == 3 and "Traceback" not in r.stderr


def test_console_script_is_installed() -> None:
    exe = shutil.which("hccatom", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("console script not on this environment's bin path")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("hccatom ")


def test_no_tumour_is_exit_2(files: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    ph = phantom(tumour_radius_mm=0.0)
    a = write_volume(ph["arterial"], tmp_path / "a.nii.gz")
    assert main(_recommend_args(files, **{"--arterial": str(a)})) == 2
    assert "tumour" in capsys.readouterr().err


def test_progress_on_a_terminal_and_in_a_log() -> None:
    import io

    from hccatom.cli_progress import StderrProgress
    from hccatom.predictor import ProgressEvent

    tty = io.StringIO()
    show = StderrProgress(tty, tty=True, min_shown_s=0.0, redraw_s=0.0)
    show(ProgressEvent("segment_arterial", 0, 1, 0.0))
    show(ProgressEvent("segment_arterial", 3, 27, 1.5))
    show(ProgressEvent("segment_arterial", 1, 1, 2.5))
    text = tty.getvalue()
    assert "segment_arterial 3/27 tiles" in text and "\r" in text
    assert "segment_arterial done: 27 tiles in" in text
    log = io.StringIO()  # not a terminal: plain lines, counts every quarter
    show = StderrProgress(log, tty=False)
    show(ProgressEvent("segment_portal", 0, 1, 0.0))
    for i in range(1, 13):
        show(ProgressEvent("segment_portal", i, 12, 0.1 * i))
    show(ProgressEvent("segment_portal", 1, 1, 1.3))
    show.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [x.split(" ")[2] for x in lines[:3]] == ["3/12", "6/12", "9/12"]
    assert lines[-1].startswith("hccatom: segment_portal done: 12 tiles in")
    quiet = io.StringIO()
    show = StderrProgress(quiet, "quiet", tty=False)
    show(ProgressEvent("segment_portal", 0, 1, 0.0))
    show(ProgressEvent("segment_portal", 6, 12, 0.0))
    show(ProgressEvent("segment_portal", 1, 1, 9.0))
    assert quiet.getvalue() == ""



def test_a_stage_that_raises_is_reported_failed_not_done() -> None:
    import io

    from hccatom.cli_progress import StderrProgress

    log = io.StringIO()
    show = StderrProgress(log, "verbose", tty=False)
    with pytest.raises(RuntimeError), show.stage("export_selection"):
        raise RuntimeError("the checkpoint is corrupt")
    with show.stage("write_bundle"):
        pass
    show.close()
    text = log.getvalue()
    assert "export_selection failed after" in text
    assert "export_selection done" not in text
    assert "write_bundle done in" in text


def test_progress_heartbeat_keeps_a_long_stage_from_being_silent() -> None:
    import io
    import time

    from hccatom.cli_progress import StderrProgress

    log = io.StringIO()
    show = StderrProgress(log, tty=False, heartbeat_s=0.2)
    with show.stage("load_bundle"):
        time.sleep(0.7)
    show.close()
    assert "still running: load_bundle" in log.getvalue()
    assert "load_bundle done in" in log.getvalue()


def test_recommend_progress_levels_and_signature_fields(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_recommend_args(files, **{"--json": "-"})) == 0
    cap = capsys.readouterr()
    assert "segment_arterial done:" in cap.err and "tiles" in cap.err
    rec = Recommendation.model_validate_json(cap.out)
    assert rec.bundle.signature == "unsigned" and not rec.bundle.signature_verified
    assert len(rec.bundle.sha256) == 64
    assert main(["-q", *_recommend_args(files, **{"--json": "-"})]) == 0
    assert capsys.readouterr().err == ""
    assert main([*_recommend_args(files, **{"--json": "-"}), "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "clinical ..." in err and "atom done in" in err  # every stage, fast ones too


def test_stdout_closed_early_is_not_an_internal_error(files: dict[str, Path]) -> None:
    code = "import sys\nfrom hccatom.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "bundle", "info", "--json",
                             str(files["bundle"])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read what it wanted
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "internal error" not in err and "BrokenPipe" not in err and "Traceback" not in err


def test_lazy_command_runs_inside_a_progress_stage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import types

    import hccatom.cli as cli

    fake = types.ModuleType("hccatom_fake_export")
    fake.configure_parser = lambda p: p.add_argument("--out")  # type: ignore[attr-defined]
    fake.run = lambda args: 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hccatom_fake_export", fake)
    monkeypatch.setitem(cli.LAZY_COMMANDS, ("export", "selection"),
                        ("hccatom_fake_export", "fake"))
    monkeypatch.setitem(cli.NEEDS_EXTRA, ("export", "selection"), ())
    assert main(["export", "selection", "--out", "x", "-v"]) == 0
    err = capsys.readouterr().err
    assert "export_selection ..." in err and "export_selection done in" in err
    assert main(["export", "selection", "--out", "x", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_live_line_keeps_ticking_on_a_terminal() -> None:
    import io
    import time

    from hccatom.cli_progress import StderrProgress

    tty = io.StringIO()
    show = StderrProgress(tty, tty=True, heartbeat_s=0.2)
    with show.stage("segment_arterial"):
        time.sleep(0.8)  # one long step, no tick from the caller
    show.close()
    assert tty.getvalue().count("\r\x1b[Khccatom: segment_arterial") >= 2


def test_bundle_build_requires_the_window_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No silent default: the fixture export does not record whether its model saw windowed CT."""
    base = ["bundle", "build", "--fused", str(FUSED), "--paper-thresholds", "--no-verify"]
    assert main([*base, "--segmentation", str(SEGMENTATION), "--out", str(tmp_path / "a")]) == 2
    assert "--window-before-segmentation" in capsys.readouterr().err
    # recorded in the segmentation spec: no flag needed, the manifest carries it
    seg = tmp_path / "seg"
    shutil.copytree(SEGMENTATION, seg)
    spec = json.loads((seg / "segmentation_spec.json").read_text())
    spec["window_before_segmentation"] = True
    (seg / "segmentation_spec.json").write_text(json.dumps(spec))
    assert main([*base, "--segmentation", str(seg), "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["preprocessing"]["apply_window_before_segmentation"] is True
    # a flag that contradicts the export is refused
    assert main([*base, "--segmentation", str(seg), "--no-window-before-segmentation",
                 "--out", str(tmp_path / "c")]) == 2
    assert "Conflicting" in capsys.readouterr().err
    # an explicit --preprocessing field counts as a statement
    pre = tmp_path / "pre.json"
    pre.write_text('{"apply_window_before_segmentation": false}')
    assert main([*base, "--segmentation", str(SEGMENTATION), "--preprocessing", str(pre),
                 "--out", str(tmp_path / "d")]) == 0
