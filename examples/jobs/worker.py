"""A background worker: does a job in 100 steps and publishes its progress after each one.

It is a separate process that knows Tidings only by URL and API key, as a Celery task or a
cron job would: ``tidings.publish`` is one HTTP request per step.

    .venv/bin/python examples/jobs/worker.py JOB_ID --url http://127.0.0.1:8000/rt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping

import tidings

STEPS = 100
RETRIES = 5  # per step, for a server that restarts or a network that drops for a moment


def publish(channel: str, data: Mapping[str, object], key: str, url: str, api_key: str) -> None:
    """Publish once, even when retried: the idempotency key makes a repeat return the first
    event instead of storing a second one."""
    for attempt in range(RETRIES):
        try:
            tidings.publish(channel, data, idempotency_key=key, url=url, api_key=api_key)
            return
        except tidings.ServerRejected:
            raise  # a 4xx (a bad key, a bad channel) is not fixed by trying again
        except tidings.ClientError as error:
            print(f"publish failed ({error}); retrying", file=sys.stderr)
            time.sleep(0.2 * 2**attempt)
    raise SystemExit(f"could not publish {key} after {RETRIES} attempts")


def run(job: str, url: str, api_key: str, step_seconds: float) -> None:
    channel = f"jobs:{job}"
    for step in range(1, STEPS + 1):
        time.sleep(step_seconds)  # the work of one step
        data = {"step": step, "percent": round(100 * step / STEPS), "of": STEPS}
        publish(channel, data, f"{job}:{step}", url, api_key)


def main() -> None:
    parser = argparse.ArgumentParser(description="A job that publishes its progress.")
    parser.add_argument("job")
    parser.add_argument("--url", required=True, help="Tidings, e.g. http://127.0.0.1:8000/rt")
    parser.add_argument("--step-seconds", type=float, default=0.1)
    arguments = parser.parse_args()
    api_key = os.environ["JOBS_TIDINGS_API_KEY"]  # given by the app that starts the worker
    run(arguments.job, arguments.url, api_key, arguments.step_seconds)


if __name__ == "__main__":
    main()
