"""The documents stay true to the tree: every file and test they name exists,
the README stays short, and the bench page stays a results page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted(p for p in REPO.rglob("*.md")
              if not {".venv", ".git", "node_modules", ".pytest_cache"} & set(p.parts))


def test_the_documents_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in DOCS}
    assert {"README.md", "pool/README.md", "inspectors/README.md", "pool/SECURITY.md",
            "bench/README.md", "pool/nats/README.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    text = doc.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not (doc.parent / path).exists():
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_named_test_exists(doc: Path) -> None:
    """``tests/test_x.py::test_y`` or ``test_x.py::test_y``: the function is there."""
    missing = []
    for file, name in re.findall(r"(test_\w+\.py)::(test_\w+)", doc.read_text()):
        source = REPO / "tests" / file
        if not source.exists() or not re.search(rf"def {name}\b", source.read_text()):
            missing.append(f"{file}::{name}")
    assert missing == []


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "bash pool/bootstrap.sh && .venv/bin/guestpool quickstart" in first_block
    assert "bash pool/bootstrap.sh --dev && .venv/bin/python -m pytest" in first_block


def test_the_bench_page_has_no_session_notes_or_machine_paths() -> None:
    text = (REPO / "bench" / "README.md").read_text()
    assert not re.search(r"/tmp/|/root/|~/\.cache/guestpool/corpus|[Ss]ession \d", text)
