"""Inspector resolution and option checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from guestpool import InspectorError
from guestpool.inspectors import Inspector, resolve


def test_inspector_options_are_validated() -> None:
    class Opt(Inspector):
        name = "opt"
        version = "1"

        @dataclass
        class Options:
            limit: int = 3

    assert Opt.make_options({"limit": 5}).limit == 5
    assert Opt.make_options(None).limit == 3
    with pytest.raises(InspectorError, match="unknown option"):
        Opt.make_options({"nope": 1})
    with pytest.raises(InspectorError, match="must be int"):
        Opt.make_options({"limit": "many"})


def test_inspector_resolution_errors_name_the_plugin() -> None:
    assert resolve("os").name == "os"
    with pytest.raises(InspectorError, match="unknown inspector 'nope'"):
        resolve("nope")
    with pytest.raises(InspectorError, match="cannot load inspector 'no_such_module:X'"):
        resolve("no_such_module:X")
