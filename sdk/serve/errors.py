"""Typed errors of serving: every one is an :class:`~hccatom.errors.HccatomError`."""

from __future__ import annotations

from hccatom.errors import (
    EngineError,
    EngineUnavailableError,
    ExtraMissingError,
    HccatomError,
    InputError,
)

SERVE_INSTALL = 'pip install "hccatom[serve]"'


class ServeError(HccatomError):
    """Serving failed (server side or on the wire)."""


class ServeExtraMissingError(ServeError, EngineUnavailableError, ExtraMissingError):
    """PyTriton or tritonclient is not installed."""


class ServerUnavailableError(ServeError, EngineUnavailableError):
    """The Triton server cannot be reached or is not ready."""


class ServerTimeoutError(ServeError):
    """No answer within the client's deadline (the server may still be working on it)."""


class ServerBusyError(ServeError):
    """The server holds as many requests as it may; retry later or add instances."""


class RequestTooLargeError(ServeError, InputError):
    """A request is over the server's size limit."""


class RemoteModelError(ServeError, EngineError):
    """The server ran a model and failed, or answered something other than what was asked."""


class RepositoryError(ServeError):
    """A Triton model repository is missing, malformed or does not match its bundle."""


def require(module: str) -> None:
    """Raise :class:`ServeExtraMissingError` when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise ServeExtraMissingError(
            f"{module} is not installed: serving on Triton needs the serve extra "
            f"({SERVE_INSTALL})"
        )
