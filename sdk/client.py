"""``RemotePredictor``: ``recommend`` on a ``hccatom serve`` server (serve extra)::

    remote = hccatom.client.RemotePredictor("triton://server:8001")
    rec = remote.recommend({"arterial": "art.nii.gz", "portal": "ven.nii.gz"}, clinical)

The phases are read here (anything :func:`hccatom.read_ct` accepts) and sent as float32
arrays with their geometry; the clinical values are sent as given and validated by the
server, so a bad field raises the same :class:`~hccatom.errors.ClinicalInputError` with the
same field-by-field message as in-process. Server errors come back as the same
:class:`~hccatom.errors.HccatomError` subclasses; a full server raises
:class:`~hccatom.serve.errors.ServerBusyError`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.errors import ClinicalInputError, HccatomError, InputError
from hccatom.recommendation import Recommendation
from hccatom.serve import wire
from hccatom.serve.errors import RemoteModelError


def _clinical_mapping(clinical: Any) -> Any:
    """What travels as ``clinical``: the caller's values, unvalidated (the server checks)."""
    from hccatom.clinical import CLINICAL_JSON_LIMITS, ClinicalVariables, read_clinical_json

    if isinstance(clinical, ClinicalVariables):
        return clinical.model_dump(mode="json")
    if isinstance(clinical, Mapping):
        return dict(clinical)
    if isinstance(clinical, str | Path):
        return read_clinical_json(clinical, "Clinical file", "one JSON object of the 20 "
                                  "clinical variables", CLINICAL_JSON_LIMITS)
    raise ClinicalInputError(f"clinical must be ClinicalVariables, a mapping or a JSON file "
                             f"path, not {type(clinical).__name__}.")


class RemotePredictor:
    """The client of ``hccatom serve``; thread-safe (one gRPC client per thread).

    Args:
        url: ``triton://host:port`` (the server's gRPC port).
        timeout_s: per-request deadline (the chain takes seconds per study).
    """

    def __init__(self, url: str, *, timeout_s: float = 300.0) -> None:
        from hccatom.engines.triton_engine import parse_triton_url

        self.address = parse_triton_url(url)
        self.timeout_s = float(timeout_s)
        self._local = threading.local()

    def _client(self) -> Any:
        from hccatom.engines.triton_engine import grpc_client

        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = grpc_client(self.address)
        return client

    def ready(self) -> bool:
        """Whether the server is up and its recommend model is loaded."""
        try:
            return bool(self._client().is_model_ready(wire.MODEL_NAME))
        except Exception:
            return False

    def recommend(
        self,
        ct: Any = None,
        clinical: Any = None,
        *,
        study: str | Path | None = None,
        arterial: str | None = None,
        portal: str | None = None,
        progress: Any = None,
    ) -> Recommendation:
        """As :meth:`hccatom.Predictor.recommend`, run on the server.

        ``study``: a DICOM study path *on the server*, relative to its ``--study-root``.
        ``arterial``/``portal`` series choice and ``progress`` are not supported remotely.
        """
        if clinical is None:
            raise InputError("recommend needs the clinical variables (clinical=...).")
        if arterial is not None or portal is not None or progress is not None:
            raise InputError("RemotePredictor.recommend does not take arterial=, portal= or "
                             "progress=; choose series locally and send the phases")
        request: dict[str, Any] = {"clinical": _clinical_mapping(clinical)}
        arrays: dict[str, np.ndarray] = {}
        if study is not None:
            if ct is not None:
                raise InputError("Pass either ct=... or study=..., not both.")
            request["study_path"] = str(study)
        else:
            from hccatom.chain import check_phase_keys
            from hccatom.ct_io import read_ct
            from hccatom.phases import PHASES
            from hccatom.predictor import CTStudy

            if ct is None:
                raise InputError("recommend needs ct={'arterial': ..., 'portal': ...} or "
                                 "study='path on the server'.")
            if isinstance(ct, Mapping):
                check_phase_keys(ct)
            phases = CTStudy.coerce(ct)
            for name in PHASES:
                try:
                    volume = read_ct(phases.phase(name))
                except HccatomError as exc:
                    raise exc.in_phase(name) from None
                request[name] = wire.phase_header(volume)
                arrays[name] = np.ascontiguousarray(volume.array, dtype=np.float32)[None]
        return self._send(request, arrays)

    def _send(self, request: dict[str, Any], arrays: dict[str, np.ndarray]) -> Recommendation:
        import tritonclient.grpc as grpcclient

        from hccatom.engines.triton_engine import remote_error

        text = json.dumps(request).encode()
        inputs = [grpcclient.InferInput(wire.REQUEST, [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[text]], dtype=object))
        for name, arr in arrays.items():
            t = grpcclient.InferInput(name, list(arr.shape), "FP32")
            t.set_data_from_numpy(arr)
            inputs.append(t)
        where = f"hccatom serve at {self.address}"
        try:
            result = self._client().infer(
                wire.MODEL_NAME, inputs, client_timeout=self.timeout_s,
                outputs=[grpcclient.InferRequestedOutput(wire.OUTPUT)])
        except Exception as exc:
            typed = wire.decode_error(str(exc))
            if typed is not None:
                raise typed from None
            raise remote_error(exc, where) from None
        out = result.as_numpy(wire.OUTPUT)
        if out is None or out.size != 1:
            raise RemoteModelError(f"{where} answered without a recommendation")
        try:
            return Recommendation.model_validate_json(bytes(out.reshape(-1)[0]))
        except ValueError as exc:
            raise RemoteModelError(f"{where} answered a malformed recommendation: {exc}"
                                   ) from None

    def close(self) -> None:
        """Close this thread's gRPC client."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def __enter__(self) -> RemotePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RemotePredictor"]
