"""Walk a DICOM file's data elements and refuse lengths that run past the end of the file.

Fuzzing found that a 100 kB DICOM file whose element length was mutated to a huge value makes
GDCM allocate about 2 GB while merely listing the series in a folder. Before GDCM sees a
folder, :func:`check_dicom_file` walks each Part-10 file's elements (nested sequences and
items included) and refuses a declared length larger than the bytes that remain, naming the
file and the element tag. No value is read or echoed: only tags, VRs and lengths.

Scope: files with the ``DICM`` preamble; explicit or implicit VR little endian, and explicit
VR big endian after the meta group. Deflated transfer syntaxes are not walked beyond the
meta group (their dataset is compressed). Undefined lengths are followed through their
items to the delimiter.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from hccatom.errors import CTInputError
from hccatom.path_checks import open_regular_file

__all__ = ["check_dicom_file", "is_part10"]

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_ALL_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS",
                        b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                        b"US"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_IMPLICIT_LE = b"1.2.840.10008.1.2"
_EXPLICIT_BE = b"1.2.840.10008.1.2.2"
_DEFLATED = (b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2.8.1")
_MAX_DEPTH = 32


def _check_vr(explicit: bool, tag: int, vr: bytes, pos: int) -> None:
    """An explicit VR must be a known one: readers disagree on an unknown VR's length field
    (GDCM reads 4 bytes, so a mutated ``AE`` made it allocate 1.2 GB: fuzz finding
    dicom-oom-e18c335e6c98)."""
    if explicit and tag >> 16 != 0xFFFE and vr not in _ALL_VRS:
        raise _CorruptError(pos, tag, "has an unknown value representation")


class _CorruptError(Exception):
    def __init__(self, offset: int, tag: int, why: str) -> None:
        super().__init__(why)
        self.offset, self.tag, self.why = offset, tag, why


def is_part10(path: Path) -> bool:
    """Whether ``path`` starts with a 128-byte preamble and ``DICM``."""
    try:
        with open_regular_file(path, "DICOM file", error=CTInputError) as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


class _Walker:
    def __init__(self, buf: mmap.mmap | bytes, explicit: bool, little: bool) -> None:
        self.buf, self.explicit = buf, explicit
        self.e = "<" if little else ">"
        self.size = len(buf)

    def _need(self, pos: int, n: int, tag: int) -> None:
        if pos + n > self.size:
            raise _CorruptError(pos, tag, f"needs {n} bytes at offset {pos}, the file ends first")

    def header(self, pos: int) -> tuple[int, int, int, bytes]:
        """(tag, value length, header size, VR) of the element at ``pos``."""
        self._need(pos, 8, 0)
        group, elem = struct.unpack_from(self.e + "HH", self.buf, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE:  # item / delimiters: always implicit, 4-byte length
            return tag, struct.unpack_from(self.e + "I", self.buf, pos + 4)[0], 8, b""
        if not self.explicit:
            return tag, struct.unpack_from(self.e + "I", self.buf, pos + 4)[0], 8, b""
        vr = bytes(self.buf[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            self._need(pos, 12, tag)
            return tag, struct.unpack_from(self.e + "I", self.buf, pos + 8)[0], 12, vr
        return tag, struct.unpack_from(self.e + "H", self.buf, pos + 6)[0], 8, vr

    def walk(self, pos: int, end: int, depth: int, stop_tag: int | None = None) -> int:
        """Walk elements from ``pos`` to ``end`` (or to ``stop_tag``); returns the end offset."""
        if depth > _MAX_DEPTH:
            raise _CorruptError(pos, 0, f"nests sequences more than {_MAX_DEPTH} deep")
        while pos < end:
            tag, length, hsize, vr = self.header(pos)
            if stop_tag is not None and tag == stop_tag:
                return pos + hsize
            _check_vr(self.explicit, tag, vr, pos)
            body = pos + hsize
            if length == _UNDEFINED:
                if vr in (b"SQ", b"UN", b"") or tag == 0x7FE00010 or tag == _ITEM:
                    pos = self._undefined(body, tag, depth)
                    continue
                raise _CorruptError(pos, tag, "has an undefined length where none is allowed")
            if body + length > end:
                raise _CorruptError(
                    pos, tag, f"declares {length:,} bytes but only {max(0, end - body):,} remain"
                )
            if vr == b"SQ" or (tag == _ITEM and depth > 0):
                self.walk(body, body + length, depth + 1)
            pos = body + length
        return pos

    def _undefined(self, pos: int, tag: int, depth: int) -> int:
        """Skip an undefined-length value: items (each walked) up to the delimiter."""
        if tag == _ITEM:
            return self.walk(pos, self.size, depth + 1, stop_tag=_ITEM_END)
        while True:
            item, length, hsize, _ = self.header(pos)
            if item == _SEQ_END:
                return pos + hsize
            if item != _ITEM:
                raise _CorruptError(
                    pos, item, "is not an item inside a sequence of undefined length"
                )
            body = pos + hsize
            if length == _UNDEFINED:
                pos = self.walk(body, self.size, depth + 1, stop_tag=_ITEM_END)
                continue
            if body + length > self.size:
                raise _CorruptError(
                    pos, item, f"declares {length:,} bytes, past the end of the file"
                )
            if tag != 0x7FE00010:  # encapsulated pixel fragments are opaque bytes
                self.walk(body, body + length, depth + 1)
            pos = body + length


#: A file without the preamble whose first tag has a group below this, or whose bytes 4-5
#: are a VR, is walked as a raw dataset: GDCM reads such files (fuzzing found 0x0000, 0x0001
#: and 0x0004 starts). Text and most other formats start otherwise and are left to GDCM,
#: which skips them.
_RAW_FIRST_GROUP_BELOW = 0x0100


def _looks_like_raw_dataset(path: Path) -> bool:
    """Whether a file without the ``DICM`` preamble starts like a DICOM dataset."""
    try:
        with open_regular_file(path, "DICOM file", error=CTInputError) as fh:
            head = fh.read(8)
    except OSError:
        return False
    if len(head) < 8:
        return False
    group = struct.unpack_from("<H", head)[0]
    return group < _RAW_FIRST_GROUP_BELOW or head[4:6] in _ALL_VRS


def check_dicom_file(path: Path) -> None:
    """Refuse a DICOM file whose element lengths run past its end (module doc): Part-10
    files, and files without the preamble that start like a dataset (GDCM reads those too;
    fuzzing found a 287-byte one that made GDCM allocate 3 GB)."""
    part10 = is_part10(path)
    if not part10 and not _looks_like_raw_dataset(path):
        return
    with open_regular_file(path, "DICOM file", error=CTInputError) as fh:
        size = os.fstat(fh.fileno()).st_size  # the checked file, not the path
        if size <= (132 if part10 else 8):
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                if part10:
                    _walk_file(buf, size)
                else:
                    explicit = bytes(buf[4:6]) in _ALL_VRS
                    _Walker(buf, explicit=explicit, little=True).walk(0, size, 0)
            except _CorruptError as exc:
                group, elem = exc.tag >> 16, exc.tag & 0xFFFF
                raise CTInputError(
                    f"DICOM file {path} is corrupt or truncated: data element "
                    f"({group:04X},{elem:04X}) at byte {exc.offset} {exc.why}. Copy it again "
                    "from the source."
                ) from None


def _walk_file(buf: mmap.mmap, size: int) -> None:
    meta = _Walker(buf, explicit=True, little=True)
    pos, syntax = 132, b""
    while pos < size:  # the meta group (0002,xxxx) is always explicit VR little endian
        tag, length, hsize, vr = meta.header(pos)
        if tag >> 16 != 0x0002:
            break
        _check_vr(True, tag, vr, pos)
        if length == _UNDEFINED or pos + hsize + length > size:
            raise _CorruptError(pos, tag, f"declares {length:,} bytes, past the end of the file")
        if tag == 0x00020010:
            syntax = bytes(buf[pos + hsize : pos + hsize + length]).rstrip(b"\x00 ")
        pos += hsize + length
    if syntax in _DEFLATED or pos >= size:
        return
    # no transfer syntax in the meta group: look at the first element, as readers do
    first_vr = bytes(buf[pos + 4 : pos + 6])
    explicit = syntax != _IMPLICIT_LE if syntax else first_vr in _ALL_VRS
    dataset = _Walker(buf, explicit=explicit, little=syntax != _EXPLICIT_BE)
    dataset.walk(pos, size, 0)
