"""Check a path the user gave before anything opens it (hostile filesystem objects).

Opening a named pipe (FIFO) for reading blocks until a writer appears - forever, in
practice; a character device such as ``/dev/zero`` or ``/dev/urandom`` never ends; a sparse
file of 50 GB apparent size is read whole by a reader that trusts it; a symlink loop or a
broken symlink surfaces as a raw ``OSError``; a permission problem as a raw
``PermissionError``. Every function here looks with ``stat`` only (which never blocks and
reads no content) and raises the caller's typed error naming the path and what to do:

* :func:`check_input_file` - an existing, readable regular file (symlinks followed),
  optionally no larger than ``max_bytes``;
* :func:`check_input_folder` - an existing, listable folder;
* :func:`check_output_file` / :func:`check_output_folder` - where a result will be written:
  the parent folder exists and is writable, the path is not a folder (or not a file), not a
  FIFO or device; checked up front, before the expensive work;
* :func:`special_kind` - what a non-regular file is ("a named pipe (FIFO)", ...), for folder
  scans that skip or refuse such entries;
* :func:`open_regular_file` / :func:`read_regular_file` - open a file hccatom reads itself
  without the stat-then-open race: the path may be swapped for a FIFO between a ``stat``
  and the ``open``, so the open is non-blocking (``O_NONBLOCK | O_CLOEXEC``), the *open
  descriptor* is ``fstat``-ed, anything but a regular file is refused with the same typed
  error as :func:`check_input_file`, and the content is read from that same descriptor.

Running as root, ``os.access`` reports every file readable; the later open then succeeds
too, so the answer stays true for that process.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from hccatom.errors import HccatomError, InputError

__all__ = [
    "check_input_file",
    "check_input_folder",
    "check_output_file",
    "check_output_folder",
    "open_regular_file",
    "os_reason",
    "read_regular_file",
    "special_kind",
]

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is (None for a regular file or a folder)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None


def os_reason(exc: OSError) -> str:
    """The short reason of an OS error ("Permission denied"), for a message."""
    return exc.strerror or type(exc).__name__


def _stat(path: Path, what: str, error: type[HccatomError]) -> os.stat_result:
    """``os.stat`` (symlinks followed) with each failure turned into ``error``."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(f"{what} {path} is a broken symbolic link (its target does not "
                        "exist); pass the file itself.") from None
        raise error(f"{what} {path} not found (cannot read it: no such file or folder); "
                    "check the path.") from None
    except PermissionError:
        raise error(f"{what} {path}: permission denied while looking it up; check the "
                    "permissions of its folders.") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{what} {path} is a symbolic link loop; pass the real file or "
                        "folder.") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise error(f"{what}: the path is too long ({len(str(path))} characters).") from None
        raise error(f"{what} {path}: cannot be looked up ({os_reason(exc)}"
                    f").") from None


def _refuse_unless_regular(st: os.stat_result, p: Path, what: str,
                           error: type[Exception], max_bytes: int | None) -> None:
    """Raise ``error`` unless ``st`` is a regular file of at most ``max_bytes`` (the one
    wording for the path's ``stat`` and the open descriptor's ``fstat``)."""
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {p} is a folder; pass a file.")
    kind = special_kind(st.st_mode)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        desc = f"is {kind}, not a regular file" if kind else "is not a regular file"
        raise error(f"{what} {p} {desc}: reading it could block forever or never end. "
                    "Pass a regular file.")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {p} has {st.st_size:,} bytes, larger than the {max_bytes:,} "
                    "bytes allowed for this input; refused unread. Pass the right file.")


def check_input_file(path: str | Path, what: str, *, error: type[HccatomError] = InputError,
                     max_bytes: int | None = None) -> Path:
    """``path`` as a Path when it is a readable regular file (at most ``max_bytes``).

    ``what`` names the input in the message ("--clinical", "CT file", ...). Never opens the
    file: a FIFO or device is refused from its ``stat``, an oversized file from its
    apparent size.
    """
    p = Path(path)
    _refuse_unless_regular(_stat(p, what, error), p, what, error, max_bytes)
    if not os.access(p, os.R_OK):
        raise error(f"{what} {p}: permission denied (not readable); fix its permissions.")
    return p


