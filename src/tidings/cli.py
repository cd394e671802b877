"""``tidings serve | publish | subscribe | bench``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from tidings.client.ladder import AUTO, TRANSPORTS
from tidings.client.publish import DEFAULT_URL, publish
from tidings.config import LOG_FORMATS, describe, load_settings
from tidings.exceptions import ClientError, ConfigError, ServerRejected
from tidings.server.uvloop.loop import install_loop

SUBSCRIBE_EPILOG = """\
Each event is printed on stdout as one JSON line (channel, id, event, data, ts); messages go
to stderr. A dropped connection is resumed from the last event printed, so nothing is missed
or printed twice. Exit status: 0 on Ctrl-C, after --count events or when stdout closes; 1 when
the server refuses or cannot be reached; 3 on a reset (the events after the cursor are gone:
the message names the channel and its new cursor). On every end the command that continues
from the last event is printed, with --since once per channel."""
BENCH_EPILOG = """\
The techniques are measured one after another, each with the same load: --subscribers
clients, each its own connection, and --rate events a second for --seconds (so the whole run
takes a little more than four times --seconds). For a server on this machine, its CPU time
and memory are read from /proc; its process is found by its listening port, or give --pid."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings", description="Real-time delivery server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000; 0: any free)")
    serve.add_argument("--broker", help="memory:// (default), redis://..., nats://...")
    serve.add_argument(
        "--workers",
        help='processes serving the port (default 1; "auto": one per CPU); more than one '
        "shares channels through a redis:// or nats:// broker",
    )
    serve.add_argument("--config", help="a tidings.toml file")
    serve.add_argument("--heartbeat-seconds", type=float, dest="heartbeat_seconds")
    serve.add_argument("--max-poll-seconds", type=float, dest="max_poll_seconds")
    serve.add_argument(
        "--no-lab",
        action="store_false",
        dest="lab",
        default=None,
        help="do not serve the transport lab page at /lab",
    )
    serve.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning"],
        help="info adds a line per SSE stream and WebSocket opened and closed (default "
        "warning, with the start-up and shutdown lines)",
    )
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, dest="log_format", help="text (default) or json"
    )
    serve.add_argument("--print-config", action="store_true", help="print every key and exit")
    pub = commands.add_parser("publish", help="publish one event")
    pub.add_argument("channel")
    pub.add_argument("data", help="JSON; text that is not JSON is sent as a string")
    pub.add_argument("--event", help="event name (default message)")
    pub.add_argument("--idempotency-key", dest="idempotency_key")
    pub.add_argument("--url", default=DEFAULT_URL)
    pub.add_argument("--api-key", dest="api_key")
    _subscribe_parser(commands)
    _bench_parser(commands)
    return parser


def _subscribe_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "subscribe",
        help="print the events of channels as JSON lines",
        epilog=SUBSCRIBE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("channels", nargs="+", metavar="CHANNEL")
    sub.add_argument(
        "--since",
        action="append",
        default=[],
        metavar="CURSOR",
        help="resume after this cursor; once per channel, in the order of the channels",
    )
    sub.add_argument(
        "--transport",
        default=AUTO,
        choices=(AUTO, *TRANSPORTS),
        help="auto (default: the first that works, in this order) or one technique",
    )
    sub.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    sub.add_argument(
        "--token", help="a connection token (JWT); default: the TIDINGS_TOKEN variable, if set"
    )
    sub.add_argument("--count", type=int, help="end after this many events")
    sub.add_argument(
        "--open-timeout",
        type=float,
        default=10.0,
        dest="open_timeout",
        help="give up if the subscriptions have not opened within this many seconds (10)",
    )


