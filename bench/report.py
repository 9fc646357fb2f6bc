"""Side-by-side tables: a figure, its baseline, and the ratio between them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Table", "fmt", "show"]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[float | None], str, str]] = field(default_factory=list)
    #: the column each row's first value is compared with (the baseline)
    baseline: int = 1

    def row(
        self,
        label: str,
        *values: float | None,
        goal: str = "",
        lower_is_better: bool = False,
        ratio: bool = True,
    ) -> None:
        text = ""
        a = values[0] if values else None
        b = values[self.baseline] if len(values) > self.baseline else None
        if ratio and a and b:
            r = (b / a) if lower_is_better else (a / b)
            word = "smaller" if lower_is_better else "faster" if r >= 1 else "slower"
            text = f"{r:.1f}x {word}"
        self.rows.append((label, list(values), text, goal))

    def render(self) -> str:
        ratio_head = (
            f"ratio vs {self.columns[self.baseline]}" if len(self.columns) > self.baseline else ""
        )
        head = ["", *self.columns, ratio_head, "goal"]
        body = [
            [label, *(fmt(v) for v in vals), text, goal] for label, vals, text, goal in self.rows
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        out = [f"== {self.title}", line(head), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in body]
        return "\n".join(out)


def show(tables: Iterable[Table]) -> int:
    """Print each table as soon as it is measured; a bench's ``main`` returns this."""
    for t in tables:
        print(t.render(), flush=True)
    return 0
