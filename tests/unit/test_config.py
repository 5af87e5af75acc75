"""relman.toml loading, validation, schema, example and config-file discovery."""

from __future__ import annotations

import copy
import os
import pickle
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from relman.config import (
    TABLES,
    AppConfig,
    BuildConfig,
    Config,
    HealthConfig,
    ProcessConfig,
    ReleaseConfig,
    RestartConfig,
    ServerConfig,
    SwapConfig,
    example_config,
    load_config,
    schema,
)
from relman.config_fleet import FleetConfig
from relman.config_search import find_config
from relman.errors import ConfigError, UsageError

BASE: dict[str, dict[str, str]] = {
    "app": {"name": '"shop"', "repo": '"/srv/git/shop.git"', "root": '"/srv/shop"'},
    "server": {"app": '"wsgi:application"'},
}


def config_text(changes: Mapping[str, str | None] | None = None) -> str:
    """The smallest valid relman.toml, with dotted keys set to TOML text (None removes one)."""
    tables: dict[str, dict[str, str | None]] = {name: dict(keys) for name, keys in BASE.items()}
    for dotted, value in (changes or {}).items():
        table, key = dotted.split(".")
        tables.setdefault(table, {})[key] = value
    return "".join(
        f"[{table}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
        for table, keys in tables.items()
    )