def open_regular_file(path: str | Path, what: str, *,
                      error: type[Exception] = InputError,
                      max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading, after ``fstat`` of the open descriptor says it is
    a regular file (of at most ``max_bytes``); close it (``with``) when done.

    The open never blocks: ``O_NONBLOCK`` makes opening a FIFO return at once (and has no
    effect on a regular file's reads; it is cleared anyway), so a path swapped for a FIFO or
    device after an earlier ``stat`` is refused here with ``error`` and the same message as
    :func:`check_input_file`, instead of hanging. ``O_CLOEXEC``: no child process inherits
    it. Failures of the ``open`` itself (missing, permission, link loop) raise the usual
    ``OSError`` for the caller to word.
    """
    p = Path(path)
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_BINARY", 0))
    try:
        _refuse_unless_regular(os.fstat(fd), p, what, error, max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)  # owns fd from here on
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | Path, what: str, *, error: type[Exception] = InputError,
                      max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular_file`), read from the
    checked descriptor; at most ``max_bytes`` (a file that grew past it after the check is
    refused too, never read whole)."""
    p = Path(path)
    with open_regular_file(p, what, error=error, max_bytes=max_bytes) as fh:
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{what} {p} is larger than the {max_bytes:,} bytes allowed for this "
                    "input (it grew while being read); refused. Pass the right file.")
    return data


def check_input_folder(path: str | Path, what: str, *,
                       error: type[HccatomError] = InputError) -> Path:
    """``path`` as a Path when it is a folder this process may list and enter."""
    p = Path(path)
    st = _stat(p, what, error)
    if not stat.S_ISDIR(st.st_mode):
        kind = special_kind(st.st_mode) or "a file"
        raise error(f"{what} {p} is {kind}, not a folder; pass a folder.")
    if not os.access(p, os.R_OK | os.X_OK):
        raise error(f"{what} {p}: permission denied (folder not readable); fix its "
                    "permissions.")
    return p


def _writable_parent(p: Path, what: str, error: type[HccatomError]) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    try:
        st = os.stat(parent)
    except OSError:
        raise error(f"{what} {p}: the folder {parent} does not exist (or cannot be looked "
                    "up); create it first.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {p}: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{what} {p}: the folder {parent} is not writable; choose another "
                    "place or fix its permissions.")


def _existing_output(p: Path, what: str, error: type[HccatomError],
                     instead: str) -> os.stat_result | None:
    """The ``stat`` of what already stands at an output path (None when nothing does); a
    broken link or a link loop there is refused (``instead``: "name" or "folder")."""
    if not os.path.lexists(p):
        return None
    try:
        return os.stat(p)
    except OSError:
        raise error(f"{what} {p} is a broken symbolic link or a link loop; remove it "
                    f"or choose another {instead}.") from None


def check_output_file(path: str | Path, what: str, *,
                      error: type[HccatomError] = InputError) -> Path:
    """``path`` as a Path when a file can be written there: not a folder, FIFO or device,
    writable if it exists, in an existing writable folder. Checked before the work."""
    p = Path(path)
    st = _existing_output(p, what, error, "name")
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{what} {p} is an existing folder; pass a file name.")
        kind = special_kind(st.st_mode)
        if kind is not None:
            raise error(f"{what} {p} is {kind}; writing to it could block forever. Pass a "
                        "regular file name.")
        if not os.access(p, os.W_OK):
            raise error(f"{what} {p} exists and is not writable; fix its permissions or "
                        "choose another name.")
    _writable_parent(p, what, error)
    return p


def check_output_folder(path: str | Path, what: str, *,
                        error: type[HccatomError] = InputError) -> Path:
    """``path`` as a Path when results can go in that folder: an existing writable folder,
    or a new one (with missing parents) under an existing writable folder. Checked before
    the work."""
    p = Path(path)
    st = _existing_output(p, what, error, "folder")
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            kind = special_kind(st.st_mode) or "an existing file"
            raise error(f"{what} {p} is {kind}, not a folder; pass a folder.")
        if not os.access(p, os.W_OK | os.X_OK):
            raise error(f"{what} {p}: the folder is not writable; fix its permissions or "
                        "choose another folder.")
        return p
    ancestor = p.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent  # mkdir(parents=True) will create the rest
    _writable_parent(ancestor / p.name, what, error)
    return p
