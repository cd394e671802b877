"""Built answers (server/core/response.py): HTTP/1.1 bytes, and answers kept by question."""

from __future__ import annotations

import pytest

from tidings.server.core import response as module
from tidings.server.core.response import Answers, Response


def test_a_kept_answer_is_found_by_its_question() -> None:
    answers = Answers()
    built = Response(200, b"{}", [(b"ETag", b'"a.1"')])
    assert answers.get(("c", "a", 0, 1)) is None
    assert answers.keep(("c", "a", 0, 1), built) is built
    assert answers.get(("c", "a", 0, 1)) is built
    assert answers.get(("c", "a", 0, 2)) is None


def test_answers_are_bounded_in_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ANSWERS_KEPT", 3)
    answers = Answers()
    for n in range(3):
        answers.keep((n,), Response(200, b"x"))
    assert all(answers.get((n,)) is not None for n in range(3))
    answers.keep((3,), Response(200, b"x"))  # past the bound: emptied, then kept
    assert [answers.get((n,)) is not None for n in range(4)] == [False, False, False, True]


def test_answers_are_bounded_in_body_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ANSWER_BYTES_KEPT", 10)
    answers = Answers()
    answers.keep((1,), Response(200, b"x" * 11))
    answers.keep((2,), Response(200, b"y"))
    assert answers.get((1,)) is None
    assert answers.get((2,)) is not None


def test_keep_alive_bytes_are_built_once() -> None:
    built = Response(304, b"", [(b"ETag", b'"a.1"')])
    assert built.http11(True) is built.http11(True)
    assert b"Connection: close" in built.http11(False)
    assert b"Content-Length" not in built.http11(True)
