"""``POST /api/publish`` (docs/protocol.md 2 and 8), checked through what polls then see."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import RunningServer
from tests.server.support import offset

CURSOR = re.compile(r"[A-Za-z0-9]{1,16}\.(0|[1-9][0-9]*)")


def post(http: httpx.Client, body: Any, **kwargs: Any) -> httpx.Response:
    return http.post("/api/publish", json=body, **kwargs)


def events_since(http: httpx.Client, channel: str, since: str | None) -> list[dict[str, Any]]:
    params = {"channel": channel, "limit": "1000"}
    if since is not None:
        params["since"] = since
    response = http.get("/poll", params=params)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def head(http: httpx.Client, channel: str) -> str:
    return str(http.get("/poll", params={"channel": channel}).json()["cursor"])


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_single_publish_answers_channel_and_cursor(http: httpx.Client) -> None:
    start = head(http, "news")
    assert offset(start) == 0
    before_ms = time.time() * 1000
    response = post(http, {"channel": "news", "data": {"text": "hi"}, "event": "greeting"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"channel", "id"}
    assert body["channel"] == "news"
    assert CURSOR.fullmatch(body["id"])
    assert body["id"] == start.replace(".0", ".1")
    [event] = events_since(http, "news", start)
    assert event["channel"] == "news"
    assert event["id"] == body["id"]
    assert event["event"] == "greeting"
    assert event["data"] == {"text": "hi"}
    assert before_ms - 1000 <= event["ts"] <= time.time() * 1000 + 1000


def test_offsets_grow_by_exactly_one(http: httpx.Client) -> None:
    ids = [post(http, {"channel": "count", "data": n}).json()["id"] for n in range(5)]
    assert [offset(i) for i in ids] == [1, 2, 3, 4, 5]
    assert len({i.partition(".")[0] for i in ids}) == 1


def test_default_event_name_is_message(http: httpx.Client) -> None:
    start = head(http, "plain")
    post(http, {"channel": "plain", "data": 1})
    assert events_since(http, "plain", start)[0]["event"] == "message"


@pytest.mark.parametrize("data", [None, 0, "", [], {}, [1, "two", {"3": None}], 1.5, False])
def test_any_json_data_is_published_as_given(http: httpx.Client, data: Any) -> None:
    start = head(http, "values")
    response = post(http, {"channel": "values", "data": data})
    assert response.status_code == 200, response.text
    [event] = events_since(http, "values", start)
    assert "data" in event
    assert event["data"] == data


def test_batch_answers_in_order_and_a_bad_entry_fails_only_itself(http: httpx.Client) -> None:
    start_a, start_b = head(http, "a"), head(http, "b")
    response = post(
        http,
        {
            "events": [
                {"channel": "a", "data": 1},
                {"channel": "b", "data": 2},
                {"channel": "bad channel!", "data": 3},
                {"channel": "a", "data": 4, "event": "tidings.fake"},
                {"channel": "a"},
                "not an object",
                {"channel": "a", "data": 5, "event": "custom"},
            ]
        },
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 7
    assert results[0] == {"channel": "a", "id": start_a.replace(".0", ".1")}
    assert results[1] == {"channel": "b", "id": start_b.replace(".0", ".1")}
    assert [r["error"]["code"] for r in results[2:6]] == [
        "invalid_channel",
        "invalid_field",
        "invalid_field",
        "invalid_field",
    ]
    assert all(set(r) == {"error"} and r["error"]["message"] for r in results[2:6])
    assert results[6] == {"channel": "a", "id": start_a.replace(".0", ".2")}
    assert [(e["data"], e["event"]) for e in events_since(http, "a", start_a)] == [
        (1, "message"),
        (5, "custom"),
    ]
    assert [e["data"] for e in events_since(http, "b", start_b)] == [2]


def test_batch_entry_over_the_size_limit_fails_alone(
    make_server: Callable[..., RunningServer],
    make_http: Callable[[RunningServer], httpx.Client],
) -> None:
    http = make_http(make_server(max_message_bytes=32))
    response = post(
        http,
        {"events": [{"channel": "s", "data": "x" * 40}, {"channel": "s", "data": "ok"}]},
    )
    results = response.json()["results"]
    assert results[0]["error"]["code"] == "too_large"
    assert offset(results[1]["id"]) == 1


def test_batch_of_a_thousand_is_accepted_in_order(http: httpx.Client) -> None:
    response = post(http, {"events": [{"channel": "big", "data": n} for n in range(1000)]})
    ids = [r["id"] for r in response.json()["results"]]
    assert [offset(i) for i in ids] == list(range(1, 1001))
    # History keeps the last 100 (the default): they are the batch's last 100, in order.
    assert [e["data"] for e in events_since(http, "big", ids[899])] == list(range(900, 1000))


@pytest.mark.parametrize(
    "events",
    [[], [{"channel": "a", "data": 1}] * 1001, "nope", {"channel": "a", "data": 1}],
    ids=["empty", "1001", "string", "object"],
)
def test_batch_that_is_not_a_list_of_1_to_1000_is_a_400(http: httpx.Client, events: Any) -> None:
    assert_error(post(http, {"events": events}), 400, "invalid_field")
    assert offset(head(http, "a")) == 0


def test_idempotency_key_returns_the_first_id_and_publishes_nothing(
    http: httpx.Client,
) -> None:
    start = head(http, "idem")
    first = post(http, {"channel": "idem", "data": 1, "idempotency_key": "msg-81"}).json()
    again = post(http, {"channel": "idem", "data": 2, "idempotency_key": "msg-81"}).json()
    assert again == first
    assert [e["data"] for e in events_since(http, "idem", start)] == [1]
    other = post(http, {"channel": "idem", "data": 3, "idempotency_key": "msg-82"}).json()
    assert offset(other["id"]) == offset(first["id"]) + 1
    assert [e["data"] for e in events_since(http, "idem", start)] == [1, 3]


def test_idempotency_key_is_per_channel(http: httpx.Client) -> None:
    one = post(http, {"channel": "k1", "data": 1, "idempotency_key": "same"}).json()
    two = post(http, {"channel": "k2", "data": 1, "idempotency_key": "same"}).json()
    assert one["channel"] == "k1" and two["channel"] == "k2"
    assert offset(one["id"]) == offset(two["id"]) == 1


def test_idempotency_key_inside_a_batch(http: httpx.Client) -> None:
    start = head(http, "ib")
    results = post(
        http,
        {
            "events": [
                {"channel": "ib", "data": 1, "idempotency_key": "x"},
                {"channel": "ib", "data": 2, "idempotency_key": "x"},
            ]
        },
    ).json()["results"]
    assert results[0] == results[1]
    assert [e["data"] for e in events_since(http, "ib", start)] == [1]


def test_idempotency_key_is_forgotten_with_the_event(
    make_server: Callable[..., RunningServer],
    make_http: Callable[[RunningServer], httpx.Client],
) -> None:
    http = make_http(make_server(namespaces__default__history_size=2))
    first = post(http, {"channel": "h", "data": 0, "idempotency_key": "k"}).json()
    for n in range(1, 4):
        post(http, {"channel": "h", "data": n})
    again = post(http, {"channel": "h", "data": 9, "idempotency_key": "k"}).json()
    assert offset(again["id"]) == 5 and again["id"] != first["id"]


def test_invalid_json_body(http: httpx.Client) -> None:
    response = http.post("/api/publish", content=b'{"channel": "a", "data": ')
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"channel": "a"}, "invalid_field"),
        ({"data": 1}, "invalid_channel"),
        ({"channel": "", "data": 1}, "invalid_channel"),
        ({"channel": "sp ace", "data": 1}, "invalid_channel"),
        ({"channel": "x" * 129, "data": 1}, "invalid_channel"),
        ({"channel": 7, "data": 1}, "invalid_channel"),
        ({"channel": "a", "data": 1, "event": "tidings.reset"}, "invalid_field"),
        ({"channel": "a", "data": 1, "event": "tidings.anything"}, "invalid_field"),
        ({"channel": "a", "data": 1, "event": ""}, "invalid_field"),
        ({"channel": "a", "data": 1, "event": "has space"}, "invalid_field"),
        ({"channel": "a", "data": 1, "event": "e" * 65}, "invalid_field"),
        ({"channel": "a", "data": 1, "idempotency_key": ""}, "invalid_field"),
        ({"channel": "a", "data": 1, "idempotency_key": "k" * 129}, "invalid_field"),
        ({"channel": "a", "data": 1, "idempotency_key": 5}, "invalid_field"),
        ([1, 2], "invalid_field"),
        ("just a string", "invalid_field"),
    ],
)
def test_bad_publish_is_a_400_with_its_code(http: httpx.Client, body: Any, code: str) -> None:
    assert_error(post(http, body), 400, code)
    assert offset(head(http, "a")) == 0


def test_longest_valid_names_are_accepted(http: httpx.Client) -> None:
    channel = "c" * 128
    response = post(
        http, {"channel": channel, "data": 1, "event": "e" * 64, "idempotency_key": "k" * 128}
    )
    assert response.status_code == 200, response.text
    assert response.json()["channel"] == channel


def test_data_limit_is_on_its_compact_json(
    make_server: Callable[..., RunningServer],
    make_http: Callable[[RunningServer], httpx.Client],
) -> None:
    http = make_http(make_server(max_message_bytes=64))
    at_limit = "x" * 62  # '"' + 62 + '"' = 64 bytes
    assert post(http, {"channel": "z", "data": at_limit}).status_code == 200
    assert_error(post(http, {"channel": "z", "data": at_limit + "x"}), 413, "too_large")
    # Loosely formatted, the body is far over 64 bytes; compact, data is 64 exactly.
    spread = {"k": "v" * 56}  # {"k":"vvv..."} is 8 + 56 bytes
    assert len(orjson.dumps(spread)) == 64
    loose = b'{"channel": "z",   "data":   {  "k"  :  "' + b"v" * 56 + b'"  } }'
    response = http.post("/api/publish", content=loose)
    assert response.status_code == 200, response.text
    assert offset(head(http, "z")) == 2


def test_api_keys_are_required_when_configured(
    make_server: Callable[..., RunningServer],
    make_http: Callable[[RunningServer], httpx.Client],
) -> None:
    http = make_http(make_server(api_keys="s3cret,other"))
    body = {"channel": "k", "data": 1}
    assert_error(post(http, body), 401, "unauthorized")
    assert_error(post(http, body, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    assert_error(post(http, body, headers={"Authorization": "Basic s3cret"}), 401, "unauthorized")
    assert post(http, body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert post(http, body, headers={"Authorization": "Bearer other"}).status_code == 200
    assert offset(head(http, "k")) == 2
