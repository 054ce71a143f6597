"""The head revision, read from migration files without importing alembic (what every start
checks the schema against). ``tests/integration/test_schema.py`` holds it equal to alembic's
answer on the real files; these hold the reading to alembic's on the shapes a file can take."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.db.migrations import head_of
from ingest.errors import SchemaError

_GENERATED = '''"""add a thing

Revision ID: {rev}
Revises: {down_text}
revision = "not this one: inside the docstring, not an assignment"
"""

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "{rev}"
down_revision: str | None = {down}
branch_labels = None


def upgrade() -> None:
    revision = "nor this one: indented, a local"
    op.execute(revision)
'''


def _write(directory: Path, name: str, rev: str, down: str | None) -> None:
    text = _GENERATED.format(rev=rev, down=repr(down), down_text=down or "")
    (directory / name).write_text(text, encoding="utf-8")


def test_the_head_is_the_revision_no_other_revises(tmp_path: Path) -> None:
    _write(tmp_path, "0002_b.py", "bbb", "aaa")
    _write(tmp_path, "0001_a.py", "aaa", None)
    (tmp_path / "0003_c.py").write_text(
        "revision = 'ccc'  # unannotated, single quotes, a comment\ndown_revision='bbb'\n",
        encoding="utf-8",
    )
    (tmp_path / "notes.txt").write_text("revision = 'zzz'\n", encoding="utf-8")
    assert head_of(tmp_path) == "ccc"


def test_two_heads_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.py", "aaa", None)
    _write(tmp_path, "0002_b.py", "bbb", "aaa")
    _write(tmp_path, "0002_c.py", "ccc", "aaa")
    with pytest.raises(SchemaError, match=r"2 heads \(\['bbb', 'ccc'\]\)"):
        head_of(tmp_path)


def test_a_docstring_line_does_not_count_as_the_revision(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.py", "aaa", None)
    assert head_of(tmp_path) == "aaa"


def test_a_prose_line_in_a_docstring_is_not_read_as_an_assignment(tmp_path: Path) -> None:
    (tmp_path / "0001_a.py").write_text(
        '"""Notes.\n\nrevision = the id alembic gives this file\n"""\n\nrevision = "aaa"\n'
        "down_revision = None\n",
        encoding="utf-8",
    )
    assert head_of(tmp_path) == "aaa"


def test_a_merge_revises_each_of_its_parents(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.py", "aaa", None)
    _write(tmp_path, "0002_b.py", "bbb", "aaa")
    _write(tmp_path, "0002_c.py", "ccc", "aaa")
    (tmp_path / "0003_m.py").write_text(
        'revision = "mmm"\ndown_revision = (\n    "bbb",\n    "ccc",\n)\n', encoding="utf-8"
    )
    assert head_of(tmp_path) == "mmm"
    (tmp_path / "0004_n.py").write_text(
        'revision = "nnn"\ndown_revision = ("mmm",)  # on one line\n', encoding="utf-8"
    )
    assert head_of(tmp_path) == "nnn"
