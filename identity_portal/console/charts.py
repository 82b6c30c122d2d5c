"""Bar charts drawn on the server as SVG geometry: no chart library, no script, no CDN.

The template draws the rectangles this module computes, so a chart is plain
markup that the strict Content-Security-Policy allows and that prints.
"""

from __future__ import annotations

from dataclasses import dataclass

# The drawing area inside the SVG's viewBox; the axis labels sit outside it.
LEFT, TOP, WIDTH, HEIGHT = 52, 10, 650, 170


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    issued_y: float
    issued_height: float
    refused_y: float
    refused_height: float
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    labels: list[tuple[float, str]]
    gridlines: list[tuple[float, str]]
    issued: int
    refused: int
    view_width: int = LEFT + WIDTH + 8
    view_height: int = TOP + HEIGHT + 28
    left: int = LEFT
    bottom: int = TOP + HEIGHT


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (a readable axis top)."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if factor * step >= value:
                return factor * step
        step *= 10


def bar_chart(buckets: list[tuple[str, str, int, int]], *, label_every: int) -> Chart:
    """Stacked bars (issued below, refused above) for ``(label, title, issued, refused)``.

    ``label` is printed under every ``label_every``-th bar; ``title`` is each
    bar's tooltip (its exact numbers).
    """
    top = _nice_ceiling(max((issued + refused for _, _, issued, refused in buckets), default=0))
    slot = WIDTH / max(len(buckets), 1)
    bottom = TOP + HEIGHT
    bars, labels = [], []
    for index, (label, title, issued, refused) in enumerate(buckets):
        x = LEFT + index * slot
        issued_height = HEIGHT * issued / top
        refused_height = HEIGHT * refused / top
        bars.append(
            Bar(
                x=round(x + slot * 0.1, 2),
                width=round(slot * 0.8, 2),
                issued_y=round(bottom - issued_height, 2),
                issued_height=round(issued_height, 2),
                refused_y=round(bottom - issued_height - refused_height, 2),
                refused_height=round(refused_height, 2),
                title=f"{title}: {issued:,} issued, {refused:,} refused",
            )
        )
        if index % label_every == 0:
            labels.append((round(x + slot / 2, 2), label))
    # A line at half height only where half the top is a whole count (not for 1 or 5):
    # rounded down, it printed a second "0" on an empty chart and "2" at 2.5.
    halves = (1, 2) if top % 2 == 0 else (2,)
    gridlines = [(round(bottom - HEIGHT * part / 2, 2), f"{top * part // 2:,}") for part in halves]
    return Chart(
        bars=bars,
        labels=labels,
        gridlines=gridlines,
        issued=sum(bucket[2] for bucket in buckets),
        refused=sum(bucket[3] for bucket in buckets),
    )
