"""benchmarks/gpu/strip_fatbin.py: keep one GPU architecture in a CUDA library's fat binary.

Synthetic containers and a hand-built ELF file stand in for libonnxruntime_providers_cuda.so
(its real check, cuobjdump listing and cubin hashes, is recorded in benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "strip_fatbin", ROOT / "benchmarks" / "gpu" / "strip_fatbin.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["strip_fatbin"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


sf = _module()


def entry(kind: int, arch: int, payload: bytes) -> bytes:
    """A 64-byte entry header (kind, version, header size, payload size, arch at 28) + payload."""
    assert len(payload) % 8 == 0
    head = bytearray(64)
    struct.pack_into("<HHIQ", head, 0, kind, 0x0101, 64, len(payload))
    struct.pack_into("<I", head, 28, arch)
    return bytes(head) + payload


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", sf.MAGIC, 1, 16, len(body)) + body


def test_keeps_only_the_arch_in_place_and_leaves_other_containers() -> None:
    e75, e90, e120 = (entry(2, a, bytes([a]) * 40) for a in (75, 90, 120))
    ptx90 = entry(1, 90, b"ptx90...")
    mixed = container(e75, e90, ptx90, e120)
    only120 = container(entry(2, 120, b"x" * 16))
    only90 = container(entry(2, 90, b"y" * 24))
    buf = bytearray(mixed + only120 + only90)
    before = bytes(buf)

    report = sf.strip_section(buf, 90)

    assert len(buf) == len(before)
    assert (report.containers, report.rewritten) == (3, 1)
    kept = e90 + ptx90
    assert struct.unpack_from("<Q", buf, 8)[0] == len(kept)
    assert bytes(buf[16:16 + len(kept)]) == kept
    assert bytes(buf[16 + len(kept):len(mixed)]) == bytes(len(mixed) - 16 - len(kept))
    assert bytes(buf[len(mixed):]) == before[len(mixed):]  # untouched containers
    assert report.dropped == {"elf_sm75": len(e75), "elf_sm120": len(e120)}
    assert report.kept["elf_sm90"] == len(e90) + len(only90) - 16
    assert report.kept["ptx_sm90"] == len(ptx90)
    assert report.kept["elf_sm120"] == 64 + 16  # a container without sm_90 is kept whole


def test_stripped_section_parses_again_and_a_second_strip_changes_nothing() -> None:
    buf = bytearray(container(entry(2, 80, b"a" * 8), entry(2, 90, b"b" * 8)))
    sf.strip_section(buf, 90)
    # the container now ends early; the zeros after it are skipped, not read as a container
    again = bytearray(buf)
    report = sf.strip_section(again, 90)
    assert (report.containers, report.rewritten) == (1, 0)
    assert again == buf


def test_unknown_layout_raises_and_changes_nothing() -> None:
    good = container(entry(2, 80, b"a" * 8), entry(2, 90, b"b" * 8))
    bad_magic = bytearray(good + b"\x01\x02\x03\x04" + bytes(12))
    snapshot = bytes(bad_magic)
    with pytest.raises(sf.FatbinError, match="magic"):
        sf.strip_section(bad_magic, 90)
    assert bytes(bad_magic) == snapshot  # checked before the first byte changed
    overrun = bytearray(good)
    struct.pack_into("<Q", overrun, 16 + 8, 4096)  # first entry claims more than there is
    with pytest.raises(sf.FatbinError, match="runs past"):
        sf.strip_section(overrun, 90)


def elf_with_fatbin(section: bytes, prefix: bytes = b"HOSTCODE" * 4) -> tuple[bytes, int]:
    """A minimal ELF64 file: null section, .nv_fatbin, .shstrtab; and the section's offset."""
    names = b"\0.nv_fatbin\0.shstrtab\0"
    fat_off = 64 + len(prefix)
    str_off = fat_off + len(section)
    shoff = str_off + len(names)
    shoff += -shoff % 8
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 0x28, shoff)
    struct.pack_into("<HHH", head, 0x3A, 64, 3, 2)

    def sh(name: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, offset, size, 0, 0, 8, 0)

    body = bytes(head) + prefix + section + names
    body += bytes(shoff - len(body))
    body += sh(0, 0, 0) + sh(1, fat_off, len(section)) + sh(12, str_off, len(names))
    return body, fat_off


def test_strip_file_changes_only_the_fatbin_section(tmp_path: Path) -> None:
    section = container(entry(2, 86, b"c" * 32), entry(2, 90, b"d" * 16))
    data, off = elf_with_fatbin(section)
    lib = tmp_path / "libfake_cuda.so"
    lib.write_bytes(data)

    assert sf.fatbin_section(data) == (off, len(section))
    report = sf.strip_file(lib, 90)

    out = lib.read_bytes()
    assert report.rewritten == 1 and len(out) == len(data)
    assert out[:off] == data[:off] and out[off + len(section):] == data[off + len(section):]
    assert out[off:off + len(section)] != section
    assert sf.main([str(lib), "--keep-arch", "90"]) == 0  # idempotent through the CLI


def test_not_a_cuda_library(tmp_path: Path) -> None:
    data, _off = elf_with_fatbin(b"")
    plain = data.replace(b".nv_fatbin", b".rodata\0\0\0")
    lib = tmp_path / "libplain.so"
    lib.write_bytes(plain)
    with pytest.raises(sf.FatbinError, match=r"no \.nv_fatbin"):
        sf.strip_file(lib, 90)
    assert sf.main([str(lib), "--keep-arch", "90"]) == 1
    assert lib.read_bytes() == plain
    with pytest.raises(sf.FatbinError, match="not a 64-bit"):
        sf.fatbin_section(b"not an elf file at all" + bytes(64))
    with pytest.raises(sf.FatbinError, match="malformed"):
        sf.fatbin_section(plain[:100])  # section headers cut off
