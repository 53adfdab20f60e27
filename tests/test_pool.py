"""Pool arguments (no appliance)."""

from __future__ import annotations

import pytest

from guestpool import Pool, SetupError, default_pool_size


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(SetupError):
        Pool(0)
    with pytest.raises(SetupError):
        Pool(1, strategy="warm")  # type: ignore[arg-type]
    assert 1 <= default_pool_size() <= 12
