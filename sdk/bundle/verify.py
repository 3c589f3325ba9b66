"""``bundle verify``: open a bundle (schema, signature, checksums) and run every model once.

Each SELECTION graph is run on synthetic inputs shaped by the manifest's input contract and
must return its score output with the right shape, finite and within [0, 1]. Each
segmentation graph is run on one synthetic patch and must return finite logits with one
channel per label. The result is a list of named checks, each passed or failed with a
reason, so a site sees every problem at once. The report ends by saying whether the
manifest - the thresholds and policy that make the decision - is attested by a trusted
signature, and prints the bundle digest for pinning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from hccatom.bundle.manifest import Manifest
from hccatom.bundle.reader import Bundle, load_bundle
from hccatom.bundle.signature import SignatureCheck
from hccatom.engines import Engine, OnnxRuntimeEngine, TensorSpec
from hccatom.errors import EngineUnavailableError, HccatomError

EngineFactory = Callable[[Path], Engine]


@dataclass(frozen=True)
class Check:
    """One verification step: its name, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    """All checks run on one bundle."""

    bundle: str
    checks: list[Check] = field(default_factory=list)
    digest: str = ""
    signature: SignatureCheck = field(default_factory=lambda: SignatureCheck("unsigned"))

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def text(self) -> str:
        """Readable report, one line per check."""
        lines = [f"bundle {self.bundle}"]
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        if self.digest:
            lines.append(f"bundle digest (sha256 of the canonical manifest; pin it with "
                         f"expect_sha256): {self.digest}")
        lines.append(f"signature: {self.signature.text()}")
        if not self.ok:
            lines.append(f"FAILED: {len(self.failures())} of {len(self.checks)} checks")
        elif self.signature.verified and not self.signature.demo_key:
            lines.append("verified: all checks passed; the manifest is signed by a trusted key")
        else:
            lines.append("all checks passed, but the manifest (thresholds, policy) is NOT "
                         "attested: " + ("signed with the public demo key"
                                         if self.signature.demo_key else
                                         "no signature by a trusted key was checked"))
        return "\n".join(lines)


