"""Releases carry their settings: JSON round trip, env hashes, diffs, the manifest field and
the store's key, record and fallback (DESIGN section 8)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relman.config import Config, load_config
from relman.releases import AppRoot, registry
from relman.releases.registry import Manifest, ReleaseState
from relman.releases.store import KEY_BYTES, ReleaseStore
from relman.settings import (
    Settings,
    env_hash,
    settings_diff,
    settings_from_json,
    settings_of,
    settings_to_json,
)

KEY = bytes(range(32))
SECRET = "s3cret-Value_9"
RID = "20261123T031500Z-1a2b3c4"

FULL = """
[app]
name = "shop"
repo = "/srv/git/shop.git"
root = "{root}"

[server]
kind = "uwsgi"
wsgi_file = "wsgi.py"
protocol = "uwsgi"
workers = 8
args = ["--harakiri", "30"]
env = {{ API_KEY = "{secret}", EMPTY = "", "ÜNI" = "ä b" }}
env_file = "app.env"
socket_mode = "640"
socket_group = "www-data"

[health]
path = "/healthz"
expect = [200, 204]
timeout = 12.5
nginx_url = "http://127.0.0.1/"
nginx_host = "shop.example.com"

[processes.worker]
command = "celery -A shop worker --workdir {{release}}"
count = 3
stop_signal = "QUIT"
stop_timeout = 60
handover = "overlap"
start_seconds = 0

[processes.beat]
command = ["celery", "beat", "-s", "{{root}}/shared/beat"]
count = 0

[static]
"/static/" = "staticfiles"
"/assets/img/" = "frontend/dist/img/"
"""


def config_at(tmp_path: Path, text: str = FULL, name: str = "relman.toml", **fmt: str) -> Config:
    path = tmp_path / name
    path.write_text(text.format(root=tmp_path / "root", secret=SECRET, **fmt))
    return load_config(path)


def minimal(tmp_path: Path, extra: str = "", name: str = "min.toml") -> Config:
    text = (f'[app]\nname = "shop"\nrepo = "/srv/git/shop.git"\nroot = "{tmp_path / "root"}"\n'
            f'[server]\napp = "app:application"\n{extra}')
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def test_settings_round_trip_through_json(tmp_path: Path) -> None:
    """What settings_to_json() writes, through JSON text, reads back equal."""
    config = config_at(tmp_path)
    data = json.loads(json.dumps(settings_to_json(settings_of(config), KEY), sort_keys=True))
    assert settings_from_json(data, config) == settings_of(config)


def test_default_settings_round_trip(tmp_path: Path) -> None:
    """A config with every default (and no processes) round-trips too."""
    config = minimal(tmp_path)
    data = json.loads(json.dumps(settings_to_json(settings_of(config), KEY)))
    assert settings_from_json(data, config) == settings_of(config)
    assert data["processes"] == {}
    assert data["server"]["env"] == {}


def test_settings_json_is_the_config_files_spelling(tmp_path: Path) -> None:
    """Plain JSON: lists, the mode as its octal string, numbers as numbers."""
    data = settings_to_json(settings_of(config_at(tmp_path)), KEY)
    assert data["server"]["socket_mode"] == "0640"
    assert data["server"]["args"] == ["--harakiri", "30"]
    assert data["health"]["expect"] == [200, 204]
    assert data["processes"]["worker"] == {
        "command": ["celery", "-A", "shop", "worker", "--workdir", "{release}"], "count": 3,
        "stop_signal": "QUIT", "stop_timeout": 60.0, "handover": "overlap",
        "start_seconds": 0.0}
    assert list(data["processes"]) == ["worker", "beat"]
    assert data["static"] == {"/static/": "staticfiles", "/assets/img/": "frontend/dist/img/"}
    assert set(data) == {"server", "health", "processes", "static"}
    json.dumps(data, allow_nan=False)  # nothing that is not JSON


def test_env_values_are_stored_as_keyed_hashes(tmp_path: Path) -> None:
    """Each server.env value becomes hmac-sha256:<16 hex> under the key, never the value."""
    data = settings_to_json(settings_of(config_at(tmp_path)), KEY)
    env = data["server"]["env"]
    assert set(env) == {"API_KEY", "EMPTY", "ÜNI"}
    expected = hmac.new(KEY, SECRET.encode(), hashlib.sha256).hexdigest()[:16]
    assert env["API_KEY"] == f"hmac-sha256:{expected}"
    assert all(re.fullmatch(r"hmac-sha256:[0-9a-f]{16}", h) for h in env.values())
    assert SECRET not in json.dumps(data)
    assert env_hash(SECRET, KEY) != env_hash(SECRET, bytes(32))  # keyed
    assert env_hash(SECRET, KEY) == env_hash(SECRET, KEY)  # stable under one key


def test_env_values_come_from_the_config(tmp_path: Path) -> None:
    """Only hashes are stored: the env read back is the config's, whatever was stored."""
    stored = settings_to_json(settings_of(config_at(tmp_path)), KEY)
    other = minimal(tmp_path, 'env = { API_KEY = "new", ONLY_HERE = "1" }\n')
    settings = settings_from_json(stored, other)
    assert dict(settings.server.env) == {"API_KEY": "new", "ONLY_HERE": "1"}
    assert settings.server.workers == 8  # the rest is the stored settings'
    assert list(settings.processes) == ["worker", "beat"]


