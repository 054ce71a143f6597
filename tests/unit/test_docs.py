"""The contract the code cites is in the repository: every ``docs/*.md`` page cited in the code,
the migrations and the tests exists, and nothing cites a specification outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITING = ("ingest", "migrations", "tests", "bench")
DOC = re.compile(r"\bdocs/[\w./-]*?\.md\b")
# the word in capitals, as the old citations of a document outside the repository wrote it
# (followed by "section 3"); spelt in two parts so that this file does not match itself
OUTSIDE = re.compile(r"\b" + "SP" + r"EC\b")


def _sources() -> list[Path]:
    return sorted(
        path
        for top in CITING
        for path in (ROOT / top).rglob("*")
        if path.suffix in (".py", ".md", ".sql", ".txt") and "__pycache__" not in path.parts
    )


def _citations() -> dict[str, list[str]]:
    cited: dict[str, list[str]] = {}
    for path in _sources():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page in DOC.findall(line):
                cited.setdefault(page, []).append(f"{path.relative_to(ROOT)}:{number}")
    return cited


def test_every_cited_page_exists() -> None:
    cited = _citations()
    assert cited, "no docs/ citation found: the pattern or the search is wrong"
    missing = {page: where for page, where in cited.items() if not (ROOT / page).is_file()}
    assert not missing


def test_no_citation_of_a_specification_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found


def test_the_pages_link_to_pages_that_exist() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([\w.-]+\.md)(?:#[\w-]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to {target}"
