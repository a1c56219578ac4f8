"""Setup for pytest runs inside this repository: the test suite and the main job."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # pyproject.toml sets "timeout" for pytest-timeout, which only the test
    # extra installs. Without it, register the key so that pytest does not
    # warn about an unknown option when the main job runs in this checkout.
    if not pluginmanager.has_plugin("timeout"):
        parser.addini("timeout", "Per-test time limit in seconds (read by pytest-timeout, not installed here)")
