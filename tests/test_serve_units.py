"""Serving pieces that need no server: wire format, typed-error transport, names, checks."""

from __future__ import annotations

import numpy as np
import pytest

from hccatom.errors import ClinicalInputError, CTInputError, HccatomError, InputError
from hccatom.serve import pytriton_env, wire
from hccatom.serve.errors import RequestTooLargeError, ServeError, ServerBusyError
from hccatom.serve.model_names import triton_model_name
from hccatom.volume import Volume


def test_model_names_are_unique_and_triton_safe() -> None:
    assert triton_model_name("segmentation/fold_0.onnx") == "segmentation__fold_0"
    assert triton_model_name("selection/TACE/selection_tace.onnx") == \
        "selection__TACE__selection_tace"
    assert triton_model_name("seg/3d lowres/fold 0.onnx") == "seg__3d_lowres__fold_0"
    assert triton_model_name("a/b.onnx") != triton_model_name("a__b.onnx".replace("__", "/x"))


def test_typed_errors_survive_the_wire_with_message_and_fields() -> None:
    exc = ClinicalInputError("Invalid clinical variables (2 problem(s))",
                             [("inr", "got 'high'"), ("ecog", "got 7")])
    text = "Traceback ...\n  File x\nTritonResponseError: " + wire.encode_error(exc)
    back = wire.decode_error(text)
    assert type(back) is ClinicalInputError and str(back) == str(exc)
    assert back.problems == exc.problems
    busy = wire.decode_error(wire.encode_error(ServerBusyError("full")))
    assert type(busy) is ServerBusyError
    phased = wire.decode_error(wire.encode_error(CTInputError("bad").in_phase("portal")))
    assert isinstance(phased, CTInputError) and phased.phase == "portal"
    assert str(phased) == "portal phase: bad"
    assert wire.decode_error("no tag here") is None
    assert wire.decode_error(wire.ERROR_TAG + "!!!") is None


def test_unknown_error_type_becomes_the_base_class() -> None:
    import base64
    import json

    token = base64.b64encode(json.dumps({"type": "SystemExit", "message": "m"}).encode())
    back = wire.decode_error(wire.ERROR_TAG + token.decode())
    assert type(back) is HccatomError and str(back) == "m"


def test_phase_geometry_round_trip_and_bad_headers() -> None:
    vol = Volume.from_array(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (2.5, 0.7, 0.7),
                            origin=(1.0, 2.0, 3.0), notes=("a note",))
    back = wire.phase_volume("arterial", wire.phase_header(vol), vol.array)
    assert back.spacing == vol.spacing and back.origin == vol.origin
    assert back.direction == vol.direction and back.notes == vol.notes
    np.testing.assert_array_equal(back.array, vol.array)
    with pytest.raises(CTInputError, match=r"arterial\.spacing_zyx_mm' is missing"):
        wire.phase_volume("arterial", {}, vol.array)
    with pytest.raises(CTInputError, match="portal phase array is missing"):
        wire.phase_volume("portal", wire.phase_header(vol), None)
    with pytest.raises(CTInputError, match="notes"):
        wire.phase_volume("portal", {"spacing_zyx_mm": [1, 1, 1], "notes": [1]}, vol.array)


def test_request_json_limits() -> None:
    assert wire.parse_request(b'{"clinical": {}}') == {"clinical": {}}
    with pytest.raises(RequestTooLargeError):
        wire.parse_request(b" " * (wire.REQUEST_JSON_LIMITS.max_bytes + 1))
    with pytest.raises(InputError, match="refused"):
        wire.parse_request(b"[" * 100 + b"]" * 100)
    with pytest.raises(InputError, match="object"):
        wire.parse_request(b"[]")


