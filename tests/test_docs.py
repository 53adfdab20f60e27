"""The documents stay true to the tree: every file and test they name exists,
the README stays short, and the bench page stays a results page."""

from __future__ import annotations

import re
import subprocess
import sys
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


def named_tests(text: str) -> list[tuple[str, str, bool]]:
    """(file, test, marked ``[A]``) for every test a document names: as
    ``test_x.py::test_y``, or as ``::test_y`` after one (the same file)."""
    found, file = [], ""
    for m in re.finditer(r"(test_\w+\.py)|::(test_\w+)`?(?: \([^)]*\))?( \[A\])?", text):
        if m.group(1):
            file = m.group(1)  # `test_x.py` alone names the file of the `::` after it
        else:
            found.append((file, m.group(2), m.group(3) is not None))
    return found


@pytest.fixture(scope="module")
def appliance_tests() -> set[str]:
    """``file::test`` of every test pytest itself marks ``appliance`` (by marker,
    module mark or fixture: the suite's own rule, not a guess from the source)."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m",
                        "appliance", "-p", "no:cacheprovider", str(REPO / "tests")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    ids = {line.split("[", 1)[0] for line in r.stdout.splitlines() if "::" in line}
    assert ids, r.stdout[-500:] + r.stderr[-500:]
    return {i.removeprefix("tests/") for i in ids}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_named_test_exists_and_is_marked_as_it_runs(
        doc: Path, appliance_tests: set[str]) -> None:
    """Every test a document names is there, and where the document marks
    appliance tests (``[A]``), the mark agrees with the suite's."""
    text = doc.read_text()
    missing, mismarked = [], []
    uses_marks = "[A]" in text
    for file, name, marked in named_tests(text):
        source = REPO / "tests" / file
        if not source.exists() or not re.search(rf"def {name}\b", source.read_text()):
            missing.append(f"{file}::{name}")
        elif uses_marks and marked != (f"{file}::{name}" in appliance_tests):
            mismarked.append(f"{file}::{name}" + (" is not" if marked else " is") +
                             " an appliance test")
    assert missing == []
    assert mismarked == []


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "bash pool/bootstrap.sh && .venv/bin/guestpool quickstart" in first_block
    assert "bash pool/bootstrap.sh --dev && .venv/bin/python -m pytest" in first_block


def test_the_bench_page_has_no_session_notes_or_machine_paths() -> None:
    text = (REPO / "bench" / "README.md").read_text()
    assert not re.search(r"/tmp/|/root/|~/\.cache/guestpool/corpus|[Ss]ession \d", text)
