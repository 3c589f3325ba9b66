"""Output paths of the command line, checked before the work that fills them.

A recommendation takes seconds to minutes; an output file whose folder does not exist used
to fail only at the end, as an internal error, with the result lost. ``-`` (stdout) is
always fine.
"""

from __future__ import annotations

from pathlib import Path

from hccatom.errors import InputError


def check_output_file(flag: str, path: Path | str | None) -> None:
    """Raise :class:`InputError` naming ``flag`` when ``path`` cannot be written as a file:
    its folder does not exist, or it is an existing folder."""
    if path is None or str(path) == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag} {p}: is a folder; give a file name, e.g. {p / 'out.json'}.")
    parent = p.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {p}: the folder {parent} does not exist; create it "
                         "(mkdir -p) or choose another path. Nothing was run.")


__all__ = ["check_output_file"]
