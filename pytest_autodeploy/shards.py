"""Split tests across N CI shards with balanced GPU-seconds.

Every CI job runs the same collection and calls ``split_shards`` with the same
items, so the split must come out identical in every process. It depends only
on the keys and numbers given, never on hash seeds or set order.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Sequence

SHARD_OPTION = "--autodeploy-shard"

# More shards than this is a typo, not a CI setup, and a huge N would cost
# memory per shard. GitHub Actions, for comparison, allows 256 jobs per matrix.
MAX_SHARDS = 10_000

_SHARD_SPEC = re.compile(r"(\d+)/(\d+)", re.ASCII)


class ShardSpecError(ValueError):
    """An invalid ``K/N`` shard value; the message names the option and the value."""


def parse_shard_spec(text: str, option: str = SHARD_OPTION) -> tuple[int, int]:
    """Parse ``K/N`` (run shard K of N, counting from 1) into ``(k, n)``.

    ``option`` names the setting in error messages, for example the ini name.
    Raises ShardSpecError unless K and N are whole numbers with
    1 <= K <= N <= MAX_SHARDS.
    """
    match = _SHARD_SPEC.fullmatch(text.strip())
    if match is None:
        raise ShardSpecError(f"invalid {option} value '{text}': expected K/N with whole numbers K and N, e.g. 1/4")

    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise ShardSpecError(f"invalid {option} value '{text}': N must be at least 1, e.g. 1/4")
    if n > MAX_SHARDS:
        raise ShardSpecError(f"invalid {option} value '{text}': N must be at most {MAX_SHARDS}, e.g. 1/4")
    if not 1 <= k <= n:
        raise ShardSpecError(f"invalid {option} value '{text}': K must be between 1 and N, e.g. 1/4")

    return k, n


def split_shards(items: Sequence[tuple[str, float]], n: int) -> list[list[str]]:
    """Split ``(key, gpu_seconds)`` items into ``n`` shards and return each shard's keys.

    The split is LPT (longest processing time first): items sorted by
    GPU-seconds descending, ties by key, each go to the shard with the least
    total so far. Ties between shards go to the one with fewer items, then to
    the lowest index. The item count matters only when totals are equal, as
    with zero-second items, and it makes every shard non-empty whenever there
    are at least ``n`` items. Each shard lists its keys in input order, so the
    collection order is preserved.

    A key given more than once is placed once, with the GPU-seconds of its
    first occurrence, as pytest's --keep-duplicates can repeat a test id.
    Raises ValueError for ``n < 1`` or GPU-seconds that are negative or not
    finite.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"invalid shard count: expected a positive integer, got {n!r}")

    for key, gpu_seconds in items:
        if isinstance(gpu_seconds, bool) or not math.isfinite(gpu_seconds) or gpu_seconds < 0:
            raise ValueError(f"invalid GPU-seconds for '{key}': expected a finite number >= 0, got {gpu_seconds!r}")

    first_index: dict[str, int] = {}
    for index, (key, _) in enumerate(items):
        first_index.setdefault(key, index)
    unique = list(first_index.values())
    longest_first = sorted(unique, key=lambda index: (-items[index][1], items[index][0]))

    # Heap entries: (total GPU-seconds, item count, shard index). The first
    # pops always take an empty shard, lowest index first, so shards beyond
    # the item count stay empty and need no heap entry.
    heap = [(0.0, 0, shard) for shard in range(min(n, len(unique)))]
    members: list[list[int]] = [[] for _ in range(n)]
    for index in longest_first:
        total, count, shard = heapq.heappop(heap)
        members[shard].append(index)
        heapq.heappush(heap, (total + items[index][1], count + 1, shard))

    return [[items[index][0] for index in sorted(indices)] for indices in members]