def synthetic_feeds(
    inputs: tuple[TensorSpec, ...],
    sizes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random feeds for ``inputs``: symbolic dims are 1 (batch) or taken from ``sizes``.

    ``sizes`` maps an input name to the full shape wanted for it where the graph leaves
    dimensions symbolic (e.g. a segmentation patch).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        want = (sizes or {}).get(spec.name)
        shape: list[int] = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif want is not None and axis < len(want):
                shape.append(int(want[axis]))
            else:
                shape.append(1)
        feeds[spec.name] = rng.uniform(-1.0, 1.0, size=shape).astype(spec.dtype)
    return feeds


def selection_input_shapes(manifest: Manifest, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Shapes of the SELECTION inputs for ``batch`` cases, from the manifest."""
    sel = manifest.selection
    s = sel.image_size_px
    img = (batch, sel.image_channels, s, s)
    counts = clinical_group_sizes(manifest)
    return {
        sel.io.arterial: img,
        sel.io.portal: img,
        sel.io.lab: (batch, counts["lab"]),
        sel.io.demo: (batch, counts["demo"]),
        sel.io.iv: (batch, counts["iv"]),
    }


def clinical_group_sizes(manifest: Manifest) -> dict[str, int]:
    """Slots per clinical group (lab/demo/iv), from the clinical encoding when it says."""
    enc = manifest.selection.clinical_encoding
    slots = getattr(enc, "slots", None)
    if slots:
        out = {"lab": 0, "demo": 0, "iv": 0}
        for slot in slots:
            group = getattr(slot, "group", None)
            if group in out:
                out[group] += 1
        if all(out.values()):
            return out
    return {"lab": 8, "demo": 6, "iv": 6}


def _check_selection(
    name: str, engine: Engine, *, manifest: Manifest, output: str, width: int
) -> Check:
    shapes = selection_input_shapes(manifest)
    names = {s.name for s in engine.inputs}
    if names != set(shapes):
        return Check(name, False, f"inputs {sorted(names)}, manifest says {sorted(shapes)}")
    for spec in engine.inputs:
        want = shapes[spec.name]
        for dim, w in zip(spec.shape, want, strict=False):
            if isinstance(dim, int) and dim != w:
                return Check(name, False, f"input {spec.name} is {spec.describe()}, "
                             f"manifest says {want}")
    feeds = synthetic_feeds(engine.inputs, shapes)
    out = engine.run(feeds)
    if output not in out:
        return Check(name, False, f"no output {output!r} (got {sorted(out)})")
    y = np.asarray(out[output])
    if y.shape != (1, width):
        return Check(name, False, f"output {output!r} has shape {y.shape}, need (1, {width})")
    if not np.all(np.isfinite(y)) or y.min() < 0.0 or y.max() > 1.0:
        return Check(name, False, f"output {output!r} = {y.ravel().tolist()} not in [0, 1]")
    return Check(name, True, f"{output} {y.shape} = "
                 + ", ".join(f"{v:.3f}" for v in y.ravel()) + f" on {engine.providers[0]}")


def _check_fused_matches(
    name: str,
    engine: Engine,
    *,
    manifest: Manifest,
    separate: Mapping[str, Path],
    make: EngineFactory,
    atol: float = 1e-5,
) -> Check:
    """The fused graph's scores equal the separate graphs' on the same inputs."""
    sel = manifest.selection
    feeds = synthetic_feeds(engine.inputs, selection_input_shapes(manifest, batch=2), seed=1)
    fused = np.asarray(engine.run(feeds)[sel.io.fused_scores])
    worst = 0.0
    for i, cohort in enumerate(sel.fused_order):
        one = np.asarray(make(separate[cohort]).run(feeds)[sel.io.score])[:, 0]
        worst = max(worst, float(np.max(np.abs(one - fused[:, i]))))
    if worst > atol:
        return Check(name, False, f"fused and separate scores differ by up to {worst:.2e} "
                     f"(> {atol:g})")
    return Check(name, True, f"max |difference| {worst:.1e} on 2 synthetic cases")


def _check_segmentation(name: str, engine: Engine, *, manifest: Manifest,
                        rel: str = "") -> Check:
    if len(engine.inputs) != 1:
        return Check(name, False, f"expected one input, got {len(engine.inputs)}")
    spec = engine.inputs[0]
    seg = manifest.segmentation.spec
    # cascades and ensembles: the fold's own stage or member gives its patch and channels
    seg = next((s for f, s in seg.fold_stages() if f.onnx == rel), seg)
    sizes = {spec.name: (1, seg.num_input_channels, *seg.patch_size)}
    feeds = synthetic_feeds(engine.inputs, sizes)
    if spec.name != seg.input_name:
        return Check(name, False, f"input is {spec.name!r}, the spec says {seg.input_name!r}")
    out = engine.run(feeds)
    first = seg.output_name
    if first not in out:
        return Check(name, False, f"no output {first!r} (got {sorted(out)})")
    y = np.asarray(out[first])
    if not np.all(np.isfinite(y)):
        return Check(name, False, f"output {first!r} has non-finite values")
    classes = seg.num_output_channels
    if y.ndim < 3 or y.shape[1] != classes:
        return Check(name, False, f"output {first!r} shape {y.shape}, "
                     f"need (1, {classes}, ...)")
    if y.shape[2:] != feeds[spec.name].shape[2:]:
        return Check(name, False, f"output spatial shape {y.shape[2:]} differs from the "
                     f"input patch {feeds[spec.name].shape[2:]}")
    return Check(name, True, f"logits {y.shape} finite on {engine.providers[0]}")


def verify_bundle(
    path: str | Path | Bundle,
    *,
    device: str = "cpu",
    engine_factory: EngineFactory | None = None,
    trusted_keys: Iterable[str | Path | bytes] | None = None,
    require_signature: bool | None = None,
    expect_sha256: str | None = None,
    run_models: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> VerifyReport:
    """Load the bundle (schema, signature, digest, checksums: raises on failure) and run
    every model once (``run_models``).

    ``trusted_keys`` / ``require_signature`` / ``expect_sha256``: as for
    :func:`hccatom.bundle.load_bundle`. Model problems do not raise: each becomes a failed
    :class:`Check`. An unavailable ``device`` raises :class:`EngineUnavailableError`.
    ``progress(stage, done, total)`` is called before each model is run.
    """
    bundle = load_bundle(path, trusted_keys=trusted_keys, require_signature=require_signature,
                         expect_sha256=expect_sha256)
    make = engine_factory or (lambda p: OnnxRuntimeEngine(p, device=device))
    m = bundle.manifest
    report = VerifyReport(f"{m.name} {m.version} ({bundle.source})", digest=bundle.sha256,
                          signature=bundle.signature)
    report.checks.append(Check("manifest", True, f"schema {m.schema_version}, "
                               f"{len(m.files)} files listed"))
    report.checks.append(Check("checksums", True, f"{len(m.files)} files match their sha256"))
    if not run_models:
        if path is not bundle:
            bundle.close()
        return report
    planned = _count_models(m)
    done = 0

    def guarded(name: str, model: Path, check: Callable[[Engine], Check]) -> None:
        nonlocal done
        if progress is not None:
            progress(f"run {name}", done, planned)
        done += 1
        try:
            report.checks.append(check(make(model)))
        except EngineUnavailableError:
            raise
        except (HccatomError, RuntimeError, ValueError, OSError) as exc:
            report.checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))

    sel = m.selection
    for cohort, entry in sel.models.items():
        nm = f"selection {cohort}"
        guarded(nm, bundle.path(entry.path),
                partial(_check_selection, nm, manifest=m, output=sel.io.score, width=1))
    if sel.fused is not None:
        nm = "selection fused"
        guarded(nm, bundle.path(sel.fused.path),
                partial(_check_selection, nm, manifest=m, output=sel.io.fused_scores,
                        width=len(sel.fused_order)))
    if sel.fused is not None and len(sel.models) == len(sel.fused_order):
        fused_path = bundle.path(sel.fused.path)
        guarded("fused = separate", fused_path,
                partial(_check_fused_matches, "fused = separate", manifest=m,
                        separate={k: bundle.path(v.path) for k, v in sel.models.items()},
                        make=make))
    seg_files = [f for f in m.files_with_role("segmentation") if f.path.endswith(".onnx")]
    if not seg_files:
        report.checks.append(Check("segmentation", False, "no segmentation .onnx file listed"))
    for f in seg_files:
        nm = f"segmentation {f.path}"
        rel = f.path.removeprefix(f"{m.segmentation.directory}/")
        guarded(nm, bundle.path(f.path), partial(_check_segmentation, nm, manifest=m, rel=rel))
    if progress is not None:
        progress("models", planned, planned)
    if path is not bundle:
        bundle.close()
    return report


def _count_models(m: Manifest) -> int:
    sel = m.selection
    n = len(sel.models) + (1 if sel.fused is not None else 0)
    n += 1 if sel.fused is not None and len(sel.models) == len(sel.fused_order) else 0
    return n + sum(1 for f in m.files_with_role("segmentation") if f.path.endswith(".onnx"))


__all__ = [
    "Check",
    "VerifyReport",
    "clinical_group_sizes",
    "selection_input_shapes",
    "synthetic_feeds",
    "verify_bundle",
]
