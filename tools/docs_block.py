"""Print the code block of a docs page that follows ``<!-- example: NAME -->``.

    python tools/docs_block.py docs/quickstart.md write-demo-case | python -

``tools/docs_examples.sh`` runs the pages' Python examples this way, so the code a reader
copies is the code that is run: there is no second copy in the script to drift. A marker
is an HTML comment (mkdocs does not render it) on its own line right before the block.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = re.compile(r"^<!-- example: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)^```$", re.M | re.S)


def blocks(page: str) -> dict[str, str]:
    """Every marked example of a page: marker name -> the code block's text."""
    found: dict[str, str] = {}
    for name, code in MARKER.findall(page):
        if name in found:
            raise ValueError(f"example {name!r} is marked twice")
        found[name] = code
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    page, name = Path(argv[0]), argv[1]
    found = blocks(page.read_text(encoding="utf-8"))
    if name not in found:
        print(f"{page}: no block marked '<!-- example: {name} -->' (marked: {sorted(found)})",
              file=sys.stderr)
        return 1
    sys.stdout.write(found[name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
