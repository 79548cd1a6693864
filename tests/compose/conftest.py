"""The real ``docker compose up`` runs only when asked for: ``pytest -m compose``.

It builds images and starts eleven containers (minutes on 2 cores), so a plain ``pytest``
or ``make test`` leaves it out and ``.ci/run`` calls it on its own.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "compose" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the real compose stack runs with `pytest -m compose`")
    for item in items:
        if item.get_closest_marker("compose"):
            item.add_marker(skip)
