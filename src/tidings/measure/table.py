"""The comparison table of the four techniques, with the numbers a bench run measured.

It follows the usual comparison of the techniques (what each is, which way data flows, when
to choose it) and puts measured numbers where such tables put words like "low" or "high".
Printed as Markdown, so it pastes into a README as it is.
"""

from __future__ import annotations

from tidings.measure.run import BenchPlan, Measured

__all__ = ["render"]

DIRECTION = {
    "websocket": "both ways",
    "sse": "server to client",
    "long_poll": "client asks, server holds",
    "poll": "client asks, server answers",
}
CHOOSE_WHEN = {
    "websocket": "the client pushes too",
    "sse": "a one-way stream",
    "long_poll": "dead simple, maximally compatible",
    "poll": "occasional, non-urgent",
}
HEADERS = (
    "technique",
    "direction",
    "latency p50",
    "latency p99",
    "HTTP requests/event",
    "bytes down/event",
    "bytes up/event",
    "server CPU/event",
    "memory/connection",
    "received",
    "choose when",
)


def render(plan: BenchPlan, results: list[Measured], pids: tuple[int, ...] | None) -> str:
    """The settings line, the table, and what its columns mean."""
    server = f"server PIDs {', '.join(map(str, pids))}" if pids else "a remote server"
    lines = [
        f"{plan.rate:g} events/s for {plan.seconds:g} s per technique, {plan.subscribers} "
        f"subscribers each, short polls every {plan.poll_interval:g} s; {server}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(_row(result)) + " |" for result in results]
    lines += ["", *_notes(plan, results)]
    return "\n".join(lines)


def _row(result: Measured) -> list[str]:
    return [
        result.technique,
        DIRECTION[result.technique],
        _seconds(result.latency_p50),
        _seconds(result.latency_p99),
        _number(result.requests_per_event, 2),
        _number(result.bytes_down_per_event, 0),
        _number(result.bytes_up_per_event, 0),
        _seconds(result.cpu_per_event),
        _kilobytes(result.memory_per_connection),
        f"{result.delivered}/{result.expected}",
        CHOOSE_WHEN[result.technique],
    ]


def _notes(plan: BenchPlan, results: list[Measured]) -> list[str]:
    notes = [
        "Per event means per event delivered to one subscriber. Bytes are counted on the "
        "subscribers' sockets (headers, framing, heartbeats); CPU and memory are the "
        "server's, read from /proc (-: not measured, the server is not on this machine)."
    ]
    for result in results:
        achieved = result.published / result.publish_seconds if result.publish_seconds else 0
        if achieved < 0.95 * plan.rate:
            notes.append(
                f"{result.technique}: published at {achieved:.1f} events/s, below the "
                f"{plan.rate:g} asked (the publish requests took longer than the schedule)."
            )
    return notes


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _kilobytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} KB"