def _stored(tmp_path: Path) -> dict[str, Any]:
    return json.loads(json.dumps(settings_to_json(settings_of(config_at(tmp_path)), KEY)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["server"].update(workers=0), "server.workers: must be between 1 and 512"),
        (lambda d: d["server"].update(wrokers=2), "server.wrokers: unknown key"),
        (lambda d: d["server"].update(socket_mode=416), "server.socket_mode: expected a string"),
        (lambda d: d["server"].update(kind="gunicorn"), "server.app: required"),
        (lambda d: d["health"].update(expect=[200]), "health.expect: must be [low, high]"),
        (lambda d: d["processes"].update(web={"command": ["x"]}), "processes.web: "),
        (lambda d: d["processes"]["worker"].update(count=-1), "processes.worker.count: must"),
        (lambda d: d["processes"]["worker"].pop("command"), "processes.worker.command: required"),
        (lambda d: d.update(processes=[]), "processes: expected a table"),
        (lambda d: d.pop("health"), "health: missing table"),
        (lambda d: d.update(swap={}), "swap: unknown table"),
        (lambda d: d["static"].update({"/x": "x"}), 'static."/x": a URL prefix must'),
        (lambda d: d["static"].update({"/y/": "/abs"}), 'static."/y/": \'/abs\' must be'),
    ],
)
def test_unreadable_settings_raise_value_error(tmp_path: Path, change: Any,
                                               message: str) -> None:
    """Stored settings are checked as the config file is: a ValueError names the key."""
    data = _stored(tmp_path)
    change(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        settings_from_json(data, config_at(tmp_path))


def test_settings_without_static_take_the_configs(tmp_path: Path) -> None:
    """A manifest recorded before [static] existed has no static table: today's counts."""
    data = _stored(tmp_path)
    del data["static"]
    config = config_at(tmp_path)
    assert settings_from_json(data, config).static == config.static
    assert dict(config.static) == {"/static/": "staticfiles",
                                   "/assets/img/": "frontend/dist/img/"}


def test_settings_keep_their_own_static(tmp_path: Path) -> None:
    """A release's stored [static] wins over today's config."""
    data = _stored(tmp_path)
    data["static"] = {"/old/": "old"}
    assert dict(settings_from_json(data, config_at(tmp_path)).static) == {"/old/": "old"}


def test_settings_that_are_not_an_object_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        settings_from_json([], config_at(tmp_path))  # type: ignore[arg-type]


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of *data* with the dotted *path* set to *value* (... deletes it)."""
    copy = json.loads(json.dumps(data))
    *tables, last = path.split(".")
    node = copy
    for name in tables:
        node = node[name]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return copy


BASE: dict[str, Any] = {
    "server": {"kind": "gunicorn", "workers": 2, "args": [], "socket_mode": "0660",
               "env": {"API_KEY": "hmac-sha256:0000000000000000", "OLD": "hmac-sha256:1"}},
    "health": {"expect": [200, 399], "timeout": 30.0},
    "processes": {"worker": {"command": ["celery", "worker"], "count": 2},
                  "bot": {"command": ["bot"], "count": 1}},
}


@pytest.mark.parametrize(
    ("new", "lines"),
    [
        (BASE, []),
        (_with(BASE, "server.workers", 4), ["server.workers 2 -> 4"]),
        (_with(BASE, "processes.worker.count", 3), ["processes.worker.count 2 -> 3"]),
        (_with(BASE, "processes.beat", {"command": ["beat"]}), ["processes.beat added"]),
        (_with(BASE, "processes.bot", ...), ["processes.bot removed"]),
        (_with(BASE, "server.env.API_KEY", "hmac-sha256:ffffffffffffffff"),
         ["server.env.API_KEY changed"]),
        (_with(BASE, "server.env.NEW", "hmac-sha256:2"), ["server.env.NEW added"]),
        (_with(BASE, "server.env.OLD", ...), ["server.env.OLD removed"]),
        (_with(BASE, "server.args", ["--preload", "-t", "60"]),
         ['server.args [] -> ["--preload", "-t", "60"]']),
        (_with(BASE, "processes.worker.command", ["celery", "-A", "x", "worker"]),
         ['processes.worker.command ["celery", "worker"] -> ["celery", "-A", "x", "worker"]']),
        (_with(BASE, "health.expect", [200, 299]), ["health.expect [200, 399] -> [200, 299]"]),
        (_with(BASE, "server.kind", "uwsgi"), ['server.kind "gunicorn" -> "uwsgi"']),
        (_with(BASE, "server.socket_group", "www-data"),
         ['server.socket_group (unset) -> "www-data"']),
        (_with(BASE, "health.timeout", 30), []),  # 30 == 30.0: no change
        (_with(_with(_with(BASE, "server.workers", 4), "processes.bot", ...),
               "server.env.API_KEY", "hmac-sha256:f"),
         ["processes.bot removed", "server.env.API_KEY changed", "server.workers 2 -> 4"]),
    ],
)
def test_settings_diff_lines(new: dict[str, Any], lines: list[str]) -> None:
    """settings_diff() gives sorted, dotted lines; env values never appear."""
    assert settings_diff(BASE, new) == lines
    assert all("hmac" not in line for line in settings_diff(BASE, new))


def test_settings_diff_of_real_configs(tmp_path: Path) -> None:
    """Between two configs' settings, under one key, only what changed shows."""
    a = settings_to_json(settings_of(minimal(tmp_path, 'workers = 2\nenv = { K = "1" }\n'
                                             '[processes.worker]\ncommand = "w"\ncount = 2\n')),
                         KEY)
    b = settings_to_json(settings_of(minimal(tmp_path, 'workers = 4\nenv = { K = "2" }\n'
                                             '[processes.worker]\ncommand = "w"\ncount = 3\n'
                                             '[processes.beat]\ncommand = "b"\n', "b.toml")),
                         KEY)
    assert settings_diff(a, b) == ["processes.beat added", "processes.worker.count 2 -> 3",
                                   "server.env.K changed", "server.workers 2 -> 4"]
    assert settings_diff(b, a)[0] == "processes.beat removed"


# The manifest field ------------------------------------------------------------------


def test_old_manifest_without_settings_loads() -> None:
    """A manifest from before settings were recorded loads with settings {}."""
    old = {"id": RID, "ref": "v1", "sha": "1a2b3c4", "who": "ann", "created": 1.0,
           "state": "built", "known_good": True, "deps_hash": "", "venv": "",
           "timings": {}, "error": "", "last_live": 0.0}
    manifest = Manifest.from_json(old)
    assert manifest.settings == {}
    assert manifest.to_json()["settings"] == {}
    assert Manifest.from_json({**old, "settings": "garbage"}).settings == {}


def test_manifest_settings_round_trip(tmp_path: Path) -> None:
    """Settings saved in a manifest load back equal."""
    root = AppRoot(tmp_path / "root")
    root.create()
    data = settings_to_json(settings_of(config_at(tmp_path)), KEY)
    registry.save(root, Manifest(id=RID, ref="v1", sha="1a2b3c4", who="t", created=1.0,
                                 settings=data))
    loaded = registry.load(root, RID)
    assert loaded is not None
    assert loaded.settings == json.loads(json.dumps(data))


# The store ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ReleaseStore:
    config = config_at(tmp_path)
    AppRoot(config.app.root).create()
    return ReleaseStore(config)


def built(store: ReleaseStore, rid: str = RID) -> Manifest:
    return store.save(Manifest(id=rid, ref="v1", sha=rid.split("-")[1], who="t",
                               created=time.time(), state=ReleaseState.BUILT))


def test_settings_key_is_made_once_private(store: ReleaseStore) -> None:
    """state/settings.key: 32 random bytes, mode 0600, the same on every call."""
    key = store.settings_key()
    path = store.root.settings_key
    assert len(key) == KEY_BYTES
    assert path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.settings_key() == key
    assert ReleaseStore(store.config).settings_key() == key


@pytest.mark.parametrize("bad", [b"", b"short", b"x" * 33])
def test_unreadable_settings_key_is_set_aside_and_replaced(store: ReleaseStore,
                                                           bad: bytes) -> None:
    """A key of the wrong size is set aside (kept for a post-mortem) and a new one made."""
    path = store.root.settings_key
    path.write_bytes(bad)
    key = store.settings_key()
    assert len(key) == KEY_BYTES
    assert path.read_bytes() == key
    (aside,) = path.parent.glob("settings.key.corrupt-*")
    assert aside.read_bytes() == bad


def test_settings_key_directory_is_set_aside(store: ReleaseStore) -> None:
    store.root.settings_key.mkdir()
    assert len(store.settings_key()) == KEY_BYTES


def test_record_settings_saves_and_diffs(store: ReleaseStore, tmp_path: Path) -> None:
    """The first record returns no changes; a changed config returns the diff lines."""
    manifest, changes = store.record_settings(built(store))
    assert changes == []
    assert manifest.settings == settings_to_json(settings_of(store.config),
                                                 store.settings_key())
    on_disk = store.get(RID)
    assert on_disk.settings == json.loads(json.dumps(manifest.settings))
    assert store.record_settings(on_disk) == (on_disk, [])  # unchanged: nothing to say
    changed = config_at(tmp_path, FULL.replace("workers = 8", "workers = 4")
                        .replace("count = 3", "count = 2"), name="b.toml")
    manifest, changes = store.record_settings(on_disk, changed)
    assert changes == ["processes.worker.count 3 -> 2", "server.workers 8 -> 4"]
    assert store.get(RID).settings["server"]["workers"] == 4


def test_no_env_value_appears_in_the_manifest_file(store: ReleaseStore) -> None:
    """The manifest file text holds hashes of server.env values, never a value."""
    store.record_settings(built(store))
    text = store.root.manifest(RID).read_text()
    assert "API_KEY" in text
    assert SECRET not in text
    assert "ä b" not in text
    assert "\\u00e4 b" not in text


def test_store_settings_prefers_the_manifests(store: ReleaseStore, tmp_path: Path) -> None:
    """settings(): the recorded settings, else the config's (an old or unreadable record)."""
    old = config_at(tmp_path, FULL.replace("workers = 8", "workers = 3"), name="old.toml")
    manifest, _ = store.record_settings(built(store), old)
    assert store.settings(manifest).server.workers == 3
    assert store.settings(manifest).server.env == store.config.server.env
    assert store.settings(replace(manifest, settings={})) == settings_of(store.config)
    broken = _with(dict(manifest.settings), "server.workers", 0)
    assert store.settings(replace(manifest, settings=broken)) == settings_of(store.config)
    assert isinstance(store.settings(manifest), Settings)
