"""MkDocs hooks (``hooks:`` in mkdocs.yml): the API source tree and the generated parts.

* ``on_startup``: the repository folders are not named like the import namespace
  (``sdk/`` is ``hccatom``, ``engines/`` is ``hccatom.engines``, ...), so mkdocstrings could
  not find ``hccatom`` in a fresh clone. This lays out ``build/docs-api/hccatom`` as a tree of
  symlinks with the installed names (the same tree ``tools/typecheck.py`` gives mypy), which
  mkdocs.yml names in the python handler's ``paths``, and puts it first on ``sys.path`` so
  the generated tables describe this clone's code.
* ``on_page_markdown``: replaces ``<!-- hccatom:NAME -->`` placeholders with the parts
  ``tools/docgen.py`` generates (clinical variables, manifest fields, CLI reference).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
API_TREE = ROOT / "build" / "docs-api"


def _load(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` by path (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_hccatom_tools_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_api_tree() -> Path:
    """(Re)create ``build/docs-api/hccatom`` as symlinks into the repository folders."""
    if API_TREE.exists():
        shutil.rmtree(API_TREE)
    API_TREE.mkdir(parents=True)
    _load("typecheck").build_tree(API_TREE)
    return API_TREE


def on_startup(command: str, dirty: bool) -> None:
    """Build the API tree before any plugin (mkdocstrings) looks at its ``paths``."""
    tree = str(build_api_tree())
    if tree not in sys.path:
        sys.path.insert(0, tree)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand the generated parts of a page."""
    return str(_load("docgen").expand(markdown))
