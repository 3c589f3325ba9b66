"""Without the dicom extra, hccatom.dicom imports and says what to install (no pydicom)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_missing_extra_is_a_typed_error() -> None:
    code = textwrap.dedent(
        """
        import builtins
        real_import = builtins.__import__
        def guarded(name, *args, **kwargs):
            if name.split('.')[0] in {'pydicom', 'highdicom'}:
                raise ModuleNotFoundError('blocked: ' + name, name=name)
            return real_import(name, *args, **kwargs)
        builtins.__import__ = guarded
        import hccatom.dicom
        from hccatom.errors import InputError
        try:
            hccatom.dicom.find_phases
        except hccatom.dicom.DicomExtraMissingError as exc:
            assert isinstance(exc, InputError)
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "pip install 'hccatom[dicom]'" in out.stdout
