"""Run a model on a remote Triton Inference Server over gRPC (binary tensors).

``TritonEngine`` implements the :class:`~hccatom.engines.Engine` protocol, so the SDK's
pre- and post-processing run locally and only the network runs on the server::

    Predictor.from_bundle("bundle.zip", engines="triton://gpu-host:8001")

It needs the serve extra (``tritonclient[grpc]``). Each thread gets its own gRPC client;
feeds are checked against the model's inputs before they are sent, and outputs against its
outputs when they come back (a server answering the wrong shape or an empty tensor raises
instead of passing garbage on).

Like :class:`~hccatom.engines.OnnxRuntimeEngine` it counts what it moves
(:meth:`TritonEngine.transfer_stats`, and a caller's ``meter``): the tensor bytes sent to the
server as ``host_to_device`` and received as ``device_to_host``. Tensors travel as raw bytes
(binary, no JSON), so these are the wire payload; gRPC/protobuf framing (names, shapes, some
tens of bytes per tensor) is not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from hccatom.engines.base import TensorSpec, TransferMeter, TransferStats, check_feeds
from hccatom.errors import EngineError, EngineUnavailableError, HccatomError

TRITON_SCHEME = "triton://"
_NUMPY_OF: dict[str, str] = {
    "FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64",
    "INT32": "int32", "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool",
}
#: Substrings of Triton/gRPC errors that mean "too many requests right now".
BUSY_MARKERS = ("Exceeds maximum queue size", "RESOURCE_EXHAUSTED", "server is busy")
#: Substrings of gRPC errors that mean "no server there".
UNREACHABLE_MARKERS = ("StatusCode.UNAVAILABLE", "failed to connect", "Connection refused",
                       "Socket closed")
TIMEOUT_MARKERS = ("DEADLINE_EXCEEDED", "Deadline Exceeded")


def parse_triton_url(url: str) -> str:
    """``triton://host:port`` (or ``host:port``) -> ``host:port``; raise on anything else."""
    rest = url[len(TRITON_SCHEME):] if url.startswith(TRITON_SCHEME) else url
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in rest.rstrip("/"):
        raise EngineUnavailableError(
            f"{url!r} is not a Triton gRPC address; write triton://HOST:PORT "
            "(Triton's gRPC port, 8001 by default)")
    return f"{host}:{port}"


