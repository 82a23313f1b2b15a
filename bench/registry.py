"""Every row group of the bench, in the order they run.

A group is a function ``run(ctx: bench.context.Context) -> list[bench.report.Row]``
named here as ``"module:function"`` and imported only when it runs. To add
rows, write the module and add one `Group` line; the table orders rows by the
bench's item number, whatever order they ran in.

Order matters: cold starts run first, while nothing else of ours is running;
memory runs last, to read the peaks of every process the others kept.
A group whose module does not exist yet (``optional``) shows as a pending row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from bench.report import Row


@dataclass(frozen=True)
class Group:
    number: int
    """The bench item: 1 bytes, 2 latency, 3 cold start, 4 throughput, 5 masks,
    6 memory, 7 peer (whose rows the latency and throughput groups produce)."""
    title: str
    target: str
    optional: bool = False
    pending_note: str = ""

    def load(self) -> Callable:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def available(self) -> bool:
        if not self.optional:
            return True
        try:
            self.load()
        except (ModuleNotFoundError, AttributeError):
            return False
        return True

    def pending_row(self) -> Row:
        return Row(self.number, self.title, status="pending", note=self.pending_note)


GROUPS: tuple[Group, ...] = (
    Group(3, "cold start", "bench.cold_start:run"),
    Group(3, "cold start, thin adapter", "bench.external:thin_cold_start"),
    Group(3, "cold start, LiteRT", "bench.external:litert_cold_start"),
    Group(3, "cold start and p50, segmentation under LiteRT",
          "bench.external:litert_segmentation"),
    Group(1, "request bytes", "bench.request_bytes:run"),
    Group(2, "warm latency (and the peer's, item 7)", "bench.latency:run"),
    Group(2, "protocols against the native API", "bench.protocols:run"),
    Group(2, "a batch of 8 images in one request (and the peer's)", "bench.batch_request:run"),
    Group(2, "warm latency under LiteRT, float and int8", "bench.litert_latency:run"),
    Group(4, "throughput (and the peer's, item 7)", "bench.throughput:run"),
    Group(5, "masks", "bench.masks:run", optional=True,
          pending_note="the segmentation model is not built yet; bench/masks.py will add "
          "its rows (bytes of the mask as int8/uint8/PNG against float JSON, latency)"),
    Group(6, "peak memory", "bench.memory:run"),
)


def modules(value: str) -> set[str]:
    """``"throughput, batch_request"`` -> the module names asked for (``--group``)."""
    return {name.strip().removeprefix("bench.") for name in value.split(",") if name.strip()}


def select(numbers: set[int] | None, names: set[str] | None = None) -> tuple[Group, ...]:
    """The groups to run: all, or those whose item number is asked (7 runs 2 and 4),
    narrowed to the groups of the named bench modules if any are given."""
    groups = GROUPS
    if numbers:
        wanted = set(numbers)
        if 7 in wanted:
            wanted |= {2, 4}
        groups = tuple(g for g in groups if g.number in wanted)
    if names:
        groups = tuple(g for g in groups
                       if g.target.partition(":")[0].removeprefix("bench.") in names)
    return groups