def write(tmp_path: Path, text: str, name: str = "relman.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_minimal_config_gets_every_default(tmp_path: Path) -> None:
    """A config with only the required keys loads with every other key at its default."""
    path = write(tmp_path, config_text())
    config = load_config(path)
    assert config == Config(
        path=path,
        app=AppConfig(name="shop", repo="/srv/git/shop.git", root=Path("/srv/shop")),
        build=BuildConfig(),
        release=ReleaseConfig(),
        server=ServerConfig(app="wsgi:application"),
        health=HealthConfig(),
        swap=SwapConfig(),
        restart=RestartConfig(),
    )
    assert config.app.keep_releases == 5
    assert config.build.requirements == ("requirements.txt",)
    assert config.server.socket_mode == 0o660
    assert config.health.expect == (200, 399)
    assert config.restart.policy == "on-failure"


FULL = """
[app]
name = "shop_2-eu"
repo = "git@example.com:shop.git"
root = "/srv/shop"
keep_releases = 9

[build]
python = "python3.12"
requirements = ["requirements.txt", "constraints/prod.txt"]
commands = ["python manage.py collectstatic --noinput", ["make", "assets"], "echo 'a b'"]
shared = [".env", "media/"]

[release]
commands = ["python manage.py migrate"]

[server]
kind = "uwsgi"
wsgi_file = "wsgi.py"
protocol = "uwsgi"
workers = 8
args = ["--harakiri", "30"]
env = { DJANGO_SETTINGS_MODULE = "shop.settings", "EMPTY" = "" }
env_file = "app.env"
socket_mode = "640"
socket_group = "www-data"

[health]
path = "/healthz"
expect = [200, 204]
timeout = 12.5
nginx_url = "http://127.0.0.1/"
nginx_host = "shop.example.com"

[swap]
drain_timeout = 5
stop_timeout = 7.5
keep_warm = 60

[restart]
policy = "always"
backoff_max = 120
"""


def test_full_config_round_trips_into_dataclasses(tmp_path: Path) -> None:
    """Every key set to a non-default value comes back typed and normalised."""
    config = load_config(write(tmp_path, FULL))
    assert config.app == AppConfig(
        name="shop_2-eu", repo="git@example.com:shop.git", root=Path("/srv/shop"), keep_releases=9
    )
    assert config.build == BuildConfig(
        python="python3.12",
        requirements=("requirements.txt", "constraints/prod.txt"),
        commands=(
            ("python", "manage.py", "collectstatic", "--noinput"),
            ("make", "assets"),
            ("echo", "a b"),
        ),
        shared=(".env", "media/"),
    )
    assert config.release.commands == (("python", "manage.py", "migrate"),)
    server = config.server
    assert (server.kind, server.app, server.wsgi_file, server.protocol) == (
        "uwsgi", "", "wsgi.py", "uwsgi"
    )
    assert (server.workers, server.args) == (8, ("--harakiri", "30"))
    assert dict(server.env) == {"DJANGO_SETTINGS_MODULE": "shop.settings", "EMPTY": ""}
    assert (server.env_file, server.socket_mode, server.socket_group) == (
        "app.env", 0o640, "www-data"
    )
    assert config.health == HealthConfig(
        path="/healthz", expect=(200, 204), timeout=12.5,
        nginx_url="http://127.0.0.1/", nginx_host="shop.example.com",
    )
    assert config.swap == SwapConfig(drain_timeout=5.0, stop_timeout=7.5, keep_warm=60.0)
    assert isinstance(config.swap.drain_timeout, float)
    assert config.restart == RestartConfig(policy="always", backoff_max=120.0)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"build.requirements": '"reqs.txt"'}, ("build.requirements", ("reqs.txt",))),
        ({"build.requirements": "[]"}, ("build.requirements", ())),
        ({"server.socket_mode": '"0600"'}, ("server.socket_mode", 0o600)),
        ({"server.socket_mode": '"0666"'}, ("server.socket_mode", 0o666)),
        ({"health.timeout": "10"}, ("health.timeout", 10.0)),
        ({"swap.keep_warm": "0"}, ("swap.keep_warm", 0.0)),
        ({"swap.prepare_timeout": "30"}, ("swap.prepare_timeout", 30.0)),
        ({"swap.prepare_timeout": "0.5"}, ("swap.prepare_timeout", 0.5)),
        ({"server.kind": '"uwsgi"', "server.protocol": '"http"'}, ("server.protocol", "http")),
        ({"server.kind": '"command"', "server.app": None,
          "server.command": '"bin/serve --bind unix:{socket} --root {root}"'},
         ("server.command", ("bin/serve", "--bind", "unix:{socket}", "--root", "{root}"))),
        ({"server.kind": '"command"', "server.app": None,
          "server.command": '["serve", "{socket}", "{release}"]'},
         ("server.command", ("serve", "{socket}", "{release}"))),
        ({"server.command": '""'}, ("server.command", ())),
        ({"health.nginx_url": '"https://[::1]:8443/health"'},
         ("health.nginx_url", "https://[::1]:8443/health")),
        ({"build.shared": '["./media/", "a/./b"]'}, ("build.shared", ("./media/", "a/./b"))),
    ],
)
def test_accepted_spellings(
    tmp_path: Path, changes: dict[str, str | None], expected: tuple[str, object]
) -> None:
    """Alternative spellings of a value load into the same normalised form."""
    config = load_config(write(tmp_path, config_text(changes)))
    table, key = expected[0].split(".")
    assert getattr(getattr(config, table), key) == expected[1]


