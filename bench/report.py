"""Side-by-side tables: a figure, its baseline, and the ratio between them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Table", "fmt"]


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

    def row(
        self, label: str, *values: float | None, goal: str = "", lower_is_better: bool = False
    ) -> None:
        ratio = ""
        a, b = (values + (None, None))[:2]
        if a and b:
            r = (b / a) if lower_is_better else (a / b)
            ratio = f"{r:.1f}x {'smaller' if lower_is_better else 'faster' if r >= 1 else 'slower'}"
        self.rows.append((label, list(values), ratio, goal))

    def render(self) -> str:
        head = ["", *self.columns, "ratio", "goal"]
        body = [
            [label, *(fmt(v) for v in vals), ratio, goal] for label, vals, ratio, goal in self.rows
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        line = lambda r: "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )  # noqa: E731
        out = [f"== {self.title}", line(head), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in body]
        return "\n".join(out)
