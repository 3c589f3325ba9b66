"""Make PyTriton's bundled Triton server start from this interpreter.

PyTriton runs ``tritonserver`` as a child process whose Python backend stub loads the
interpreter's own ``libpython``; the library's folder must be on ``LD_LIBRARY_PATH`` of
that child. :func:`prepare` puts it there (in this process's environment, inherited by the
child), so that nobody has to edit a shell profile. It also refuses the two setups known to
fail: no shared ``libpython`` (a static Python build), and numpy 2 (PyTriton 0.7's Python
backend then returns empty output tensors without an error).
"""

from __future__ import annotations

import os
import platform
import socket
import sysconfig
from pathlib import Path

from hccatom.serve.errors import SERVE_INSTALL, ServeError, require


def libpython_dir() -> Path:
    """The folder holding this interpreter's shared ``libpython``.

    Raises :class:`ServeError` when the interpreter has none (built without
    ``--enable-shared``): PyTriton's stub cannot load it then.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    shared = name.endswith(".so") or ".so." in name
    if libdir and shared and (Path(libdir) / name).is_file():
        return Path(libdir)
    raise ServeError(
        f"this Python ({platform.python_implementation()} {platform.python_version()}) has no "
        f"shared libpython ({name or 'LDLIBRARY unset'} in {libdir}); PyTriton's Python stub "
        "needs one: use a Python built with --enable-shared (pyenv: "
        "PYTHON_CONFIGURE_OPTS=--enable-shared, or the distribution's python3)"
    )


def add_to_library_path(folder: Path) -> str:
    """Put ``folder`` first on ``LD_LIBRARY_PATH`` of this process (once); return the value."""
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if str(folder) not in current:
        current.insert(0, str(folder))
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(current)
    return os.environ["LD_LIBRARY_PATH"]


def check_numpy() -> None:
    """Refuse numpy 2 with PyTriton 0.7: its outputs would come back empty."""
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        raise ServeError(
            f"numpy {np.__version__} is installed; PyTriton 0.7 returns empty outputs with "
            f"numpy 2. Install the serve extra in its own environment ({SERVE_INSTALL}, "
            "which selects numpy<2)"
        )


def check_glibc() -> None:
    """PyTriton's server binary needs glibc 2.35 or newer."""
    lib, version = platform.libc_ver()
    if lib == "glibc" and version:
        major, minor = (int(x) for x in version.split(".")[:2])
        if (major, minor) < (2, 35):
            raise ServeError(f"glibc {version} is too old for PyTriton's Triton server "
                             "(needs 2.35 or newer, e.g. Ubuntu 22.04, Debian 12)")


def prepare() -> None:
    """Everything PyTriton needs before a server starts (raises :class:`ServeError`)."""
    require("pytriton")
    check_glibc()
    check_numpy()
    add_to_library_path(libpython_dir())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (for tests and ``--grpc-port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