def grpc_client(address: str) -> Any:
    """A ``tritonclient.grpc.InferenceServerClient`` or a typed error naming the extra."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise EngineUnavailableError(
            'TritonEngine needs the serve extra (pip install "hccatom[serve]"): '
            f"{exc}") from exc
    return grpcclient.InferenceServerClient(url=address)


def remote_error(exc: Exception, where: str) -> HccatomError:
    """A typed error for a tritonclient exception: busy, unreachable, or a model failure."""
    text = str(exc)
    from hccatom.serve.errors import (
        RemoteModelError,
        ServeError,
        ServerBusyError,
        ServerTimeoutError,
        ServerUnavailableError,
    )

    err: ServeError
    if any(m in text for m in BUSY_MARKERS):
        err = ServerBusyError(f"{where}: the server is busy ({text}); retry later or serve "
                              "more instances")
        return err
    if any(m in text for m in TIMEOUT_MARKERS):
        err = ServerTimeoutError(f"{where}: no answer within the client's deadline ({text});"
                                 " raise timeout_s or check the server's load")
        return err
    if any(m in text for m in UNREACHABLE_MARKERS):
        return ServerUnavailableError(f"{where}: the server cannot be reached ({text}); "
                                      "check that it runs and the address")
    return RemoteModelError(f"{where}: the server failed: {text}")


def _spec(name: str, datatype: str, shape: list[int], batched: bool) -> TensorSpec:
    if datatype not in _NUMPY_OF:
        raise EngineError(f"tensor {name!r} has Triton type {datatype}, which hccatom "
                          f"engines do not support ({', '.join(_NUMPY_OF)})")
    dims = tuple(
        ("batch" if batched and i == 0 else f"{name}_dim{i}") if int(d) < 0 else int(d)
        for i, d in enumerate(shape))
    return TensorSpec(name, _NUMPY_OF[datatype], dims)


class TritonEngine:
    """One model on a Triton server, run over gRPC with binary tensors.

    Args:
        url: ``triton://host:port`` of the server's gRPC endpoint.
        model_name: the Triton model (``hccatom.serve.model_names.triton_model_name`` of
            the bundle file).
        expected_sha256: the bundle file's sha256; when the served config carries
            ``hccatom_sha256`` (repositories from ``hccatom export triton``) they must
            match, so a server with another model version is refused at load.
        timeout_s: per-call deadline (client side).
    """

    def __init__(self, url: str, model_name: str, *, expected_sha256: str | None = None,
                 timeout_s: float = 120.0, model_version: str = "") -> None:
        self.address = parse_triton_url(url)
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = float(timeout_s)
        self._local = threading.local()
        self._meter = TransferMeter()
        where = f"Triton model {model_name!r} at {self.address}"
        client = self._client()
        try:
            ready = client.is_model_ready(model_name, model_version)
        except Exception as exc:
            raise remote_error(exc, where) from exc
        if not ready:
            raise EngineUnavailableError(
                f"{where} is not ready (not loaded, or a different repository); load it or "
                "check the name")
        try:
            meta = client.get_model_metadata(model_name, model_version, as_json=True)
            config = client.get_model_config(model_name, model_version, as_json=True)
        except Exception as exc:
            raise remote_error(exc, where) from exc
        cfg = config.get("config", config)
        batched = int(cfg.get("max_batch_size", 0)) > 0
        self._inputs = tuple(_spec(t["name"], t["datatype"], t["shape"], batched)
                             for t in meta.get("inputs", []))
        self._outputs = tuple(_spec(t["name"], t["datatype"], t["shape"], batched)
                              for t in meta.get("outputs", []))
        served = cfg.get("parameters", {}).get("hccatom_sha256", {}).get("string_value")
        self.served_sha256: str | None = served
        if expected_sha256 and served and served != expected_sha256:
            raise EngineError(
                f"{where} serves a model with sha256 {served[:12]}..., but the bundle's file "
                f"has {expected_sha256[:12]}...; export the repository from this bundle "
                "(hccatom export triton) and reload the server")

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = grpc_client(self.address)
            self._local.client = client
        return client

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Model inputs as the server reports them."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Model outputs as the server reports them."""
        return self._outputs

    @property
    def providers(self) -> list[str]:
        """``["Triton(host:port)"]``: where the model runs."""
        return [f"Triton({self.address})"]

    def transfer_stats(self) -> TransferStats:
        """Tensor bytes sent to (``host_to_device``) and received from (``device_to_host``)
        the server so far, all calls and threads; ``calls`` counts answered calls."""
        return self._meter.snapshot()

    def run(
        self, feeds: Mapping[str, np.ndarray], *, meter: TransferMeter | None = None
    ) -> dict[str, np.ndarray]:
        """Send ``feeds`` (checked first) and return the outputs, checked against the specs.

        Counts the bytes sent and received in :meth:`transfer_stats` and ``meter`` (when
        given); a call that fails on the wire counts nothing."""
        import tritonclient.grpc as grpcclient

        arrays = check_feeds(self._inputs, feeds)
        inputs = []
        for spec in self._inputs:
            arr = arrays[spec.name]
            t = grpcclient.InferInput(spec.name, list(arr.shape),
                                      {v: k for k, v in _NUMPY_OF.items()}[spec.dtype])
            t.set_data_from_numpy(arr)
            inputs.append(t)
        wanted = [grpcclient.InferRequestedOutput(s.name) for s in self._outputs]
        where = f"Triton model {self.model_name!r} at {self.address}"
        try:
            result = self._client().infer(self.model_name, inputs, model_version=
                                          self.model_version, outputs=wanted,
                                          client_timeout=self.timeout_s)
        except Exception as exc:
            raise remote_error(exc, where) from exc
        out: dict[str, np.ndarray] = {}
        bindings: dict[str, int] = {}
        for spec in self._inputs:  # the batch size the outputs must have
            spec.check(arrays[spec.name], bindings)
        for spec in self._outputs:
            try:
                arr = result.as_numpy(spec.name)
            except Exception as exc:  # e.g. an empty tensor that cannot take its shape
                raise remote_error(exc, f"{where}, output {spec.name!r}") from exc
            if arr is None:
                raise remote_error(RuntimeError("output missing from the answer"),
                                   f"{where}, output {spec.name!r}")
            try:
                spec.check(arr, bindings)
            except EngineError as exc:
                raise remote_error(exc, f"{where}, output {spec.name!r}") from exc
            out[spec.name] = np.ascontiguousarray(arr)
        sent = sum(a.nbytes for a in arrays.values())
        received = sum(a.nbytes for a in out.values())
        self._meter.add(sent, received, calls=1)
        if meter is not None:
            meter.add(sent, received, calls=1)
        return out

    def close(self) -> None:
        """Close this thread's gRPC client."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def __repr__(self) -> str:
        return f"TritonEngine({self.model_name!r} at {self.address})"
