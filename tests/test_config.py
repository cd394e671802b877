"""Configuration : defaults < TOML file < TIDINGS_* env < flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.config import (
    AuthSettings,
    NamespaceSettings,
    ServerSettings,
    Settings,
    cpu_count,
    describe,
    load_settings,
)
from tidings.exceptions import ConfigError

NO_ENV: dict[str, str] = {}


@pytest.fixture
def toml_file(tmp_path: Path) -> Any:
    def write(text: str) -> Path:
        path = tmp_path / "tidings.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config_error(
    text: str | None = None,
    environ: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
    tmp_path: Path | None = None,
) -> ConfigError:
    path = None
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / "tidings.toml"
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {}, flags=flags)
    return caught.value


# Defaults


def test_defaults_are_the_documented_ones() -> None:
    loaded = load_settings(environ=NO_ENV)
    assert loaded == Settings()
    server = loaded.server
    assert (server.host, server.port, server.broker) == ("127.0.0.1", 8000, "memory://")
    assert (server.api_keys, server.allowed_origins) == ((), ("*",))
    assert (server.heartbeat_seconds, server.max_poll_seconds) == (15, 30)
    assert (server.max_message_bytes, server.max_channels_per_connection) == (65536, 32)
    assert server.drain_seconds == 10
    assert loaded.auth == AuthSettings("", "")
    assert dict(loaded.namespaces) == {"default": NamespaceSettings()}
    default = loaded.namespace("")
    assert (default.history_size, default.history_ttl_seconds) == (100, 300)
    assert (default.public, default.client_publish, default.presence) == (True, False, False)
    assert default.slow_consumer == "disconnect"


def test_the_empty_namespace_and_unknown_namespaces_are_the_default() -> None:
    loaded = load_settings(environ={"TIDINGS_NAMESPACES_CHAT_PRESENCE": "true"})
    assert loaded.namespace("") is loaded.namespaces["default"]
    assert loaded.namespace("default") is loaded.namespaces["default"]
    assert loaded.namespace("unknown") is loaded.namespaces["default"]
    assert loaded.namespace("chat").presence is True


def test_settings_ignore_the_process_environment_when_given_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDINGS_SERVER_PORT", "9999")
    assert load_settings(environ=NO_ENV).server.port == 8000
    assert load_settings().server.port == 9999


# Layers


def test_the_file_overrides_defaults(toml_file: Any) -> None:
    path = toml_file(
        """
        [server]
        port = 9000
        broker = "redis://127.0.0.1:6379/0"
        api_keys = ["k1", "k2"]
        heartbeat_seconds = 2.5

        [auth]
        token_secret = "s3cret"
        """
    )
    loaded = load_settings(path, environ=NO_ENV)
    assert loaded.server.port == 9000
    assert loaded.server.broker == "redis://127.0.0.1:6379/0"
    assert loaded.server.api_keys == ("k1", "k2")
    assert loaded.server.heartbeat_seconds == 2.5
    assert loaded.server.host == "127.0.0.1"  # not in the file: the default
    assert loaded.auth.token_secret == "s3cret"


def test_the_environment_overrides_the_file(toml_file: Any) -> None:
    path = toml_file('[server]\nport = 9000\nhost = "0.0.0.0"\n')
    loaded = load_settings(
        path, environ={"TIDINGS_SERVER_PORT": "9100", "TIDINGS_AUTH_TOKEN_SECRET": "env"}
    )
    assert loaded.server.port == 9100
    assert loaded.server.host == "0.0.0.0"
    assert loaded.auth.token_secret == "env"


def test_flags_override_the_environment(toml_file: Any) -> None:
    path = toml_file("[server]\nport = 9000\nmax_poll_seconds = 5\n")
    loaded = load_settings(
        path,
        environ={"TIDINGS_SERVER_PORT": "9100", "TIDINGS_SERVER_BROKER": "redis://env"},
        flags={"port": 9200, "broker": None},
    )
    assert loaded.server.port == 9200
    assert loaded.server.broker == "redis://env"  # a flag left unset changes nothing
    assert loaded.server.max_poll_seconds == 5


def test_other_environment_variables_are_ignored() -> None:
    loaded = load_settings(environ={"PORT": "1", "TIDINGSX_SERVER_PORT": "2", "HOME": "/"})
    assert loaded == Settings()


def test_lists_from_the_environment_are_comma_separated() -> None:
    loaded = load_settings(
        environ={
            "TIDINGS_SERVER_API_KEYS": "k1, k2,,",
            "TIDINGS_SERVER_ALLOWED_ORIGINS": "https://a.example,https://b.example",
        }
    )
    assert loaded.server.api_keys == ("k1", "k2")
    assert loaded.server.allowed_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(text, True) for text in ("1", "true", "TRUE", "yes", "on")],
        *[(text, False) for text in ("0", "false", "no", "off", "Off")],
    ],
)
def test_booleans_from_the_environment(text: str, value: bool) -> None:
    loaded = load_settings(environ={"TIDINGS_NAMESPACES_DEFAULT_PRESENCE": text})
    assert loaded.namespace("").presence is value


# Namespaces


def test_namespaces_from_the_file_inherit_the_default_namespace(toml_file: Any) -> None:
    path = toml_file(
        """
        [auth]
        token_secret = "a secret of thirty-two bytes or more"

        [namespaces.default]
        history_size = 50
        public = false

        [namespaces.chat]
        client_publish = true
        presence = true

        [namespaces.feed]
        history_size = 1000
        """
    )
    loaded = load_settings(path, environ=NO_ENV)
    default = loaded.namespace("")
    assert (default.history_size, default.public) == (50, False)
    chat = loaded.namespace("chat")
    assert (chat.client_publish, chat.presence) == (True, True)
    assert (chat.history_size, chat.public) == (50, False)  # inherited from default
    assert chat.history_ttl_seconds == 300  # the built-in default, through default
    feed = loaded.namespace("feed")
    assert (feed.history_size, feed.public, feed.presence) == (1000, False, False)


def test_namespaces_from_the_environment(toml_file: Any) -> None:
    path = toml_file("[namespaces.default]\nhistory_size = 50\n")
    loaded = load_settings(
        path,
        environ={
            "TIDINGS_NAMESPACES_CHAT_PRESENCE": "true",
            "TIDINGS_NAMESPACES_MY_ROOM_HISTORY_TTL_SECONDS": "60",
            "TIDINGS_NAMESPACES_MY_ROOM_HISTORY_SIZE": "7",
            "TIDINGS_NAMESPACES_DEFAULT_CLIENT_PUBLISH": "1",
        },
    )
    chat = loaded.namespace("chat")
    assert chat.presence is True
    assert (chat.history_size, chat.client_publish) == (50, True)  # inherited
    room = loaded.namespace("my_room")
    assert (room.history_size, room.history_ttl_seconds) == (7, 60)
    assert loaded.namespace("").client_publish is True


def test_the_environment_overrides_a_namespace_of_the_file(toml_file: Any) -> None:
    path = toml_file("[namespaces.chat]\npresence = true\nhistory_size = 5\n")
    loaded = load_settings(path, environ={"TIDINGS_NAMESPACES_CHAT_PRESENCE": "false"})
    chat = loaded.namespace("chat")
    assert (chat.presence, chat.history_size) == (False, 5)


def test_a_namespace_value_wins_over_the_default_namespace_from_any_layer(
    toml_file: Any,
) -> None:
    path = toml_file("[namespaces.chat]\nhistory_size = 5\n")
    loaded = load_settings(path, environ={"TIDINGS_NAMESPACES_DEFAULT_HISTORY_SIZE": "9"})
    assert loaded.namespace("chat").history_size == 5
    assert loaded.namespace("").history_size == 9
    assert loaded.namespace("other").history_size == 9


# Bad values


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"TIDINGS_SERVER_PORT": "abc"}, "server.port"),
        ({"TIDINGS_SERVER_PORT": "80.5"}, "server.port"),
        ({"TIDINGS_SERVER_PORT": "70000"}, "server.port"),
        ({"TIDINGS_SERVER_PORT": "-1"}, "server.port"),
        ({"TIDINGS_SERVER_HEARTBEAT_SECONDS": "-1"}, "server.heartbeat_seconds"),
        ({"TIDINGS_SERVER_HEARTBEAT_SECONDS": "0"}, "server.heartbeat_seconds"),
        ({"TIDINGS_SERVER_HEARTBEAT_SECONDS": "nan"}, "server.heartbeat_seconds"),
        ({"TIDINGS_SERVER_HEARTBEAT_SECONDS": "soon"}, "server.heartbeat_seconds"),
        ({"TIDINGS_SERVER_MAX_POLL_SECONDS": "0"}, "server.max_poll_seconds"),
        ({"TIDINGS_SERVER_MAX_MESSAGE_BYTES": "15"}, "server.max_message_bytes"),
        ({"TIDINGS_SERVER_MAX_CHANNELS_PER_CONNECTION": "0"}, "server.max_channels_per_connection"),
        ({"TIDINGS_SERVER_DRAIN_SECONDS": "-0.5"}, "server.drain_seconds"),
        ({"TIDINGS_SERVER_WRITE_BUFFER_LIMIT": "4095"}, "server.write_buffer_limit"),
        ({"TIDINGS_SERVER_BROKER": "localhost:6379"}, "server.broker"),
        ({"TIDINGS_SERVER_BROKER": "redis"}, "server.broker"),
        ({"TIDINGS_SERVER_LAB": "maybe"}, "server.lab"),
        ({"TIDINGS_SERVER_BOGUS": "1"}, "server.bogus"),
        ({"TIDINGS_AUTH_BOGUS": "1"}, "auth.bogus"),
        (
            {"TIDINGS_NAMESPACES_DEFAULT_SLOW_CONSUMER": "ignore"},
            "namespaces.default.slow_consumer",
        ),
        ({"TIDINGS_NAMESPACES_CHAT_SLOW_CONSUMER": "block"}, "namespaces.chat.slow_consumer"),
        ({"TIDINGS_NAMESPACES_CHAT_HISTORY_SIZE": "-1"}, "namespaces.chat.history_size"),
        ({"TIDINGS_NAMESPACES_CHAT_HISTORY_SIZE": "lots"}, "namespaces.chat.history_size"),
        (
            {"TIDINGS_NAMESPACES_DEFAULT_HISTORY_TTL_SECONDS": "0"},
            "namespaces.default.history_ttl_seconds",
        ),
        ({"TIDINGS_NAMESPACES_CHAT_PRESENCE": "sometimes"}, "namespaces.chat.presence"),
    ],
)
def test_a_bad_environment_value_names_its_key(environ: dict[str, str], key: str) -> None:
    error = config_error(environ=environ)
    assert error.key == key
    assert key in str(error)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nport = "abc"\n', "server.port"),
        ("[server]\nport = 8000.5\n", "server.port"),
        ("[server]\nport = true\n", "server.port"),
        ("[server]\nheartbeat_seconds = -1\n", "server.heartbeat_seconds"),
        ("[server]\nheartbeat_seconds = true\n", "server.heartbeat_seconds"),
        ("[server]\napi_keys = 5\n", "server.api_keys"),
        ("[server]\napi_keys = [1, 2]\n", "server.api_keys"),
        ("[server]\nhost = 5\n", "server.host"),
        ('[server]\nbroker = "127.0.0.1:6379"\n', "server.broker"),
        ("[server]\nbogus = 1\n", "server.bogus"),
        ("[auth]\ntoken_secret = 5\n", "auth.token_secret"),
        ("[bogus]\nx = 1\n", "bogus"),
        ('[namespaces.default]\nslow_consumer = "wait"\n', "namespaces.default.slow_consumer"),
        ('[namespaces.chat]\nslow_consumer = "wait"\n', "namespaces.chat.slow_consumer"),
        ("[namespaces.chat]\nbogus = true\n", "namespaces.chat.bogus"),
        ('[namespaces.chat]\npresence = "sometimes"\n', "namespaces.chat.presence"),
        ("[namespaces]\nchat = 5\n", "namespaces.chat"),
    ],
)
def test_a_bad_file_value_names_its_key(text: str, key: str, tmp_path: Path) -> None:
    error = config_error(text, tmp_path=tmp_path)
    assert error.key == key


def test_a_bad_flag_names_its_key() -> None:
    assert config_error(flags={"port": "abc"}).key == "server.port"
    assert config_error(flags={"nonsense": 1}).key == "server.nonsense"


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    error = config_error("[server\nport = 1\n", tmp_path=tmp_path)
    assert error.key == "--config"
    assert "TOML" in str(error)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "missing.toml", environ=NO_ENV)
    assert caught.value.key == "--config"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("server = 5\n", "server"),
        ('auth = "x"\n', "auth"),
        ("[namespaces]\ndefault = 1\n", "namespaces.default"),
    ],
)
def test_a_section_that_is_not_a_table_names_its_key(text: str, key: str, tmp_path: Path) -> None:
    assert config_error(text, tmp_path=tmp_path).key == key


def test_an_unknown_namespace_key_in_the_environment_is_refused() -> None:
    error = config_error(environ={"TIDINGS_NAMESPACES_CHAT_PRESENSE": "true"})
    assert "presense" in str(error).lower()


# Properties


@settings(max_examples=50)
@given(st.integers(-(10**6), 10**6))
def test_a_port_is_accepted_exactly_from_0_to_65535(port: int) -> None:
    environ = {"TIDINGS_SERVER_PORT": str(port)}
    if 0 <= port <= 65535:
        assert load_settings(environ=environ).server.port == port
    else:
        assert config_error(environ=environ).key == "server.port"


def test_describe_lists_every_key_with_its_default() -> None:
    text = describe()
    for section, cls in (
        ("server", ServerSettings),
        ("auth", AuthSettings),
        ("namespaces.default", NamespaceSettings),
    ):
        assert f"[{section}]" in text
        for item in dataclasses.fields(cls):
            assert f"\n{item.name} = " in text


def test_every_key_is_documented_once_and_printed_as_valid_toml() -> None:
    import dataclasses
    import tomllib

    from tidings.config import (
        DOCS,
        AuthSettings,
        HooksSettings,
        NamespaceSettings,
        ServerSettings,
        describe,
    )

    keys = {
        f"{section}.{item.name}"
        for section, cls in (
            ("server", ServerSettings),
            ("auth", AuthSettings),
            ("hooks", HooksSettings),
            ("namespaces", NamespaceSettings),
        )
        for item in dataclasses.fields(cls)
    }
    assert keys == set(DOCS)
    printed = tomllib.loads(describe())
    assert printed["server"]["port"] == 8000
    assert printed["namespaces"]["default"]["slow_consumer"] == "disconnect"
    assert printed["hooks"]["forward_headers"] == ["Cookie", "Authorization"]


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"TIDINGS_NAMESPACES_DEFAULT_PUBLIC": "false"}, "namespaces.default.public"),
        (
            {"TIDINGS_AUTH_TOKEN_SECRET": "s", "TIDINGS_AUTH_TOKEN_PUBLIC_KEY_FILE": "k.pem"},
            "auth.token_public_key_file",
        ),
        ({"TIDINGS_SERVER_LOG_FORMAT": "xml"}, "server.log_format"),
        ({"TIDINGS_SERVER_MAX_CONNECTIONS": "-1"}, "server.max_connections"),
        ({"TIDINGS_SERVER_POLL_RATE_PER_ADDRESS": "-2"}, "server.poll_rate_per_address"),
    ],
)
def test_inconsistent_security_settings_stop_start_up(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=environ)
    assert raised.value.key == key


# Workers


def test_workers_auto_is_one_per_cpu_this_process_may_use(toml_file: Any) -> None:
    path = toml_file('[server]\nworkers = "auto"\nbroker = "redis://127.0.0.1:6379/0"\n')
    assert load_settings(path, environ=NO_ENV).server.workers == cpu_count()
    environ = {"TIDINGS_SERVER_WORKERS": "AUTO", "TIDINGS_SERVER_BROKER": "nats://127.0.0.1"}
    assert load_settings(environ=environ).server.workers == cpu_count()
    flags = {"workers": "3", "broker": "redis://127.0.0.1"}
    assert load_settings(environ=NO_ENV, flags=flags).server.workers == 3


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5", True])
def test_a_bad_worker_count_names_its_key(value: object) -> None:
    error = config_error(flags={"workers": value, "broker": "redis://127.0.0.1"})
    assert error.key == "server.workers"


def test_several_workers_on_the_memory_broker_are_refused_naming_the_fix() -> None:
    error = config_error(flags={"workers": 2})
    assert error.key == "server.broker"
    assert "--broker redis://" in str(error) and "nats://" in str(error)
    assert load_settings(environ=NO_ENV, flags={"workers": 1}).server.workers == 1
