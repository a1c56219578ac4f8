"""Marker names of registry models, shared by the plugin and the CI matrix."""

from __future__ import annotations

import functools
import re

AUTODEPLOY_MARKER = "autodeploy"


def world_size_marker(world_size: int) -> str:
    return f"world_size_{world_size}"


@functools.lru_cache(maxsize=None)
def config_marker(file_name: str) -> str:
    """Return the marker name for a config file: ``multimodal.yaml`` -> ``config_multimodal``."""
    stem = re.sub(r"\.ya?ml$", "", file_name)
    return "config_" + re.sub(r"\W+", "_", stem).strip("_")
