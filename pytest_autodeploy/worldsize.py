"""The effective world size (GPU count) of a merged config."""

from __future__ import annotations

from dataclasses import dataclass

from .diagnostics import Diagnostic
from .merge import MergedConfig, Origin

WORLD_SIZE_KEY = "world_size"
PARALLEL_KEYS = ("tensor_parallel_size", "pipeline_parallel_size")
# Far beyond any deployment today; it keeps GPU-second sums for sharding finite.
MAX_WORLD_SIZE = 65536


@dataclass(frozen=True)
class WorldSize:
    """The GPU count of a model and the keys it was derived from."""

    value: int
    # A short account of where the number came from, for `explain` and errors.
    source: str


class WorldSizeError(Exception):
    """Raised with every problem in the world-size keys of one merged config."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(diagnostic.format() for diagnostic in diagnostics))


def _located(message: str, origin: Origin | None) -> Diagnostic:
    if origin is None:
        return Diagnostic(message)
    return Diagnostic(message, path=origin.path, line=origin.line)


def _check_positive_int(key: str, merged: MergedConfig, problems: list[Diagnostic]) -> int | None:
    if key not in merged.data:
        return None

    value = merged.data[key]
    origin = merged.origin((key,))
    # bool is a subclass of int, so `true` must be rejected explicitly.
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(
            _located(
                f"{key} must be a positive integer, got {value!r} "
                f"({type(value).__name__}); write a number such as {key}: 4",
                origin,
            )
        )
        return None
    if value < 1:
        problems.append(
            _located(f"{key} must be a positive integer, got {value}; use 1 or more", origin)
        )
        return None
    if value > MAX_WORLD_SIZE:
        problems.append(
            _located(f"{key} is {value}, more than {MAX_WORLD_SIZE} GPUs; give the real GPU count", origin)
        )
        return None
    return value


def effective_world_size(merged: MergedConfig) -> WorldSize:
    """Return ``world_size`` if set, else tensor x pipeline parallel size, else 1.

    Raises :class:`WorldSizeError` for a value that is not a positive integer,
    or when ``world_size`` and tp x pp are both set and disagree.
    """
    problems: list[Diagnostic] = []
    world_size = _check_positive_int(WORLD_SIZE_KEY, merged, problems)
    tensor = _check_positive_int(PARALLEL_KEYS[0], merged, problems)
    pipeline = _check_positive_int(PARALLEL_KEYS[1], merged, problems)
    if problems:
        raise WorldSizeError(problems)

    parallel_set = tensor is not None or pipeline is not None
    parallel_product = (tensor or 1) * (pipeline or 1)

    if world_size is not None and parallel_set and world_size != parallel_product:
        world_origin = merged.origin((WORLD_SIZE_KEY,))
        parts = []
        for key, value in zip(PARALLEL_KEYS, (tensor, pipeline)):
            if value is not None:
                origin = merged.origin((key,))
                parts.append(f"{key}={value} ({origin.format() if origin else 'unknown'})")
        raise WorldSizeError(
            [
                _located(
                    f"world_size={world_size} ({world_origin.format() if world_origin else 'unknown'}) "
                    f"disagrees with {' x '.join(parts)} = {parallel_product}; "
                    "make them agree or remove one of them",
                    world_origin,
                )
            ]
        )

    if world_size is not None:
        return WorldSize(world_size, WORLD_SIZE_KEY)
    if parallel_set:
        return WorldSize(parallel_product, "tensor_parallel_size x pipeline_parallel_size")
    return WorldSize(1, "default (no world_size or tensor_parallel_size set)")
