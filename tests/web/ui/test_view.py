"""The transcript browser's pure parts: cut texts, tool pairing, metadata filters, the chart's
layout. No database."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from agentledger.domain.records import DailyUsage, MessageRecord, Usage
from agentledger.web.ui.chart import HEIGHT, usage_chart
from agentledger.web.ui.view import (
    PREVIEW_CHARS,
    ShownCheckpoint,
    checkpoints_after,
    paired,
    parse_metadata_filter,
    shown_text,
)

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def record(seq: int, role: str, content: str = "", **chat: object) -> MessageRecord:
    return MessageRecord(
        seq=seq,
        role=role,
        content=content,
        tool_calls=chat.get("tool_calls"),  # type: ignore[arg-type]
        tool_call_id=chat.get("tool_call_id"),  # type: ignore[arg-type]
        created_at=WHEN,
        id=uuid.uuid4(),
    )


def call(call_id: str, name: str = "ls") -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": {"a": 1}}}


def test_a_long_text_is_cut_and_controls_shown_as_escapes() -> None:
    text = shown_text("\x1b[31m" + "x" * (PREVIEW_CHARS + 10))
    assert text.truncated
    assert (text.length, text.kept) == (PREVIEW_CHARS + 15, PREVIEW_CHARS)
    assert text.shown.startswith("\\e[31mxx")
    short = shown_text("line one\nline\ttwo")
    assert (short.shown, short.truncated) == ("line one\nline\ttwo", False)


def test_outputs_go_under_their_calls_and_orphans_stay_alone() -> None:
    messages = paired(
        [
            record(1, "tool", "early output", tool_call_id="c0"),  # its call is on another page
            record(2, "assistant", tool_calls=[call("c1"), call("c2", "cat")]),
            record(3, "tool", "out one", tool_call_id="c1"),
            record(4, "assistant", "between"),
            record(5, "tool", "out two", tool_call_id="c2"),
            record(6, "tool", "nobody asked", tool_call_id="c9"),
        ]
    )
    assert [m.seq for m in messages] == [1, 2, 4, 6]
    calls = messages[1].calls
    assert [(c.name, c.arguments.shown) for c in calls] == [("ls", '{"a":1}'), ("cat", '{"a":1}')]
    assert [c.output.seq if c.output else None for c in calls] == [3, 5]


def test_a_checkpoint_follows_the_message_holding_its_last_seq() -> None:
    messages = paired(
        [
            record(1, "assistant", tool_calls=[call("c1")]),
            record(2, "user", "meanwhile"),
            record(3, "tool", "out", tool_call_id="c1"),
            record(4, "user", "after"),
        ]
    )
    summary = ShownCheckpoint(3, "m", "t", shown_text("s"), 0)
    early = ShownCheckpoint(2, "m", "t", shown_text("s"), 0)
    elsewhere = ShownCheckpoint(9, "m", "t", shown_text("s"), 0)
    placed = checkpoints_after([summary, early, elsewhere], messages)
    assert placed == {1: [summary], 2: [early]}


def test_metadata_filters_read_json_scalars_and_text() -> None:
    wanted = parse_metadata_filter(["a=1", "b=true", "c=1.5", "d=hello", "e=", "junk", "=x"])
    assert wanted == {"a": 1, "b": True, "c": 1.5, "d": "hello", "e": ""}
    assert parse_metadata_filter(["n=nan", "i=inf"]) == {"n": "nan", "i": "inf"}


def test_the_chart_scales_to_the_largest_day_and_fills_missing_days_with_zero() -> None:
    rows = [
        DailyUsage(date(2026, 1, 1), "Coder", Usage(1, 0, 0, 1500)),
        DailyUsage(date(2026, 1, 3), "Coder", Usage(1, 0, 0, 300)),
        DailyUsage(date(2026, 1, 3), "Planner", Usage(1, 0, 0, 40)),
        DailyUsage(date(2025, 12, 1), "Planner", Usage(1, 0, 0, 99_999)),  # outside the span
    ]
    chart = usage_chart(rows, last_day=date(2026, 1, 3), days=3)
    assert [s.agent_name for s in chart.series] == ["Coder", "Planner"]
    assert [s.total for s in chart.series] == [1800, 40]
    assert chart.y_ticks[-1].label == "2k"  # 1,500 rounds up to 2,000
    coder = [point.split(",") for point in chart.series[0].points.split()]
    assert len(coder) == 3
    assert float(coder[1][1]) == chart.plot_bottom  # the missing day is zero
    assert chart.plot_top <= float(coder[0][1]) < chart.plot_bottom < HEIGHT
    assert [day for day, _ in chart.rows] == [date(2026, 1, 1), date(2026, 1, 3)]
    empty = usage_chart([], last_day=date(2026, 1, 3), days=7)
    assert empty.series == ()
    assert len(empty.days) == 7