BAD_VALUES: list[tuple[dict[str, str | None], str, str]] = [
    ({"app.name": '"Shop"'}, "app.name", "must match [a-z0-9][a-z0-9_-]*"),
    ({"app.name": '"-shop"'}, "app.name", "must match [a-z0-9][a-z0-9_-]*"),
    ({"app.name": '"shop/eu"'}, "app.name", "must match [a-z0-9][a-z0-9_-]*"),
    ({"app.name": "5"}, "app.name", "expected a string, got an integer"),
    ({"app.name": "1979-05-27"}, "app.name", "expected a string, got a date or time"),
    ({"app.name": None}, "app.name", "required"),
    ({"app.repo": None}, "app.repo", "required"),
    ({"app.root": None}, "app.root", "required"),
    ({"app.repo": '""'}, "app.repo", "must not be empty"),
    ({"app.root": '"srv/shop"'}, "app.root", "must be an absolute path"),
    ({"app.root": '"~/shop"'}, "app.root", "must be an absolute path"),
    ({"app.keep_releases": "0"}, "app.keep_releases", "must be at least 1"),
    ({"app.keep_releases": "true"}, "app.keep_releases", "expected an integer, got a boolean"),
    ({"build.link_unchanged": "1"}, "build.link_unchanged",
     "expected true or false, got an integer"),
    ({"build.link_unchanged": '"no"'}, "build.link_unchanged",
     "expected true or false, got a string"),
    ({"app.keep_releases": "2.5"}, "app.keep_releases", "expected an integer, got a float"),
    ({"app.keep_releases": '"5"'}, "app.keep_releases", "expected an integer, got a string"),
    ({"app.nmae": '"x"'}, "app.nmae", "unknown key (did you mean 'name'?)"),
    ({"build.python": '""'}, "build.python", "must not be empty"),
    ({"build.requirements": "3"}, "build.requirements",
     "expected a string or an array of strings, got an integer"),
    ({"build.requirements": '["ok.txt", 1]'}, "build.requirements",
     "item 2: expected a string, got an integer"),
    ({"build.requirements": '"../reqs.txt"'}, "build.requirements", "without '..'"),
    ({"build.requirements": '["/abs/reqs.txt"]'}, "build.requirements", "relative path"),
    ({"build.commands": '"make"'}, "build.commands",
     "expected an array of commands, got a string"),
    ({"build.commands": "[\"echo 'unclosed\"]"}, "build.commands",
     "item 1: cannot split \"echo 'unclosed\": No closing quotation"),
    ({"build.commands": '["make", ""]'}, "build.commands", "item 2: empty command"),
    ({"build.commands": "[[]]"}, "build.commands", "item 1: empty command"),
    ({"build.commands": '[["make", 1]]'}, "build.commands",
     "item 1: item 2: expected a string, got an integer"),
    ({"build.shared": '["/etc/passwd"]'}, "build.shared", "relative path"),
    ({"build.shared": '["media/../../etc"]'}, "build.shared", "without '..'"),
    ({"build.shared": '"media/"'}, "build.shared", "expected an array of strings, got a string"),
    ({"build.shared": '["."]'}, "build.shared", "'.' names the directory itself"),
    ({"build.shared": '["media/", "./"]'}, "build.shared", "'./' names the directory itself"),
    ({"build.shared": '[""]'}, "build.shared", "'' must be a relative path"),
    ({"build.shared": '[".."]'}, "build.shared", "without '..'"),
    ({"build.shared": '["a/../.."]'}, "build.shared", "without '..'"),
    ({"build.shared": '["a/.."]'}, "build.shared", "without '..'"),
    ({"build.shared": '["/srv/shop/releases"]'}, "build.shared", "relative path"),
    ({"build.shared": '["media\\u0000"]'}, "build.shared", "NUL"),
    ({"build.requirements": '"."'}, "build.requirements", "names the directory itself"),
    ({"build.installer": '"npm"'}, "build.installer", "must be one of auto | uv | pip, not 'npm'"),
    ({"build.installer": "true"}, "build.installer", "expected a string, got a boolean"),
    ({"server.env_file": '"./"'}, "server.env_file", "names the directory itself"),
    ({"release.commands": "[5]"}, "release.commands",
     "item 1: expected a string or an array of strings, got an integer"),
    ({"release.command": "[]"}, "release.command", "unknown key (did you mean 'commands'?)"),
    ({"server.kind": '"waitress"'}, "server.kind",
     "must be one of gunicorn | uwsgi | command | none, not 'waitress'"),
    ({"server.app": None}, "server.app", 'required for kind = "gunicorn"'),
    ({"server.app": '"--reload"'}, "server.app", "must not start with -"),
    ({"server.kind": '"uwsgi"', "server.wsgi_file": '"wsgi.py"'}, "server.app",
     "exactly one of server.app and server.wsgi_file"),
    ({"server.kind": '"uwsgi"', "server.app": None}, "server.app",
     "exactly one of server.app and server.wsgi_file"),
    ({"server.kind": '"uwsgi"', "server.app": None, "server.wsgi_file": '"/srv/wsgi.py"'},
     "server.wsgi_file", "relative path"),
    ({"server.wsgi_file": '"wsgi.py"'}, "server.wsgi_file", 'only used with kind = "uwsgi"'),
    ({"server.kind": '"command"', "server.app": None}, "server.command", "{socket}"),
    ({"server.kind": '"command"', "server.command": '"serve --port 8000"'}, "server.command",
     "{socket}"),
    ({"server.kind": '"command"', "server.command": '"serve {socket} {port}"'},
     "server.command", "unknown placeholder {port}"),
    ({"server.kind": '"command"', "server.command": '"serve {socket"'}, "server.command",
     "literal brace"),
    ({"server.command": '"serve {socket}"'}, "server.command", 'only used with kind = "command"'),
    ({"server.command": "5"}, "server.command",
     "expected a string or an array of strings, got an integer"),
    ({"server.protocol": '"uwsgi"'}, "server.protocol", '"uwsgi" needs kind = "uwsgi"'),
    ({"server.protocol": '"fastcgi"'}, "server.protocol", "must be one of http | uwsgi"),
    ({"server.workers": "0"}, "server.workers", "must be between 1 and 512"),
    ({"server.workers": "513"}, "server.workers", "must be between 1 and 512"),
    ({"server.workers": "true"}, "server.workers", "expected an integer, got a boolean"),
    ({"server.args": '"--preload"'}, "server.args", "expected an array of strings, got a string"),
    ({"server.env": '"A=1"'}, "server.env", "expected a table of strings, got a string"),
    ({"server.env": "{ A = 1 }"}, "server.env", "A: expected a string, got an integer"),
    ({"server.env": '{ "A=B" = "x" }'}, "server.env", "not a valid environment variable"),
    ({"server.env_file": '"/etc/shop.env"'}, "server.env_file", "relative path"),
    ({"server.env_file": '"../shop.env"'}, "server.env_file", "without '..'"),
    ({"server.socket_mode": "660"}, "server.socket_mode",
     'expected a string of octal digits like "0660", got an integer'),
    ({"server.socket_mode": '"0o660"'}, "server.socket_mode", "3 or 4 octal digits"),
    ({"server.socket_mode": '"0890"'}, "server.socket_mode", "3 or 4 octal digits"),
    ({"server.socket_mode": '"66"'}, "server.socket_mode", "3 or 4 octal digits"),
    ({"server.socket_mode": '"0777"'}, "server.socket_mode", "never 0777"),
    ({"server.socket_mode": '"777"'}, "server.socket_mode", "never 0777"),
    ({"server.socket_mode": '"0607"'}, "server.socket_mode", "never 0777"),
    ({"server.socket_mode": '"1660"'}, "server.socket_mode", "at most 0777"),
    ({"server.socket_mode": '"0460"'}, "server.socket_mode", "owner read and write"),
    ({"server.socket_mode": '"0260"'}, "server.socket_mode", "owner read and write"),
    ({"server.socket_group": "33"}, "server.socket_group", "expected a string, got an integer"),
    ({"health.path": '"healthz"'}, "health.path", "must start with /"),
    ({"health.expect": "200"}, "health.expect",
     "expected an array of two integers, got an integer"),
    ({"health.expect": "[200]"}, "health.expect", "100 <= low <= high <= 599"),
    ({"health.expect": "[200, 299, 399]"}, "health.expect", "100 <= low <= high <= 599"),
    ({"health.expect": "[399, 200]"}, "health.expect", "100 <= low <= high <= 599"),
    ({"health.expect": "[99, 200]"}, "health.expect", "100 <= low <= high <= 599"),
    ({"health.expect": "[200, 600]"}, "health.expect", "100 <= low <= high <= 599"),
    ({"health.expect": '[200, "399"]'}, "health.expect",
     "item 2: expected an integer, got a string"),
    ({"health.expect": "[true, 399]"}, "health.expect",
     "item 1: expected an integer, got a boolean"),
    ({"health.timeout": "0"}, "health.timeout", "must be a finite number above 0"),
    ({"health.timeout": "-1.5"}, "health.timeout", "must be a finite number above 0"),
    ({"health.timeout": "inf"}, "health.timeout", "must be a finite number above 0"),
    ({"health.timeout": "nan"}, "health.timeout", "must be a finite number above 0"),
    ({"health.timeout": "1" + "0" * 400}, "health.timeout", "must be a finite number above 0"),
    ({"health.timeout": '"30"'}, "health.timeout", "expected a number, got a string"),
    ({"health.timeout": "true"}, "health.timeout", "expected a number, got a boolean"),
    ({"health.nginx_url": '"127.0.0.1"'}, "health.nginx_url",
     "must start with http:// or https://"),
    ({"health.nginx_url": '"http://127.0.0.1:99999/"'}, "health.nginx_url",
     "not a valid URL: Port out of range 0-65535"),
    ({"health.nginx_url": '"http://127.0.0.1:http/"'}, "health.nginx_url",
     "not a valid URL: Port could not be cast"),
    ({"health.nginx_url": '"http://[::1"'}, "health.nginx_url",
     "not a valid URL: Invalid IPv6 URL"),
    ({"health.nginx_url": '"http://[::1/healthz"'}, "health.nginx_url", "Invalid IPv6 URL"),
    ({"health.nginx_url": '"http:///healthz"'}, "health.nginx_url", "has no host"),
    ({"swap.drain_timeout": "0"}, "swap.drain_timeout", "above 0"),
    ({"swap.stop_timeout": "-5"}, "swap.stop_timeout", "above 0"),
    ({"swap.keep_warm": "-1"}, "swap.keep_warm", "must be at least 0"),
    ({"swap.keep_warm": "inf"}, "swap.keep_warm", "must be at least 0"),
    ({"swap.verify_window": "-1"}, "swap.verify_window", "must be at least 0"),
    ({"swap.verify_window": "nan"}, "swap.verify_window", "must be at least 0"),
    ({"swap.live_check_interval": "0"}, "swap.live_check_interval", "above 0"),
    ({"swap.prepare_timeout": "0"}, "swap.prepare_timeout", "above 0"),
    ({"swap.prepare_timeout": "-600"}, "swap.prepare_timeout", "above 0"),
    ({"swap.prepare_timeout": "inf"}, "swap.prepare_timeout", "above 0"),
    ({"swap.prepare_timeout": '"600"'}, "swap.prepare_timeout",
     "expected a number, got a string"),
    ({"restart.policy": '"sometimes"'}, "restart.policy",
     "must be one of always | on-failure | never"),
    ({"restart.backoff_max": "0"}, "restart.backoff_max", "above 0"),
]


