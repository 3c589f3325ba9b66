"""Keep one GPU architecture's code in a CUDA shared library (to make the carried payload small).

A CUDA library's ``.nv_fatbin`` ELF section is a run of fat-binary containers; each holds
entries (a header, then a payload: a cubin for one ``sm_XX`` or PTX). ONNX Runtime's CUDA
provider carries cubins for sm_75 ... sm_120 (about 208 MiB, already compressed, so xz
cannot shrink them); a device runs only the entries of its own architecture. This rewrites
every container that holds an entry for ``--keep-arch`` so that it holds only those entries:
they move to the front of the container, the container's size field shrinks, and the freed
bytes become zeros (which xz packs to almost nothing). Containers without such an entry are
left as they are; zeros between containers (a stripped file) are skipped, so a second strip
changes nothing. No offset outside a container changes, so the host code's pointers to the
containers stay valid. The file stays the same size.

Container layout (little endian): ``u32 magic 0xBA55ED50, u16 version, u16 header size,
u64 size of the entries that follow``; each entry: ``u16 kind, u16 version, u32 header
size, u64 payload size (padded)``, ..., ``u32 sm arch`` at byte 28 of the entry header.
Unknown layouts (a wrong magic, an entry running past its container) raise FatbinError and
the file is not touched.

    python benchmarks/gpu/strip_fatbin.py libonnxruntime_providers_cuda.so --keep-arch 90
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = 0xBA55ED50
_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQ")
_ARCH_OFFSET = 28
_ZEROS = bytes(8)


class FatbinError(ValueError):
    """The file is not laid out as this tool expects; nothing was changed."""


@dataclass
class StripReport:
    """What a strip did: containers seen and rewritten, bytes per (kind, arch) kept/dropped."""

    containers: int = 0
    rewritten: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        mib = lambda c: f"{sum(c.values()) / 2**20:.1f} MiB"  # noqa: E731
        return (f"{self.containers} containers, {self.rewritten} rewritten; kept {mib(self.kept)} "
                f"({', '.join(sorted(self.kept))}), dropped {mib(self.dropped)} "
                f"({', '.join(sorted(self.dropped))})")


def _label(kind: int, arch: int) -> str:
    return f"{'ptx' if kind == 1 else 'elf'}_sm{arch}"


def _entries(buf: bytearray, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(offset, length, kind, arch) of each entry of the container spanning [start, end)."""
    out = []
    pos = start
    while pos < end:
        if pos + 32 > end:
            raise FatbinError(f"truncated entry header at section offset {pos}")
        kind, _ver, header, payload = _ENTRY.unpack_from(buf, pos)
        arch = struct.unpack_from("<I", buf, pos + _ARCH_OFFSET)[0]
        length = header + payload
        if header < 32 or pos + length > end:
            raise FatbinError(f"entry at section offset {pos} runs past its container")
        out.append((pos, length, kind, arch))
        pos += length
    return out


def strip_section(buf: bytearray, keep_arch: int) -> StripReport:
    """Rewrite the ``.nv_fatbin`` bytes ``buf`` in place (see the module docstring).

    Everything is parsed and checked before the first byte changes.
    """
    report = StripReport()
    plan: list[tuple[int, int, list[tuple[int, int, int, int]]]] = []
    pos = 0
    while pos < len(buf):
        if buf[pos:pos + 8] == _ZEROS:  # space a strip freed (8-byte units): not a container
            pos += 8
            continue
        if pos + _CONTAINER.size > len(buf):
            raise FatbinError(f"trailing {len(buf) - pos} bytes after the last container")
        magic, _ver, header, size = _CONTAINER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise FatbinError(f"no fat-binary magic at section offset {pos} ({magic:#x})")
        end = pos + header + size
        if end > len(buf):
            raise FatbinError(f"container at section offset {pos} runs past the section")
        plan.append((pos, header, _entries(buf, pos + header, end)))
        pos = end
    for start, header, entries in plan:
        report.containers += 1
        keep = [e for e in entries if e[3] == keep_arch]
        for _off, length, kind, arch in entries:
            (report.kept if (not keep or arch == keep_arch) else report.dropped)[
                _label(kind, arch)] += length
        if not keep or len(keep) == len(entries):
            continue
        end = start + header + sum(e[1] for e in entries)
        kept = b"".join(bytes(buf[o:o + n]) for o, n, _k, _a in keep)
        body = start + header
        buf[body:body + len(kept)] = kept
        buf[body + len(kept):end] = bytes(end - body - len(kept))
        struct.pack_into("<Q", buf, start + 8, len(kept))
        report.rewritten += 1
    return report


def fatbin_section(data: bytes | bytearray) -> tuple[int, int]:
    """(file offset, size) of the ``.nv_fatbin`` section of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise FatbinError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    try:
        _n, str_off, _s = section(shstrndx)
        for i in range(shnum):
            name, offset, size = section(i)
            end = data.index(b"\0", str_off + name)
            if data[str_off + name:end] == b".nv_fatbin":
                if offset + size > len(data):
                    raise FatbinError(".nv_fatbin runs past the end of the file")
                return offset, size
    except (struct.error, ValueError) as exc:
        if isinstance(exc, FatbinError):
            raise
        raise FatbinError(f"malformed ELF section table ({exc})") from exc
    raise FatbinError("no .nv_fatbin section (not a CUDA library?)")


def strip_file(path: Path, keep_arch: int) -> StripReport:
    """Strip ``path`` in place; on any FatbinError the file is left unchanged."""
    data = bytearray(path.read_bytes())
    offset, size = fatbin_section(data)
    section = data[offset:offset + size]
    report = strip_section(section, keep_arch)
    if report.rewritten:
        data[offset:offset + size] = section
        path.write_bytes(bytes(data))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("library", type=Path, nargs="+")
    p.add_argument("--keep-arch", type=int, required=True,
                   help="sm number to keep, e.g. 90 for H100/H200 (90a entries count as 90)")
    args = p.parse_args(argv)
    for lib in args.library:
        try:
            report = strip_file(lib, args.keep_arch)
        except FatbinError as exc:
            print(f"strip_fatbin: {lib}: {exc}; left unchanged", file=sys.stderr)
            return 1
        print(f"strip_fatbin: {lib.name}: {report.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
