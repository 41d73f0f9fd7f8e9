"""The usage page's chart: tokens per day per agent, laid out as SVG coordinates on the server.

Pure arithmetic over :class:`~agentledger.domain.records.DailyUsage` rows; the template draws
the result (text through autoescape), so the page needs no script to show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from agentledger.domain.records import DailyUsage

WIDTH = 720
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
#: Colours told apart with colour-blindness (Okabe-Ito), cycled when there are more agents.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True, slots=True)
class Series:
    """One agent's line: its points (``"x,y x,y ..."``), colour and total."""

    agent_name: str
    points: str
    colour: str
    total: int
    dots: tuple[tuple[float, float, str, int], ...]


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    series: tuple[Series, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    days: tuple[date, ...]
    #: ``rows[i]`` is ``(day, {agent: total_tokens})`` for the table beside the chart.
    rows: tuple[tuple[date, dict[str, int]], ...]


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 at least)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _label(tokens: int) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if tokens >= size:
            return f"{tokens / size:g}{suffix}"
    return str(tokens)


def usage_chart(usage: Sequence[DailyUsage], *, last_day: date, days: int) -> Chart:
    """Lay out total tokens per agent per day for the ``days`` days ending on ``last_day``."""
    span = tuple(last_day - timedelta(days=offset) for offset in range(days - 1, -1, -1))
    index = {day: position for position, day in enumerate(span)}
    agents = sorted({row.agent_name for row in usage})
    totals: dict[str, list[int]] = {agent: [0] * days for agent in agents}
    for row in usage:
        if row.day in index:
            totals[row.agent_name][index[row.day]] += row.usage.total_tokens
    top = _nice_ceiling(max((value for values in totals.values() for value in values), default=1))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(position: int) -> float:
        return LEFT + (plot_w * position / (days - 1) if days > 1 else plot_w / 2)

    def y(tokens: int) -> float:
        return TOP + plot_h * (1 - tokens / top)

    series = []
    for number, agent in enumerate(agents):
        values = totals[agent]
        points = [(round(x(i), 1), round(y(v), 1)) for i, v in enumerate(values)]
        series.append(
            Series(
                agent_name=agent,
                points=" ".join(f"{px},{py}" for px, py in points),
                colour=PALETTE[number % len(PALETTE)],
                total=sum(values),
                dots=tuple(
                    (px, py, span[i].isoformat(), values[i])
                    for i, (px, py) in enumerate(points)
                    if values[i]
                ),
            )
        )
    every = max(1, days // 6)
    x_ticks = tuple(Tick(round(x(i), 1), span[i].strftime("%b %d")) for i in range(0, days, every))
    y_ticks = tuple(Tick(round(y(top * k // 4), 1), _label(top * k // 4)) for k in range(5))
    rows = tuple(
        (day, {agent: totals[agent][i] for agent in agents if totals[agent][i]})
        for i, day in enumerate(span)
        if any(totals[agent][i] for agent in agents)
    )
    return Chart(
        WIDTH,
        HEIGHT,
        tuple(series),
        x_ticks,
        y_ticks,
        LEFT,
        WIDTH - RIGHT,
        TOP,
        HEIGHT - BOTTOM,
        span,
        rows,
    )
