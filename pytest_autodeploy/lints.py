"""Best-practice warnings for a loaded registry, which do not fail a run on their own."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .diagnostics import Diagnostic

if TYPE_CHECKING:
    from .registry import Registry

BASELINE_CONFIG = "dashboard_default.yaml"
_WORLD_SIZE_FILE = re.compile(r"^world_size_(\d+)\.ya?ml$")

# A parameter count in a model name: "8B", "0.5B", "1_1B", "270M", "8x7B".
# A count that follows a letter is skipped, because "A22B" (active experts)
# and "E2B" (effective size) do not give the total size.
_PARAMS = re.compile(r"(?<![A-Za-z0-9.])(?:(\d+)x)?(\d+(?:[._]\d+)?)([BbMm])(?![A-Za-z0-9])")
_EXPERT_COUNT = re.compile(r"-\d+E(?![A-Za-z0-9])")


def parameter_count_billions(name: str) -> float | None:
    """Return the parameter count (in billions) written in a model name, if any."""
    model = name.rsplit("/", 1)[-1]
    match = _PARAMS.search(model)
    if match is None:
        return None
    # "17B-16E" names the active parameters of a mixture of experts, not its size.
    if _EXPERT_COUNT.match(model, match.end()):
        return None

    experts, size, unit = match.groups()
    billions = float(size.replace("_", "."))
    if unit in "Mm":
        billions /= 1000
    if experts:
        billions *= int(experts)
    return billions


def guideline_world_sizes(billions: float) -> tuple[int, ...]:
    """Return the world sizes that the size guideline allows for a parameter count.

    The guideline: under 2B -> 1, 2-15B -> 2, 20-80B -> 4, over 80B -> 8. Sizes
    between the bands (15-20B) and exactly 80B may use either neighbour.
    """
    if billions < 2:
        return (1,)
    if billions <= 15:
        return (2,)
    if billions < 20:
        return (2, 4)
    if billions < 80:
        return (4,)
    if billions == 80:
        return (4, 8)
    return (8,)


def lint_registry(registry: Registry) -> list[Diagnostic]:
    """Return warnings for the registry's best-practice rules."""
    warnings: list[Diagnostic] = []

    def warn(message: str, line: int | None, entry: str | None = None, path=None) -> None:
        warnings.append(
            Diagnostic(message, path=path or registry.models_path, line=line, severity="warning", entry=entry)
        )

    try:
        has_baseline = (registry.configs_dir / BASELINE_CONFIG).is_file()
    except OSError:
        has_baseline = False  # the loader reports a configs folder it cannot read

    for model in registry.models:
        entry = model.entry
        if has_baseline and (not entry.yaml_extra or entry.yaml_extra[0] != BASELINE_CONFIG):
            warn(f"{model.test_id}: {BASELINE_CONFIG} is not first in yaml_extra; list it first so it sets the baseline", entry.line, model.test_id)

        sizes_named = [int(m.group(1)) for m in map(_WORLD_SIZE_FILE.match, entry.yaml_extra) if m]
        if not sizes_named:
            warn(f"{model.test_id}: no world_size_N.yaml in yaml_extra; add the one for its GPU count", entry.line, model.test_id)
        elif model.world_size is not None:
            for named in sizes_named:
                if named != model.world_size:
                    warn(
                        f"{model.test_id}: lists world_size_{named}.yaml but its effective world size "
                        f"is {model.world_size} (from {model.world_size_source}); list world_size_{model.world_size}.yaml instead",
                        entry.line,
                        model.test_id,
                    )

        billions = parameter_count_billions(entry.name)
        if billions is not None and model.world_size is not None:
            allowed = guideline_world_sizes(billions)
            if model.world_size not in allowed:
                shown = " or ".join(str(size) for size in allowed)
                warn(
                    f"{model.test_id}: world size {model.world_size} does not follow the size guideline "
                    f"for about {billions:g}B parameters (expected {shown})",
                    entry.line,
                    model.test_id,
                )

    warnings.extend(_unused_config_warnings(registry))
    return warnings


def _unused_config_warnings(registry: Registry) -> list[Diagnostic]:
    """Return a warning for each file under ``configs/`` that no entry lists."""
    # Without the entries of models.yaml, every file would look unused.
    if registry.config_names is None:
        return []

    # Compare normalised and real paths, so "sub/../a.yaml" and a symlink
    # to a.yaml both count as uses of a.yaml.
    used: set[Path] = set()
    for name in registry.config_names:
        path = registry.configs_dir / os.path.normpath(name)
        used.add(path)
        used.add(_real_path(path))

    warnings = []
    for path in registry.config_files():
        if path not in used and _real_path(path) not in used:
            # Line 1 keeps the FILE:LINE form that editors and CI annotations parse.
            warnings.append(
                Diagnostic(
                    "config file is not used by any entry; use it or delete it",
                    path=path,
                    line=1,
                    severity="warning",
                )
            )
    return warnings


def _real_path(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path
