"""The README's layout section names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Layout") :]
    start = section.index("```") + 3
    return section[start : section.index("```", start)].splitlines()


def test_the_readme_layout_matches_the_package() -> None:
    named: set[str] = set()
    package = ""  # the sub-package the lines below belong to ("feed/", "db/", ...)
    for line in _layout_lines():
        indent = len(line) - len(line.lstrip())
        if indent not in (2, 4):
            continue  # the top level: not the package
        names = re.split(r"\s{2,}", line.strip())[0]
        if indent == 2:
            package = names if names.endswith("/") else ""
        for name in names.split(", "):
            if name.endswith(".py"):
                named.add((package if indent == 4 else "") + name)
    modules = {
        str(p.relative_to(ROOT / "ingest"))
        for p in (ROOT / "ingest").glob("**/*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert named == modules
