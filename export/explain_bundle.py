"""Add explain graphs (and clinical reference values) to an existing bundle (build time).

For bundles whose SELECTION graphs hccatom exported but without ``--explain`` (such as the
committed demo bundle): the explain twins are derived from the bundle's own fast graphs
(:func:`hccatom.export.selection_explain.add_explain_outputs`; the network size is read
from the graph's weights), checked to give the same scores, and a new bundle is written
with every other part unchanged. Needs ``onnx`` (the export extra), not torch.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.atom import MODELS
from hccatom.bundle import load_bundle
from hccatom.bundle.explain_spec import ReferenceValue
from hccatom.errors import ExportError
from hccatom.export.selection_explain import (
    add_explain_outputs,
    check_explain_graph,
    explain_path,
)
from hccatom.export.selection_sizes import Fusion, SelectionSize


def size_from_graph(path: Path) -> tuple[SelectionSize, Fusion]:
    """The SELECTION size and fusion of an hccatom-exported single-model graph."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    dims = {i.name.removeprefix("model."): list(i.dims) for i in proto.graph.initializer}
    try:
        hidden = dims["transformer.embeddings.cls_token"][2]
        patch = dims["transformer.embeddings.art_patch_embeddings.weight"][2]
        tokens = dims["transformer.embeddings.art_position_embeddings"][1]
        n = (dims["transformer.embeddings.pe_lab"][1], dims["transformer.embeddings.pe_sex"][1],
             dims["transformer.embeddings.pe_age"][1])
        mlp = dims["transformer.encoder.layer.0.ffn.fc1.bias"][0]
    except KeyError as exc:
        raise ExportError(f"{path.name}: not an hccatom SELECTION graph (no {exc}).") from exc
    layer_ids = {int(m.group(1)) for name in dims
                 if (m := re.match(r"transformer\.encoder\.layer\.(\d+)\.", name))}
    multimodal = {int(m.group(1)) for name in dims
                  if (m := re.match(r"transformer\.encoder\.layer\.(\d+)\.att_norm_text", name))}
    layers = max(layer_ids) + 1
    softmax = sum(1 for node in proto.graph.node if node.op_type == "Softmax")
    fusion: Fusion = "image_only" if softmax == layers else "paper"
    grid = round((tokens - 1) ** 0.5)
    size = SelectionSize("graph", hidden=hidden, layers=layers, heads=1, mlp=mlp,
                         image_size=grid * patch, patch=patch,
                         multimodal_layers=max(1, len(multimodal)),
                         n_lab=n[0], n_demo=n[1], n_iv=n[2])
    return size, fusion


def _feeds(size: SelectionSize) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    px = size.image_size
    return {"arterial": rng.uniform(-1, 1, (2, 3, px, px)).astype(np.float32),
            "portal": rng.uniform(-1, 1, (2, 3, px, px)).astype(np.float32),
            "lab": rng.standard_normal((2, size.n_lab)).astype(np.float32),
            "demo": rng.standard_normal((2, size.n_demo)).astype(np.float32),
            "iv": rng.standard_normal((2, size.n_iv)).astype(np.float32)}


def add_explain_to_bundle(source: str | Path, out: str | Path, *,
                          clinical_reference: Mapping[str, ReferenceValue] | None = None,
                          reference_source: str = "", version_suffix: str = "+explain",
                          sign_key: str | Path | bytes | None = None,
                          overwrite: bool = False, verify: bool = True) -> Path:
    """Write ``out``: ``source`` plus explain graphs (per-model bundles only); ``verify``
    runs every model of the result once (:func:`hccatom.bundle.verify_bundle`)."""
    from hccatom.bundle.writer import build_bundle

    with load_bundle(source) as bundle:
        m = bundle.manifest
        if set(m.selection.models) != set(MODELS):
            raise ExportError("adding explain graphs needs a bundle with the four separate "
                              "SELECTION graphs; re-export fused bundles with --explain.")
        work = Path(tempfile.mkdtemp(prefix="hccatom-add-explain-"))
        try:
            folders: dict[str, Path] = {}
            for cohort, entry in m.selection.models.items():
                folder = work / cohort
                folder.mkdir()
                fast = folder / Path(entry.path).name
                shutil.copyfile(bundle.path(entry.path), fast)
                if entry.parity:
                    shutil.copyfile(bundle.path(entry.parity), folder / Path(entry.parity).name)
                size, fusion = size_from_graph(fast)
                twin = add_explain_outputs(fast, size, fusion, explain_path(fast))
                diff = check_explain_graph(fast, twin, _feeds(size))
                report: dict[str, Any] = {"model": twin.name, "reference_model": fast.name,
                                          "parity": {"max_abs_diff": diff, "passed": True}}
                twin.with_name(twin.name[: -len(".onnx")] + ".parity.json").write_text(
                    json.dumps(report, indent=2) + "\n", encoding="utf-8")
                folders[cohort] = folder
            return build_bundle(
                out, segmentation=bundle.segmentation_dir, selection=folders,
                name=m.name, version=m.version + version_suffix, thresholds=m.thresholds,
                policy=m.policy, preprocessing=m.preprocessing,
                clinical_encoding=m.selection.clinical_encoding, provenance=m.provenance,
                intended_use=m.intended_use, synthetic=m.synthetic, safety=m.safety,
                sign_key=sign_key, overwrite=overwrite, verify=verify,
                clinical_reference=clinical_reference,
                reference_source=reference_source)
        finally:
            shutil.rmtree(work, ignore_errors=True)


__all__ = ["add_explain_to_bundle", "size_from_graph"]
