"""The public API (``__all__``) stays complete; the exception tree matches docs/protocol.md 6, 8."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import tidings
import tidings.exceptions
from tidings.exceptions import (
    BrokerUnavailable,
    ConfigError,
    MethodNotAllowed,
    RequestError,
    ServerRejected,
    TidingsError,
    WebSocketOnlyError,
)

PROTOCOL_PATH = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def section(number: int) -> str:
    text = PROTOCOL_PATH.read_text(encoding="utf-8")
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/protocol.md has no section {number}"
    return match.group(0)


def http_error_codes() -> dict[int, set[str]]:
    """Section 8's table: status -> the codes answered with it."""
    table: dict[int, set[str]] = {}
    for status, codes in re.findall(r"^\| (\d{3}) \| (.*) \|$", section(8), re.MULTILINE):
        table[int(status)] = set(re.findall(r"`([a-z_]+)`", codes))
    assert table, "section 8's table is empty"
    return table


def websocket_only_codes() -> set[str]:
    """Section 6: 'Error codes are those of section 8 plus `a`, `b` ...'."""
    match = re.search(r"those of section 8\s+plus\s+(.*?)\.", section(6), re.DOTALL)
    assert match is not None
    codes = set(re.findall(r"`([a-z_]+)`", match.group(1)))
    assert codes
    return codes


def all_subclasses(cls: type[RequestError]) -> list[type[RequestError]]:
    found: list[type[RequestError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(all_subclasses(sub))
    return found


def public_names(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }


# __all__


def test_every_name_in_all_exists() -> None:
    missing = [name for name in tidings.__all__ if not hasattr(tidings, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    assert len(set(tidings.__all__)) == len(tidings.__all__)


def test_all_lists_every_public_name_of_the_package() -> None:
    assert public_names(tidings) - set(tidings.__all__) == set()


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from tidings import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(tidings.__all__)


def test_the_version_is_a_string() -> None:
    assert isinstance(tidings.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", tidings.__version__)


@pytest.mark.parametrize("module_name", ["tidings.exceptions", "tidings.brokers"])
def test_submodule_all_is_complete(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported)
    defined_here = {
        name
        for name in public_names(module)
        if getattr(getattr(module, name), "__module__", module_name) == module_name
        and isinstance(getattr(module, name), type)
    }
    assert defined_here - exported == set()


# The exception tree


def test_every_exception_is_a_tidings_error() -> None:
    for name in tidings.exceptions.__all__:
        assert issubclass(getattr(tidings.exceptions, name), TidingsError), name


def test_no_exception_shadows_a_builtin() -> None:
    import builtins

    assert set(tidings.exceptions.__all__) & set(dir(builtins)) == set()


def test_misuse_is_kept_apart_from_peer_errors() -> None:
    assert not issubclass(ConfigError, RequestError)
    assert not issubclass(ServerRejected, RequestError)
    assert not issubclass(BrokerUnavailable, RequestError)


HTTP_ERRORS = [cls for cls in all_subclasses(RequestError) if cls is not WebSocketOnlyError]


@pytest.mark.parametrize("cls", [RequestError, *HTTP_ERRORS], ids=lambda cls: cls.__name__)
def test_every_request_error_answers_a_status_and_code_of_section_8(
    cls: type[RequestError],
) -> None:
    table = http_error_codes()
    assert isinstance(cls.status, int)
    assert cls.status in table, f"{cls.__name__}.status {cls.status} is not in section 8"
    assert cls.code in table[cls.status], (
        f"{cls.__name__}: {cls.code!r} is not a {cls.status} code of section 8"
    )


def test_every_code_of_section_8_has_an_exception() -> None:
    raised = {(cls.status, cls.code) for cls in HTTP_ERRORS}
    raised.add((BrokerUnavailable.status, BrokerUnavailable.code))
    documented = {(status, code) for status, codes in http_error_codes().items() for code in codes}
    assert documented - raised == set()


def test_broker_unavailable_is_503_unavailable() -> None:
    assert (BrokerUnavailable.status, BrokerUnavailable.code) == (503, "unavailable")
    assert "unavailable" in http_error_codes()[503]


def test_method_not_allowed_carries_the_allowed_methods() -> None:
    error = MethodNotAllowed("use GET", ("GET", "HEAD"))
    assert (error.status, error.code, error.allowed) == (405, "method_not_allowed", ("GET", "HEAD"))


@pytest.mark.parametrize("code", sorted(websocket_only_codes()))
def test_websocket_only_errors_carry_their_code(code: str) -> None:
    error = WebSocketOnlyError(code, "why")
    assert (error.code, error.message) == (code, "why")
    assert isinstance(error, RequestError)


def test_the_websocket_only_codes_are_not_http_codes() -> None:
    http_codes = set().union(*http_error_codes().values())
    assert websocket_only_codes() & http_codes == set()


def test_the_server_raises_only_documented_websocket_only_codes() -> None:
    source_root = Path(tidings.__file__).parent
    used = set()
    for path in source_root.rglob("*.py"):
        used |= set(
            re.findall(r"WebSocketOnlyError\(\s*\"([^\"]+)\"", path.read_text(encoding="utf-8"))
        )
    assert used, "found no WebSocketOnlyError in the package"
    assert used - websocket_only_codes() == set()
