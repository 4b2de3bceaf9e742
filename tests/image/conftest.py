"""The image test runs when asked for: `-m image`, or ITEMFLOW_TEST_IMAGE=1 (as .ci/run sets)."""

from __future__ import annotations

import os

import pytest


def _wanted(config: pytest.Config) -> bool:
    if os.environ.get("ITEMFLOW_TEST_IMAGE") == "1":
        return True
    expr = config.getoption("markexpr") or ""
    return "image" in expr and "not image" not in expr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _wanted(config):
        return
    skip = pytest.mark.skip(reason="builds and runs the container image (root, minutes): "
                                   "ITEMFLOW_TEST_IMAGE=1 or -m image")
    for item in items:
        if item.get_closest_marker("image"):
            item.add_marker(skip)
