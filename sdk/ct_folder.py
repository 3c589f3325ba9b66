"""List a DICOM series folder safely before GDCM scans it.

GDCM's series scan opens every entry of the folder: a named pipe (FIFO) there blocks the
scan forever and a link to ``/dev/zero`` never ends. :func:`dicom_folder_files` looks at
each entry with ``stat`` only (nothing is opened) and

* refuses a FIFO, device or socket (also behind a symlink) with a :class:`CTInputError`
  naming it - GDCM would open it, so it cannot merely be skipped;
* refuses broken symlinks and symlink loops, naming them: GDCM's scan does not skip them
  (measured: one broken link made it report no series at all, one link loop made it drop
  four good slices), so they cannot merely be skipped either;
* ignores sub-folders and links to folders (the scan is not recursive, so a link to a
  parent folder cannot loop);
* refuses a folder with more than :data:`MAX_FOLDER_ENTRIES` entries (a series folder
  holds one series: a few thousand slices at most), before any file is read;
* turns a folder that cannot be listed (permission denied) into a typed error.

It returns the regular files, sorted, for :func:`hccatom.dicom_check.check_dicom_file`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hccatom.errors import CTInputError
from hccatom.path_checks import os_reason, special_kind

__all__ = ["MAX_FOLDER_ENTRIES", "dicom_folder_files"]

MAX_FOLDER_ENTRIES = 10_000
"""Entries a DICOM series folder may hold (thin-slice whole-body CT: about 4,000 slices)."""


def dicom_folder_files(folder: Path) -> list[Path]:
    """The regular files of a DICOM series folder (sorted); see the module doc."""
    try:
        with os.scandir(folder) as it:
            entries = []
            for entry in it:
                entries.append(entry)
                if len(entries) > MAX_FOLDER_ENTRIES:
                    raise CTInputError(
                        f"DICOM folder {folder} holds more than {MAX_FOLDER_ENTRIES:,} "
                        "entries; a series folder holds one CT series. Pass the folder of "
                        "one series (or use --study for a whole study)."
                    )
    except PermissionError:
        raise CTInputError(f"DICOM folder {folder}: permission denied (cannot list it); fix "
                           "its permissions.") from None
    except OSError as exc:
        raise CTInputError(f"DICOM folder {folder} cannot be listed ({os_reason(exc)}"
                           f").") from None
    files: list[Path] = []
    for entry in sorted(entries, key=lambda e: e.name):
        path = Path(entry.path)
        try:
            st = os.stat(path)
        except OSError:  # broken link, link loop, vanished file
            raise CTInputError(
                f"DICOM folder {folder}: {entry.name} is a broken symbolic link or a link "
                "loop; remove it from the folder (the series reader cannot skip it)."
            ) from None
        if stat.S_ISDIR(st.st_mode):
            continue
        kind = special_kind(st.st_mode)
        if kind is not None:
            raise CTInputError(
                f"DICOM folder {folder}: {entry.name} is {kind}, not a file; reading it "
                "would block or never end. Remove it from the folder."
            )
        files.append(path)
    return files
