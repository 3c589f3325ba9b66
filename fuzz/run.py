"""Run the atheris fuzz targets of ``fuzz/targets.py``.

    python fuzz/run.py nifti --seconds 300          # one target, 5 minutes
    python fuzz/run.py all --total-seconds 85       # every target in turn, 85 s in all (CI)

Each target runs in its own process (libFuzzer ends the process when its time is up) on one
core, with the seed corpus ``fuzz/corpus/<target>/`` (read only: new inputs go to a scratch
corpus, ``--keep DIR`` keeps them), a per-input timeout (a hang is a finding), an RSS limit
and the environment of :data:`targets.FUZZ_ENV`. Findings (crash, timeout, out-of-memory
inputs) are written to ``--artifacts`` (default ``fuzz/artifacts/``, git-ignored); the exit
status is non-zero when any target found one. See ``fuzz/README.md`` for the long run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402

_IMAGE = ["hccatom.path_checks", "hccatom.ct_folder", "hccatom.image_headers",
          "hccatom.dicom_check", "hccatom.ct_io"]
_BUNDLE = ["hccatom.path_checks", "hccatom.safe_json", "hccatom.bundle.manifest",
           "hccatom.bundle.tree", "hccatom.bundle.reader"]

#: The modules whose code paths guide the fuzzer, per target (dependencies first: each is
#: reloaded instrumented, so a module reloaded later binds the instrumented ones). Only what
#: a target reaches: instrumenting every reader for every target took 11-12 s of start-up
#: per target on the loaded 2-core VM against 0.7 s for a small set, and CI's short run
#: pays the start-up once per target.
INSTRUMENTED: dict[str, list[str]] = {
    "nifti": _IMAGE,
    "nrrd": _IMAGE,
    "mha": _IMAGE,
    "dicom": _IMAGE,
    "clinical_json": ["hccatom.path_checks", "hccatom.safe_json", "hccatom.clinical"],
    "manifest": ["hccatom.safe_json", "hccatom.bundle.manifest", "hccatom.bundle.reader"],
    "bundle_zip": _BUNDLE,
    "cohort_csv": ["hccatom.path_checks", "hccatom.safe_json", "hccatom.clinical",
                   "hccatom.validation.cohort"],
    "dicom_study": ["hccatom.path_checks", "hccatom.dicom.index", "hccatom.dicom.phases"],
    "serve_request": ["hccatom.safe_json", "hccatom.clinical", "hccatom.serve.wire"],
}

#: Extra seed folders per target (committed elsewhere in the repository, not duplicated).
EXTRA_SEEDS = {
    "dicom": [ROOT / "tests" / "data" / "real" / "totalseg_example" / "example_ct_dicom"],
}


def _fuzz_one(name: str, libfuzzer_args: list[str]) -> None:
    """Inside the child: instrument hccatom, then hand control to libFuzzer."""
    import atheris

    targets.apply_env()
    import hccatom  # noqa: F401 - the package uninstrumented (it imports the whole runtime)

    modules = INSTRUMENTED[name]
    with atheris.instrument_imports(include=modules):
        for module in modules:
            importlib.reload(importlib.import_module(module))
    target = targets.TARGETS[name]
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


def run_target(name: str, seconds: int, artifacts: Path, keep: Path | None,
               timeout_s: int, rss_mb: int, chunk_s: int = 20) -> tuple[int, str]:
    """Fuzz one target for ``seconds``; returns (exit status, summary line).

    A long run is split into processes of at most ``chunk_s`` seconds that share one
    generated corpus: atheris processes grow by tens of kB per input (measured on the
    manifest target; replaying the same inputs in a plain loop keeps hccatom flat), so a
    fresh process per chunk keeps a long run inside the RSS limit without losing coverage.
    """
    artifacts.mkdir(parents=True, exist_ok=True)
    work = keep if keep is not None else Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds = [HERE / "corpus" / name, *EXTRA_SEEDS.get(name, [])]
    t0 = time.perf_counter()
    total_execs, cov, rc, log = 0, "?", 0, ""
    left = seconds
    while left > 0 and rc == 0:
        part = min(left, chunk_s)
        left -= part
        rc, log, execs, cov_part = _run_chunk(name, part, work, seeds, artifacts,
                                              timeout_s, rss_mb)
        total_execs += execs
        cov = cov_part or cov
    wall = time.perf_counter() - t0
    summary = f"{name}: {total_execs} inputs in {wall:.0f} s, coverage {cov} edges, exit {rc}"
    if rc != 0:
        summary += "\n" + log
    return rc, summary


def _run_chunk(name: str, seconds: int, work: Path, seeds: list[Path], artifacts: Path,
               timeout_s: int, rss_mb: int) -> tuple[int, str, int, str]:
    args = [
        f"-max_total_time={seconds}", f"-timeout={timeout_s}", f"-rss_limit_mb={rss_mb}",
        "-print_final_stats=1", f"-artifact_prefix={artifacts}/{name}-", "-max_len=262144",
        str(work), *[str(s) for s in seeds if s.is_dir()],
    ]
    if os.environ.get("HCCATOM_FUZZ_SEED"):  # CI: the same mutation sequence on every run
        args.insert(0, f"-seed={int(os.environ['HCCATOM_FUZZ_SEED'])}")
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-scratch-{name}-"))
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", name, "--", *args],
        capture_output=True, text=True, check=False,
        env={**os.environ, "HCCATOM_FUZZ_SCRATCH": str(scratch)},
    )
    log = done.stdout + done.stderr
    execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    tail = ""
    if done.returncode != 0:
        if done.returncode < 0:  # died by a signal: keep the input it was working on
            for f in scratch.rglob("*"):
                if f.is_file():
                    shutil.copy(f, artifacts / f"{name}-lastinput-{f.name}")
            tail = f"(killed by signal {-done.returncode}; last input kept in {artifacts})\n"
        tail += "\n".join(log.strip().splitlines()[-40:])
    shutil.rmtree(scratch, ignore_errors=True)
    return done.returncode, tail, int(execs.group(1)) if execs else 0, cov[-1] if cov else ""


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module doc."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _fuzz_one(argv[1], argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*targets.TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=30, help="fuzzing time per target")
    parser.add_argument("--total-seconds", type=int, default=None,
                        help="wall-clock budget for the whole run, start-up included: each "
                        "target gets an equal share of what is left (overrides --seconds)")
    parser.add_argument("--timeout", type=int, default=10, help="per input, seconds")
    parser.add_argument("--rss-mb", type=int, default=2048)
    parser.add_argument("--chunk-seconds", type=int, default=20,
                        help="restart the fuzzing process this often (corpus kept)")
    parser.add_argument("--artifacts", type=Path, default=HERE / "artifacts")
    parser.add_argument("--exclude", action="append", default=[], choices=list(targets.TARGETS),
                        help="leave this target out of 'all' (repeatable)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder that keeps the generated corpus (one target only)")
    args = parser.parse_args(argv)
    names = ([n for n in targets.TARGETS if n not in args.exclude] if args.target == "all"
             else [args.target])
    status = 0
    t0 = time.perf_counter()
    startup = 5.0  # first guess of a target's start-up cost; then measured
    for i, name in enumerate(names):
        seconds = args.seconds
        if args.total_seconds is not None:
            left = args.total_seconds - (time.perf_counter() - t0)
            seconds = max(1, int(left / (len(names) - i) - startup))
        started = time.perf_counter()
        rc, summary = run_target(name, seconds, args.artifacts.resolve(),
                                 args.keep if len(names) == 1 else None,
                                 args.timeout, args.rss_mb, args.chunk_seconds)
        startup = max(1.0, time.perf_counter() - started - seconds)
        print(summary, flush=True)
        status = status or rc
    print(f"fuzz: {len(names)} target(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
