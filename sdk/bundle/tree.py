"""Walk a bundle directory without leaving it, blocking or looping.

A bundle's files must stay inside the bundle: a symlink that resolves outside the bundle
folder (``model.onnx -> /etc/passwd``, ``up -> ..``) would let a bundle read - and hash, and
load - whatever it points at. A named pipe (FIFO) or device inside a bundle would block the
checksum pass forever. :func:`bundle_tree_files` walks the folder with ``os.scandir``
(symlinks never followed into folders, so a link loop cannot recurse) and raises
:class:`~hccatom.errors.BundleIntegrityError` naming the entry for

* a symlink whose target is outside the bundle, a broken symlink or a link loop;
* a symlink to a folder (a bundle is plain files in plain folders);
* a FIFO, device or socket;
* a folder that cannot be listed (permission denied).

It returns the regular files (symlinks to files inside the bundle included), sorted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hccatom.errors import BundleIntegrityError
from hccatom.path_checks import os_reason, special_kind

__all__ = ["MAX_BUNDLE_ENTRIES", "MAX_BUNDLE_ZIP_BYTES", "bundle_tree_files"]

MAX_BUNDLE_ZIP_BYTES = 16 << 30
"""A bundle zip larger than this (16 GiB; real bundles are well under 2 GiB) is refused
from its size, unread."""

MAX_BUNDLE_ENTRIES = 10_000
"""Files and folders a bundle directory may hold (a real one holds a few dozen)."""


def _inside(target: Path, root: Path) -> bool:
    return target == root or root in target.parents


def bundle_tree_files(root: Path) -> list[Path]:
    """The regular files under the bundle folder ``root``, sorted; see the module doc."""
    real_root = root.resolve()
    files: list[Path] = []
    pending = [root]
    seen = 0
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise BundleIntegrityError(
                f"{root}: the bundle folder {folder} cannot be listed ({os_reason(exc)}"
                f"); fix its permissions or copy the bundle again."
            ) from None
        seen += len(entries)
        if seen > MAX_BUNDLE_ENTRIES:
            raise BundleIntegrityError(
                f"{root}: more than {MAX_BUNDLE_ENTRIES:,} files and folders; this is not a "
                "bundle (a bundle holds a few dozen files)."
            )
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):  # broken link or link loop
                    raise BundleIntegrityError(
                        f"{root}: {rel!r} is a broken symbolic link or a link loop; copy "
                        "the bundle again (without links)."
                    ) from None
                if not _inside(target, real_root):
                    raise BundleIntegrityError(
                        f"{root}: {rel!r} is a symbolic link pointing outside the bundle; a "
                        "bundle's files must stay inside it. Copy the bundle again."
                    )
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                raise BundleIntegrityError(
                    f"{root}: {rel!r} cannot be looked up ({os_reason(exc)}"
                    f")."
                ) from None
            if stat.S_ISDIR(mode):
                if entry.is_symlink():
                    raise BundleIntegrityError(
                        f"{root}: {rel!r} is a symbolic link to a folder; a bundle holds "
                        "plain folders only. Copy the bundle again (without links)."
                    )
                pending.append(path)
                continue
            kind = special_kind(mode)
            if kind is not None:
                raise BundleIntegrityError(
                    f"{root}: {rel!r} is {kind}, not a file; reading it would block or "
                    "never end. Remove it or copy the bundle again."
                )
            files.append(path)
    return sorted(files)