def test_environment_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    import sysconfig

    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):  # a static build: refused clearly
        with pytest.raises(ServeError, match="enable-shared"):
            pytriton_env.libpython_dir()
        return
    folder = pytriton_env.libpython_dir()
    assert any(p.name.startswith("libpython") for p in folder.iterdir())
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/x")
    value = pytriton_env.add_to_library_path(folder)
    assert value.split(":") == [str(folder), "/opt/x"]
    assert pytriton_env.add_to_library_path(folder) == value  # once
    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(ServeError, match="numpy<2"):
        pytriton_env.check_numpy()
    monkeypatch.setattr("sysconfig.get_config_var",
                        lambda name: {"LIBDIR": "/nowhere", "LDLIBRARY": "libpython3.11.a"}
                        .get(name))
    with pytest.raises(ServeError, match="enable-shared"):
        pytriton_env.libpython_dir()


class _FakeClient:
    """What TritonEngine asks a server at creation, answered from a dict."""

    def __init__(self, sha: str | None) -> None:
        self.sha = sha

    def is_model_ready(self, name: str, version: str = "") -> bool:
        return name == "m"

    def get_model_metadata(self, name: str, version: str = "", as_json: bool = False
                           ) -> dict[str, object]:
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}

    def get_model_config(self, name: str, version: str = "", as_json: bool = False
                         ) -> dict[str, object]:
        params = {} if self.sha is None else {"hccatom_sha256": {"string_value": self.sha}}
        return {"config": {"max_batch_size": 8, "parameters": params}}


def test_triton_engine_refuses_a_server_with_another_model_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hccatom.engines import triton_engine
    from hccatom.errors import EngineError, EngineUnavailableError

    monkeypatch.setattr(triton_engine, "grpc_client", lambda address: _FakeClient("a" * 64))
    engine = triton_engine.TritonEngine("triton://h:1", "m", expected_sha256="a" * 64)
    assert [s.shape for s in engine.inputs] == [("batch", 3)]
    assert engine.providers == ["Triton(h:1)"]
    with pytest.raises(EngineError, match="export the repository from this bundle"):
        triton_engine.TritonEngine("triton://h:1", "m", expected_sha256="b" * 64)
    with pytest.raises(EngineUnavailableError, match="not ready"):
        triton_engine.TritonEngine("triton://h:1", "other")
    monkeypatch.setattr(triton_engine, "grpc_client", lambda address: _FakeClient(None))
    assert triton_engine.TritonEngine("triton://h:1", "m", expected_sha256="b" * 64
                                      ).served_sha256 is None  # a server that cannot say


def test_serve_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from hccatom.cli import EXIT_NO_EXTRA, main
    from hccatom.demo import demo_bundle_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pytriton" else real(name, *a))
    assert main(["serve", "--bundle", str(demo_bundle_path())]) == EXIT_NO_EXTRA
    assert 'pip install "hccatom[serve]"' in capsys.readouterr().err


_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")


def _python_without_malloc_env(code: str, *args: str, **preset: str) -> list[str]:
    """Run ``code`` in a fresh Python whose environment has only the given malloc variables;
    its stdout's words."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in _MALLOC_ENV}
    env.update(preset)
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=True, timeout=60).stdout.split()


@pytest.mark.parametrize("preset", [None, "3", "junk"])
def test_allocator_settings_are_set_in_code(preset: str | None) -> None:
    """``hccatom serve --malloc serving``: arenas limited and the mmap threshold fixed in this
    process (mallopt) and in the environment the Triton server inherits; a valid user value
    is kept; trim runs."""
    import platform

    code = ("import os; from hccatom.serve.allocator import use_serving_settings, trim; "
            "print(use_serving_settings(), trim(), os.environ['MALLOC_ARENA_MAX'], "
            "os.environ['MALLOC_MMAP_THRESHOLD_'])")
    given = {} if preset is None else {"MALLOC_ARENA_MAX": preset,
                                       "MALLOC_MMAP_THRESHOLD_": preset}
    out = _python_without_malloc_env(code, **given)
    glibc = platform.libc_ver()[0] == "glibc"
    assert out[0] == str(glibc)  # mallopt took both (only glibc has it)
    assert out[1] in ("True", "False")  # malloc_trim ran (True: it returned memory)
    assert out[2] == ("3" if preset == "3" else "2")
    assert out[3] == ("3" if preset == "3" else str(1 << 20))


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc",
                    reason="mallinfo2 and the mmap threshold are glibc's")
def test_fixed_mmap_threshold_keeps_large_blocks_out_of_the_heap() -> None:
    """glibc raises its mmap threshold when an mmap-ed block is freed, so the next block of
    that size comes from the heap (where blocks fragment it); with the serving settings it
    gets its own mapping again, returned to the system when freed."""
    code = """