@pytest.mark.parametrize(
    ("changes", "key", "reason"), BAD_VALUES, ids=[f"{c}" for c, _, _ in BAD_VALUES]
)
def test_bad_value_names_file_and_key(
    tmp_path: Path, changes: dict[str, str | None], key: str, reason: str
) -> None:
    """A bad value raises a ConfigError naming the file, the dotted key and why."""
    path = write(tmp_path, config_text(changes))
    err = load_error(path)
    assert (err.file, err.key) == (str(path), key)
    assert reason in err.reason
    assert err.message == f"{path}: {key}: {err.reason}"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[serer]\n", "serer", "unknown table (did you mean 'server'?)"),
        ("debug = true\n", "debug", "unknown table"),
        ("build = 3\n", "build", "expected a table, got an integer"),
        ("[[swap]]\n", "swap", "expected a table, got an array"),
    ],
)
def test_bad_table_names_file_and_table(tmp_path: Path, text: str, key: str, reason: str) -> None:
    """An unknown table or a table that is not a table is named in the error."""
    path = write(tmp_path, text + config_text())
    err = load_error(path)
    assert (err.file, err.key, err.reason) == (str(path), key, reason)


def test_missing_app_table_reports_first_required_key(tmp_path: Path) -> None:
    """A file without [app] reports app.name as required."""
    err = load_error(write(tmp_path, '[server]\napp = "wsgi:app"\n'))
    assert (err.key, err.reason) == ("app.name", "required")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that does not exist is a ConfigError naming it, with exit code 2."""
    path = tmp_path / "nope.toml"
    err = load_error(path)
    assert (err.file, err.key, err.reason) == (str(path), "", "no such file")
    assert err.message == f"{path}: no such file"
    assert isinstance(err, UsageError)
    assert err.exit_code == 2


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    """A path that cannot be read as a file is a ConfigError saying so."""
    err = load_error(tmp_path)
    assert err.key == ""
    assert err.reason.startswith("cannot read:")


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    """A syntax error is reported with tomllib's message, which carries the line."""
    path = write(tmp_path, config_text() + "[health]\ntimeout = \n")
    err = load_error(path)
    assert err.key == ""
    assert err.reason.startswith("invalid TOML: ")
    assert "line 8" in err.reason