def _bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure the four techniques against a running server",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    bench.add_argument("--rate", type=float, default=10.0, help="events a second (default 10)")
    bench.add_argument(
        "--seconds", type=float, default=10.0, help="publishing time per technique (default 10)"
    )
    bench.add_argument(
        "--subscribers", type=int, default=50, help="connections per technique (default 50)"
    )
    bench.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        dest="poll_interval",
        help="seconds between short polls (default 2, the client's)",
    )
    bench.add_argument(
        "--transport",
        action="append",
        choices=TRANSPORTS,
        dest="techniques",
        help="measure only this technique (repeat for several; default all four)",
    )
    bench.add_argument("--api-key", dest="api_key", help="to publish, if the server has keys")
    bench.add_argument(
        "--pid", type=int, action="append", help="the server's process (default: found by port)"
    )
    bench.add_argument(
        "--progress",
        action="store_true",
        help="draw the progress bar on stderr even when it is not a terminal",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "subscribe":
        return _subscribe(args)
    if args.command == "bench":
        return _bench(args)
    return _publish(args)


def _serve(args: argparse.Namespace) -> int:
    if args.print_config:
        print(describe())
        return 0
    flags = {
        "host": args.host,
        "port": args.port,
        "broker": args.broker,
        "workers": args.workers,
        "heartbeat_seconds": args.heartbeat_seconds,
        "max_poll_seconds": args.max_poll_seconds,
        "lab": args.lab,
        "log_format": args.log_format,
    }
    try:
        settings = load_settings(args.config, flags=flags)
        from tidings.server.core import logs
        from tidings.server.uvloop.server import run

        logs.configure(args.log_level, settings.server.log_format)
        install_loop()
        if settings.server.workers > 1:
            from tidings.server.uvloop.workers import Workers

            return asyncio.run(Workers(settings, args.log_level).run())
        asyncio.run(run(settings))
    except ConfigError as error:
        print(f"tidings: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"tidings: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


def _publish(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError:
        data = args.data
    try:
        cursor = publish(
            args.channel,
            data,
            event=args.event,
            idempotency_key=args.idempotency_key,
            url=args.url,
            api_key=args.api_key,
        )
    except ServerRejected as error:
        print(f"tidings: {error}", file=sys.stderr)
        return 1
    except ClientError as error:
        print(f"tidings: {error}", file=sys.stderr)
        return 1
    print(cursor)
    return 0


def _subscribe(args: argparse.Namespace) -> int:
    from tidings.subscribe import SubscribeCommand

    try:
        command = SubscribeCommand(
            channels=tuple(args.channels),
            since=tuple(args.since),
            url=args.url,
            transport=args.transport,
            token=args.token or os.environ.get("TIDINGS_TOKEN") or None,
            count=args.count,
            open_timeout=args.open_timeout,
        )
    except ClientError as error:
        print(f"tidings: {error}", file=sys.stderr)
        return 2
    install_loop()
    return command.run()


def _bench(args: argparse.Namespace) -> int:
    from tidings.measure import BenchPlan, render, run_bench
    from tidings.measure.process import ServerProcesses
    from tidings.measure.progress import ProgressBar

    pids = _server_pids(args.url, args.pid)
    try:
        plan = BenchPlan(
            url=args.url.rstrip("/"),
            rate=args.rate,
            seconds=args.seconds,
            subscribers=args.subscribers,
            poll_interval=args.poll_interval,
            api_key=args.api_key,
            server=ServerProcesses(pids) if pids else None,
            techniques=tuple(args.techniques or TRANSPORTS),
        )
    except ClientError as error:
        print(f"tidings: {error}", file=sys.stderr)
        return 2
    bar = ProgressBar(sys.stderr, enabled=args.progress or sys.stderr.isatty())
    install_loop()
    try:
        results = asyncio.run(run_bench(plan, bar))
    except ClientError as error:
        bar.finish()
        print(f"tidings: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.finish()
        print("tidings: interrupted; nothing measured", file=sys.stderr)
        return 130
    bar.finish()
    print(render(plan, results, pids))
    return 0


def _server_pids(url: str, given: list[int] | None) -> tuple[int, ...]:
    """The local server's processes: ``--pid``, else whoever listens on the URL's port."""
    from tidings.measure.process import listening_pids

    parts = urlsplit(url)
    if not _is_loopback(parts.hostname or ""):
        if given:
            print("tidings: --pid is ignored: the server is not on loopback", file=sys.stderr)
        return ()
    if given:
        return tuple(given)
    found = listening_pids(parts.port or 80)
    if not found:
        print(
            f"tidings: no process of this user listens on port {parts.port}: server CPU and "
            "memory are not measured (give --pid)",
            file=sys.stderr,
        )
    return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
