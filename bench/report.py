"""Rows of the bench table, their goals, and the markdown and JSON they become.

A `Row` is one line of the table: a figure, the baseline it is compared with
(measured in the same run), their ratio and, where the project sets one, a goal.
Rows that could not be measured stay in the table with a status and the reason,
so a reader sees what is missing instead of a shorter table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GOAL_OPS = ("<=", "<", ">=", ">")
GOAL_ON = ("ratio", "value")
STATUSES = ("ok", "pending", "skipped", "failed")
UNITS = ("B", "ms", "s", "req/s", "MiB", "")


class ReportError(ValueError):
    """A row or goal that makes no sense (unknown operator, unit or status)."""


@dataclass(frozen=True)
class Goal:
    """``ratio <= 1.05`` or ``value < 1``: what the goal asks of a row."""

    op: str
    limit: float
    on: str = "ratio"

    def __post_init__(self) -> None:
        if self.op not in GOAL_OPS:
            raise ReportError(f"goal op must be one of {GOAL_OPS}, got {self.op!r}")
        if self.on not in GOAL_ON:
            raise ReportError(f"goal must be on one of {GOAL_ON}, got {self.on!r}")
        if not math.isfinite(self.limit):
            raise ReportError(f"goal limit must be finite, got {self.limit!r}")

    def met(self, row: Row) -> bool | None:
        """Whether the row meets it; None when the row has no such figure."""
        subject = row.ratio if self.on == "ratio" else row.value
        if subject is None:
            return None
        return {"<=": subject <= self.limit, "<": subject < self.limit,
                ">=": subject >= self.limit, ">": subject > self.limit}[self.op]

    def describe(self, unit: str = "") -> str:
        symbol = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}[self.op]
        if self.on == "ratio":
            limit = (f"1/{1 / self.limit:,.0f}" if 0 < self.limit < 0.1
                     else f"{self.limit:g}x")
            return f"{symbol} {limit}"
        return f"{symbol} {format_value(self.limit, unit)}"


@dataclass(frozen=True)
class Row:
    group: int
    """The bench item number (1 bytes ... 7 peer); the table is ordered by it."""
    label: str
    value: float | None = None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    goal: Goal | None = None
    status: str = "ok"
    note: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    """Everything behind the figure (per-round values, spread, sample counts): JSON only."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ReportError(f"row status must be one of {STATUSES}, got {self.status!r}")
        if self.unit not in UNITS:
            raise ReportError(f"row unit must be one of {UNITS}, got {self.unit!r}")

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.status != "ok":
            return None
        return self.goal.met(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["goal"] = asdict(self.goal) if self.goal else None
        data["detail"] = dict(self.detail)
        data["met"] = self.met
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        """A row from JSON, as an external bench script writes it; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise ReportError(f"a row must be a JSON object, got {type(data).__name__}")
        try:
            goal = data.get("goal")
            return cls(
                group=int(data["group"]),
                label=str(data["label"]),
                value=_number(data.get("value")),
                unit=str(data.get("unit", "")),
                baseline=_number(data.get("baseline")),
                baseline_label=str(data.get("baseline_label", "")),
                ratio=_number(data.get("ratio")),
                goal=Goal(op=goal["op"], limit=float(goal["limit"]), on=goal.get("on", "ratio"))
                if goal else None,
                status=str(data.get("status", "ok")),
                note=str(data.get("note", "")),
                detail=dict(data.get("detail") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ReportError):
                raise
            raise ReportError(f"malformed row {dict(data)!r:.200}: {exc!r}") from exc


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"expected a number or null, got {value!r}")
    return float(value)


# -- formatting ----------------------------------------------------------------------------


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "req/s":
        return f"{value:.1f} req/s" if value < 100 else f"{value:,.0f} req/s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:g}"


def format_ratio(ratio: float | None) -> str:
    """``1.25x``; ``1.153x`` between 0.8 and 1.2, where the goals are; ``270x``; below
    0.1 as a fraction, ``1/243``, which is how byte savings read."""
    if ratio is None:
        return "—"
    if 0 < ratio < 0.1:
        return f"1/{1 / ratio:,.0f}"
    if ratio >= 10:
        return f"{ratio:,.0f}x"
    if abs(ratio - 1) < 0.2:
        return f"{ratio:.3f}x"  # goals such as 1.01x, 1.15x, 0.9x need the third digit
    return f"{ratio:.2f}x"


def _met_cell(row: Row) -> str:
    met = row.met
    if met is None:
        return "—"
    return "yes" if met else "**no**"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Row]) -> str:
    """The rows as one markdown table, ordered by group, in the order measured within one."""
    lines = ["| # | measure | ours | baseline | ratio | goal | met | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r.group):  # sorted() is stable: keeps run order
        if row.status == "ok":
            ours = format_value(row.value, row.unit)
            base = format_value(row.baseline, row.unit) if row.baseline is not None else ""
            if row.baseline_label:
                base = f"{row.baseline_label}: {base}" if base else row.baseline_label
            ratio = format_ratio(row.ratio)
        else:
            ours, base, ratio = row.status, "", "—"
        goal = row.goal.describe(row.unit) if row.goal else "—"
        cells = [str(row.group), row.label, ours, base or "—", ratio, goal, _met_cell(row),
                 row.note]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def summary_lines(rows: Sequence[Row]) -> list[str]:
    """One line per goal missed, failed row and pending row: what a reader must not miss."""
    out = []
    for row in sorted(rows, key=lambda r: r.group):
        if row.status != "ok":
            out.append(f"{row.status}: {row.group} {row.label}: {row.note}")
        elif row.met is False and row.goal is not None:
            got = (format_ratio(row.ratio) if row.goal.on == "ratio"
                   else format_value(row.value, row.unit))
            out.append(f"goal missed: {row.group} {row.label}: {got} "
                       f"(goal {row.goal.describe(row.unit)})")
    return out


PEER_MARGIN = 0.05
"""How far ahead of the peer the function must be on p50, c=1 throughput and cold start."""


def versus_peer(measure: str, ours: list[float], theirs: list[float], unit: str,
                higher_is_better: bool) -> Row:
    """Ours against the peer's, paired by round, with the goal of a 5 % lead (pure)."""
    from bench.stats import Paired

    rounds = min(len(ours), len(theirs))
    paired = Paired.of(ours[:rounds], theirs[:rounds])
    goal = Goal(">=", 1 + PEER_MARGIN) if higher_is_better else Goal("<=", 1 - PEER_MARGIN)
    return Row(7, f"ours against the peer: {measure}", paired.value, unit, paired.baseline,
               "peer BentoML", paired.ratio, goal,
               detail={"rounds": paired.rounds, "ratio_min": paired.ratio_min,
                       "ratio_max": paired.ratio_max})
