"""Setup shared by the repository's own test suite."""

from __future__ import annotations

import pytest

# The plugin tests drive pytest runs through the pytester fixture.
pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # pyproject.toml sets "timeout" for pytest-timeout, which only the test
    # extra installs. Without it, register the key so that pytest does not
    # warn about an unknown option when the main job runs in this checkout.
    if not pluginmanager.has_plugin("timeout"):
        parser.addini("timeout", "Per-test time limit in seconds (read by pytest-timeout, not installed here)")
