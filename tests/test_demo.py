"""The demo fleet plan."""

from __future__ import annotations

from guestpool._demo import KINDS, plan


def test_demo_plan_covers_every_kind() -> None:
    kinds = [s.kind for s in plan(30)]
    assert set(kinds) == set(KINDS)
    assert kinds[: len(KINDS)] == list(KINDS)