import ctypes, sys
from hccatom.serve.allocator import fix_mmap_threshold
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.mallinfo2.restype = [ctypes.c_void_p], Info
if sys.argv[1:] == ["fixed"]:
    fix_mmap_threshold()
libc.free(libc.malloc(4 << 20))  # mmap-ed (above the initial 128 kB threshold), then freed
before = libc.mallinfo2().hblks
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblks - before)  # 1: a mapping of its own; 0: from the heap
libc.free(block)
"""
    def mapped(*args: str) -> int:
        return int(_python_without_malloc_env(code, *args)[0])

    assert mapped() == 0  # glibc's dynamic threshold: the second block came from the heap
    assert mapped("fixed") == 1


class _FakeTriton:
    """A PyTriton server stand-in: ``run`` fails with the given errors, then succeeds."""

    def __init__(self, failure: Exception | None) -> None:
        self.failure, self.bound, self.stopped = failure, 0, False

    def run(self) -> None:
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self.stopped = True


_RACE = RuntimeError("load failed for model 'hccatom_recommend': Traceback ...\n"
                     "  inference_handler_config = get_config_from_handshake_server(sock)\n"
                     "ConnectionRefusedError: [Errno 111] Connection refused")


def _fake_starts(monkeypatch: pytest.MonkeyPatch,
                 failures: list[Exception | None]) -> list[_FakeTriton]:
    from hccatom.serve import pytriton_server

    made: list[_FakeTriton] = []

    def start(ports: object, *, exit_timeout_s: int = 30) -> _FakeTriton:
        made.append(_FakeTriton(failures[len(made)]))
        return made[-1]

    monkeypatch.setattr(pytriton_server, "start", start)
    return made


def test_startup_race_is_retried_on_a_new_server(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from hccatom.serve import pytriton_server

    made = _fake_starts(monkeypatch, [_RACE, _RACE, None])

    def bind(t: _FakeTriton) -> None:
        t.bound += 1

    with caplog.at_level("WARNING", logger="hccatom.serve.pytriton_server"):
        got = pytriton_server.start_and_run(pytriton_server.Ports(1, 2, 3), bind)
    assert got is made[2] and len(made) == 3
    assert [t.bound for t in made] == [1, 1, 1]  # every new server gets the models
    assert [t.stopped for t in made] == [True, True, False]  # failed ones are stopped
    assert sum("handshake race" in r.getMessage() for r in caplog.records) == 2


def test_other_start_failures_and_a_lasting_race_are_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hccatom.serve import pytriton_server

    made = _fake_starts(monkeypatch, [RuntimeError("port 8001 in use"), None])
    with pytest.raises(ServeError, match="did not start: port 8001 in use"):
        pytriton_server.start_and_run(pytriton_server.Ports(1, 2, 3), lambda t: None)
    assert len(made) == 1  # not retried

    made = _fake_starts(monkeypatch, [_RACE, _RACE, None])
    with pytest.raises(ServeError, match="Connection refused"):
        pytriton_server.start_and_run(pytriton_server.Ports(1, 2, 3), lambda t: None,
                                      attempts=2)
    assert len(made) == 2
    assert pytriton_server.is_startup_race(_RACE)
    assert not pytriton_server.is_startup_race(RuntimeError("Connection refused"))
    with pytest.raises(ValueError, match="attempts"):
        pytriton_server.start_and_run(pytriton_server.Ports(1, 2, 3), lambda t: None,
                                      attempts=0)
