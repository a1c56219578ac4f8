"""End-of-run results per world size, built from test reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
# A user property that marks a model skipped or failed because the node has too few GPUs.
TOO_FEW_GPUS = "autodeploy_too_few_gpus"


@dataclass
class ModelResult:
    nodeid: str
    model: str
    world_size: int | None
    outcome: str
    reason: str = ""
    duration: float = 0.0
    too_few_gpus: bool = False


def _properties(report: pytest.TestReport) -> dict[str, Any]:
    return dict(report.user_properties)


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    return report.outcome


@dataclass
class ResultTable:
    """The last known outcome of every model test in this session."""

    results: dict[str, ModelResult] = field(default_factory=dict)

    def record(self, report: pytest.TestReport, fallback_properties: Any = None) -> None:
        """Record a report; ``fallback_properties`` stand in when the report has none."""
        properties = _properties(report) or dict(fallback_properties or [])
        if "model" not in properties:
            return

        outcome = _outcome(report)
        # The call phase decides; setup only when it did not pass, teardown
        # only when it failed.
        if report.when == "setup" and outcome == "passed":
            return
        if report.when == "teardown" and outcome != "failed":
            return

        # A failure outside the test itself (a fixture, a teardown) is an
        # error, as pytest's own summary counts it.
        if outcome == "failed" and report.when in ("setup", "teardown"):
            outcome = "error"

        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif outcome in ("failed", "error"):
            reason = report.longreprtext.strip().splitlines()[0] if report.longreprtext.strip() else ""
        self.results[report.nodeid] = ModelResult(
            nodeid=report.nodeid,
            model=properties["model"],
            world_size=properties.get("world_size"),
            outcome=outcome,
            reason=reason,
            duration=report.duration if report.when == "call" else 0.0,
            too_few_gpus=bool(properties.get(TOO_FEW_GPUS)),
        )

    def lines(self) -> list[str]:
        """Return the summary table, then the models that never ran for lack of GPUs."""
        counts: dict[Any, Counter] = {}
        for result in self.results.values():
            counts.setdefault(result.world_size, Counter())[result.outcome] += 1

        header = f"{'world size':>10}  {'models':>6}" + "".join(f"  {name:>7}" for name in OUTCOMES)
        lines = [header]
        total: Counter = Counter()
        for world_size in sorted(counts, key=lambda size: (size is None, size or 0)):
            row = counts[world_size]
            total.update(row)
            label = "?" if world_size is None else str(world_size)
            lines.append(f"{label:>10}  {sum(row.values()):>6}" + "".join(f"  {row[name]:>7}" for name in OUTCOMES))
        lines.append(f"{'total':>10}  {sum(total.values()):>6}" + "".join(f"  {total[name]:>7}" for name in OUTCOMES))

        too_big = [result for result in self.results.values() if result.too_few_gpus]
        if too_big:
            lines.append("")
            noun = "model" if len(too_big) == 1 else "models"
            lines.append(f"not run, too few GPUs on this node ({len(too_big)} {noun}; never counted as passed):")
            lines.extend(f"  {result.nodeid}: {_without_model(result)}" for result in too_big)
        return lines


def _without_model(result: ModelResult) -> str:
    """Return the reason without a leading "org/model: ", which the node id already shows."""
    prefix, separator, rest = result.reason.partition(": ")
    if separator and result.nodeid.endswith((prefix, f"[{prefix}]")):
        return rest
    return result.reason