def test_non_utf8_file_is_invalid_toml(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported as invalid TOML, not as a crash."""
    path = tmp_path / "relman.toml"
    path.write_bytes(b'[app]\nname = "\xff"\n')
    assert load_error(path).reason.startswith("invalid TOML: ")


def test_env_is_a_read_only_mapping(tmp_path: Path) -> None:
    """server.env is a Mapping[str, str] that cannot be changed."""
    config = load_config(write(tmp_path, config_text({"server.env": '{ A = "1" }'})))
    env = config.server.env
    assert isinstance(env, Mapping)
    assert env == {"A": "1"}
    assert list(env.items()) == [("A", "1")]
    with pytest.raises(TypeError):
        env["A"] = "2"  # type: ignore[index]
    assert {**os.environ, **env}["A"] == "1"


def test_config_is_frozen_hashable_and_copyable(tmp_path: Path) -> None:
    """A loaded Config cannot be mutated, and hashes, pickles and deep-copies equal."""
    config = load_config(write(tmp_path, FULL))
    with pytest.raises(AttributeError):
        config.app.name = "other"  # type: ignore[misc]
    assert hash(config) == hash(copy.deepcopy(config))
    assert pickle.loads(pickle.dumps(config)) == config


def test_schema_lists_every_field_with_doc_and_type() -> None:
    """schema() has one row per dataclass field, each with a type name and a doc line."""
    expected = [f"{table}.{f.name}" for table, cls in TABLES.items() for f in fields(cls)]
    expected += [f"processes.NAME.{f.name}" for f in fields(ProcessConfig)]
    expected += [f"fleet.{f.name}" for f in fields(FleetConfig)]
    rows = schema()
    assert [row[0] for row in rows] == expected
    assert len(expected) == 51
    for key, type_name, _default, doc in rows:
        assert type_name, key
        assert doc, key
        assert "\n" not in doc, key


def test_schema_defaults_are_toml_of_the_dataclass_defaults(tmp_path: Path) -> None:
    """Every default in schema() is TOML text that loads back to the field's default."""
    rows = {key: default for key, _type, default, _doc in schema()}
    assert [key for key, default in rows.items() if not default] == [
        "app.name", "app.repo", "app.root", "processes.NAME.command", "fleet.hosts"
    ]
    assert rows["server.socket_mode"] == '"0660"'
    assert rows["health.expect"] == "[200, 399]"
    changes = {key: default for key, default in rows.items()
               if default and not key.startswith(("processes.", "fleet."))}
    changes["server.app"] = '"wsgi:application"'
    config = load_config(write(tmp_path, config_text(changes)))
    assert config.build == BuildConfig()
    assert config.server == ServerConfig(app="wsgi:application")
    assert config.health == HealthConfig()
    process = {key.rpartition(".")[2]: default for key, default in rows.items()
               if key.startswith("processes.NAME.") and default}
    text = config_text(changes) + "[processes.worker]\ncommand = \"run\"\n" + "".join(
        f"{key} = {default}\n" for key, default in process.items())
    assert load_config(write(tmp_path, text)).processes == {
        "worker": ProcessConfig(command=("run",))}
    fleet = {key.rpartition(".")[2]: default for key, default in rows.items()
             if key.startswith("fleet.") and default}
    text = config_text(changes) + "[fleet]\nhosts = [\"web1\"]\n" + "".join(
        f"{key} = {default}\n" for key, default in fleet.items())
    assert load_config(write(tmp_path, text)).fleet == FleetConfig(hosts=("web1",))


def test_tables_follow_config_fields() -> None:
    """TABLES lists Config's tables in file order, without the path."""
    assert list(TABLES) == ["app", "build", "release", "server", "health", "swap", "restart"]
    assert TABLES["server"] is ServerConfig


def test_example_config_loads_with_defaults(tmp_path: Path) -> None:
    """example_config() text loads back with the given values and every other default."""
    text = example_config(name="shop", repo="/srv/git/shop.git", root=Path("/srv/shop"))
    config = load_config(write(tmp_path, text))
    assert config.app == AppConfig(name="shop", repo="/srv/git/shop.git", root=Path("/srv/shop"))
    assert config.server == ServerConfig(app="wsgi:application")
    assert (config.build, config.health) == (BuildConfig(), HealthConfig())
    assert (config.swap, config.restart) == (SwapConfig(), RestartConfig())
    assert config.processes == {}
    for key, _type, _default, doc in schema():
        table, _, name = key.rpartition(".")
        if table == "fleet":  # only `relman fleet` reads it; relman.toml(5) shows it
            assert "[fleet]" not in text
        elif table == "processes.NAME":
            assert f"\n# {name} = " in text
        else:
            assert f"[{table}]" in text
            assert f"\n{name} = " in text
        assert doc in text or table == "fleet"


def test_example_config_process_table_loads_uncommented(tmp_path: Path) -> None:
    """The commented-out [processes.worker] of example_config() loads once uncommented."""
    text = example_config(name="shop", repo="/srv/git/shop.git", root=Path("/srv/shop"))
    head, _, tail = text.partition("# [processes.worker]\n")
    uncommented = head + "[processes.worker]\n" + "".join(
        line.removeprefix("# ") + "\n" for line in tail.splitlines())
    config = load_config(write(tmp_path, uncommented))
    assert config.processes == {
        "worker": ProcessConfig(command=("celery", "-A", "app", "worker"), count=2)}


def test_example_config_quotes_awkward_values(tmp_path: Path) -> None:
    """Quotes, backslashes and non-ASCII in the given values survive the round trip."""
    repo = 'ssh://git@host/r\\e "po" ü.git'
    text = example_config(name="a1", repo=repo, root=Path("/srv/ä b"), app="pkg.mod:make_app()")
    config = load_config(write(tmp_path, text))
    assert (config.app.repo, config.app.root, config.server.app) == (
        repo, Path("/srv/ä b"), "pkg.mod:make_app()"
    )
    assert tomllib.loads(text)["app"]["repo"] == repo


# find_config ----------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """A working directory and an etc directory, both empty."""
    cwd, etc = tmp_path / "cwd", tmp_path / "etc"
    cwd.mkdir()
    etc.mkdir()
    return cwd, etc


def test_find_config_prefers_the_cli_path(places: tuple[Path, Path]) -> None:
    """--config wins over $RELMAN_CONFIG, --app, ./relman.toml and etc."""
    cwd, etc = places
    for path in (cwd / "relman.toml", cwd / "given.toml", cwd / "env.toml", etc / "shop.toml"):
        path.touch()
    env = {"RELMAN_CONFIG": str(cwd / "env.toml")}
    assert find_config("given.toml", env, "shop", cwd, etc) == cwd / "given.toml"
    assert find_config(str(etc / "shop.toml"), env, None, cwd, etc) == etc / "shop.toml"


def test_find_config_uses_env_before_app(places: tuple[Path, Path]) -> None:
    """$RELMAN_CONFIG wins over --app; an empty one is ignored."""
    cwd, etc = places
    (cwd / "env.toml").touch()
    (etc / "shop.toml").touch()
    assert find_config(None, {"RELMAN_CONFIG": "env.toml"}, "shop", cwd, etc) == cwd / "env.toml"
    assert find_config(None, {"RELMAN_CONFIG": ""}, "shop", cwd, etc) == etc / "shop.toml"


def test_find_config_uses_app_before_cwd(places: tuple[Path, Path]) -> None:
    """--app NAME picks <etc>/NAME.toml even when ./relman.toml exists."""
    cwd, etc = places
    (cwd / "relman.toml").touch()
    (etc / "shop.toml").touch()
    (etc / "blog.toml").touch()
    assert find_config(None, {}, "blog", cwd, etc) == etc / "blog.toml"


def test_find_config_uses_cwd_before_etc(places: tuple[Path, Path]) -> None:
    """./relman.toml wins over the only file in etc."""
    cwd, etc = places
    (cwd / "relman.toml").touch()
    (etc / "shop.toml").touch()
    assert find_config(None, {}, None, cwd, etc) == cwd / "relman.toml"


def test_find_config_falls_back_to_the_only_etc_file(places: tuple[Path, Path]) -> None:
    """With nothing else given, the only *.toml file in etc is used."""
    cwd, etc = places
    (etc / "shop.toml").touch()
    (etc / "README").touch()
    assert find_config(None, {}, None, cwd, etc) == etc / "shop.toml"


@pytest.mark.parametrize(
    ("cli", "env", "app", "missing", "source"),
    [
        ("gone.toml", {}, None, "cwd/gone.toml", "--config"),
        (None, {"RELMAN_CONFIG": "gone.toml"}, None, "cwd/gone.toml", "$RELMAN_CONFIG"),
        (None, {}, "gone", "etc/gone.toml", "--app"),
    ],
)
def test_find_config_names_a_missing_named_file(
    places: tuple[Path, Path], cli: str | None, env: dict[str, str], app: str | None,
    missing: str, source: str,
) -> None:
    """A file named by --config, $RELMAN_CONFIG or --app that does not exist is an error."""
    cwd, etc = places
    (cwd / "relman.toml").touch()
    with pytest.raises(ConfigError) as info:
        find_config(cli, env, app, cwd, etc)
    assert info.value.file == str(cwd.parent / missing)
    assert info.value.reason == f"no such file (named by {source})"


def test_find_config_rejects_an_app_name_that_is_a_path(places: tuple[Path, Path]) -> None:
    """--app ../x cannot escape the etc directory."""
    cwd, etc = places
    with pytest.raises(ConfigError, match=r"must match"):
        find_config(None, {}, "../cwd/relman", cwd, etc)


def test_find_config_reports_what_it_tried(places: tuple[Path, Path]) -> None:
    """With no config anywhere, the error says how to name one and where it looked."""
    cwd, etc = places
    with pytest.raises(ConfigError) as info:
        find_config(None, {}, None, cwd, etc)
    reason = info.value.reason
    assert reason.startswith(
        "no config found: pass --config PATH or --app NAME, or set RELMAN_CONFIG"
    )
    assert str(cwd / "relman.toml") in reason
    assert f"{etc}/*.toml" in reason
    assert info.value.file == "relman.toml"


def test_find_config_refuses_to_guess_between_etc_files(places: tuple[Path, Path]) -> None:
    """Two files in etc are not a choice find_config makes: the error lists them."""
    cwd, etc = places
    (etc / "shop.toml").touch()
    (etc / "blog.toml").touch()
    with pytest.raises(ConfigError, match=r"no config found: .*holds 2: blog.toml, shop.toml"):
        find_config(None, {}, None, cwd, etc)


def test_find_config_tolerates_a_missing_etc_dir(places: tuple[Path, Path]) -> None:
    """A host without /etc/relman still gets the 'no config found' error."""
    cwd, etc = places
    with pytest.raises(ConfigError, match=r"^relman.toml: no config found"):
        find_config(None, {}, None, cwd, etc / "absent")
