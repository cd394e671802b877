"""``tidings serve | publish``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from tidings.client.publish import DEFAULT_URL, publish
from tidings.config import LOG_FORMATS, describe, load_settings
from tidings.exceptions import ClientError, ConfigError, ServerRejected


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings", description="Real-time delivery server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000; 0: any free)")
    serve.add_argument("--broker", help="memory:// (default), redis://..., nats://...")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _publish(args)


def _serve(args: argparse.Namespace) -> int:
    if args.print_config:
        print(describe())
        return 0
    flags = {
        "host": args.host,
        "port": args.port,
        "broker": args.broker,
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

        _install_loop()
        asyncio.run(run(settings))
    except ConfigError as error:
        print(f"tidings: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"tidings: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:
        logging.getLogger("tidings").warning("uvloop is not installed: using asyncio's own loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


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


if __name__ == "__main__":
    sys.exit(main())
