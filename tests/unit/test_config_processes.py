"""[processes.NAME] tables and `[server] kind = "none"` in relman.toml (DESIGN section 8)."""

from __future__ import annotations

import copy
import pickle
import signal
from pathlib import Path

import pytest

from relman.config import Config, ProcessConfig, ServerConfig, load_config
from relman.errors import ConfigError

APP = '[app]\nname = "shop"\nrepo = "/srv/git/shop.git"\nroot = "/srv/shop"\n'
SERVER = '[server]\napp = "wsgi:application"\n'


def load(tmp_path: Path, text: str, server: str = SERVER) -> Config:
    path = tmp_path / "relman.toml"
    path.write_text(APP + server + text, encoding="utf-8")
    return load_config(path)


def load_error(tmp_path: Path, text: str, server: str = SERVER) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, server)
    err = info.value
    assert err.file == str(tmp_path / "relman.toml")
    assert err.exit_code == 2
    assert "\n" not in err.message
    return err


def test_processes_load_in_file_order_with_defaults(tmp_path: Path) -> None:
    """Each [processes.NAME] table becomes a ProcessConfig, in file order, defaults filled."""
    config = load(tmp_path, """
[processes.worker]
command = "celery -A shop worker --workdir {release}"
count = 3
stop_signal = "QUIT"
stop_timeout = 60
handover = "overlap"
start_seconds = 0

[processes.beat]
command = ["celery", "-A", "shop", "beat", "--schedule", "{root}/shared/beat"]
""")
    assert list(config.processes) == ["worker", "beat"]
    assert config.processes["worker"] == ProcessConfig(
        command=("celery", "-A", "shop", "worker", "--workdir", "{release}"), count=3,
        stop_signal="QUIT", stop_timeout=60.0, handover="overlap", start_seconds=0.0)
    beat = config.processes["beat"]
    assert beat.command[-1] == "{root}/shared/beat"
    assert (beat.count, beat.stop_signal, beat.stop_timeout, beat.handover,
            beat.start_seconds) == (1, "TERM", 30.0, "stop-first", 1.0)
    assert beat.signal is signal.SIGTERM
    assert config.processes["worker"].signal is signal.SIGQUIT


def test_no_processes_is_an_empty_read_only_mapping(tmp_path: Path) -> None:
    """Without [processes] the mapping is empty; it cannot be changed."""
    config = load(tmp_path, "")
    assert config.processes == {}
    with pytest.raises(TypeError):
        config.processes["x"] = None


def test_config_with_processes_hashes_pickles_and_copies(tmp_path: Path) -> None:
    """A Config with processes stays frozen, hashable, picklable and deep-copyable."""
    config = load(tmp_path, '[processes.worker]\ncommand = "run"\ncount = 0\n')
    assert hash(config) == hash(copy.deepcopy(config))
    assert pickle.loads(pickle.dumps(config)) == config
    assert config.processes["worker"].count == 0


@pytest.mark.parametrize("name", ["a", "worker", "celery-beat", "q_2", "x9-y_z"])
def test_process_names(tmp_path: Path, name: str) -> None:
    """Names matching [a-z][a-z0-9_-]* are accepted."""
    config = load(tmp_path, f'[processes.{name}]\ncommand = "run"\n')
    assert list(config.processes) == [name]


BAD: list[tuple[str, str, str]] = [
    ('[processes.worker]\ncommand = "run"\ncuont = 2\n', "processes.worker.cuont",
     "unknown key (did you mean 'count'?)"),
    ('[processes.web]\ncommand = "run"\n', "processes.web", '"web" is the [server]'),
    ('[processes.Worker]\ncommand = "run"\n', "processes.Worker",
     "a process name must match [a-z][a-z0-9_-]*"),
    ('[processes.2nd]\ncommand = "run"\n', "processes.2nd", "must match"),
    ('[processes."a.b"]\ncommand = "run"\n', "processes.a.b", "must match"),
    ('[processes."-x"]\ncommand = "run"\n', "processes.-x", "must match"),
    ('[processes.worker]\ncount = 2\n', "processes.worker.command", "required"),
    ('[processes.worker]\ncommand = ""\n', "processes.worker.command", "empty command"),
    ('[processes.worker]\ncommand = []\n', "processes.worker.command", "empty command"),
    ('[processes.worker]\ncommand = 5\n', "processes.worker.command",
     "expected a string or an array of strings, got an integer"),
    ('[processes.worker]\ncommand = "run {socket}"\n', "processes.worker.command",
     "unknown placeholder {socket}"),
    ('[processes.worker]\ncommand = "run {port}"\n', "processes.worker.command",
     "unknown placeholder {port}"),
    ('[processes.worker]\ncommand = "run {"\n', "processes.worker.command", "literal brace"),
    ("[processes.worker]\ncommand = \"run 'x\"\n", "processes.worker.command",
     "No closing quotation"),
    ('[processes.worker]\ncommand = "run"\ncount = -1\n', "processes.worker.count",
     "must be at least 0"),
    ('[processes.worker]\ncommand = "run"\ncount = 1.5\n', "processes.worker.count",
     "expected an integer, got a float"),
    ('[processes.worker]\ncommand = "run"\nstop_signal = "KILL"\n',
     "processes.worker.stop_signal",
     "must be one of TERM | INT | QUIT | HUP | USR1 | USR2, not 'KILL'"),
    ('[processes.worker]\ncommand = "run"\nstop_signal = "SIGTERM"\n',
     "processes.worker.stop_signal", "write 'TERM', without SIG"),
    ('[processes.worker]\ncommand = "run"\nstop_signal = "term"\n',
     "processes.worker.stop_signal", "must be one of"),
    ('[processes.worker]\ncommand = "run"\nstop_signal = 15\n',
     "processes.worker.stop_signal", "expected a string, got an integer"),
    ('[processes.worker]\ncommand = "run"\nstop_timeout = 0\n', "processes.worker.stop_timeout",
     "must be a finite number above 0"),
    ('[processes.worker]\ncommand = "run"\nstop_timeout = inf\n',
     "processes.worker.stop_timeout", "must be a finite number above 0"),
    ('[processes.worker]\ncommand = "run"\nstart_seconds = -1\n',
     "processes.worker.start_seconds", "must be at least 0"),
    ('[processes.worker]\ncommand = "run"\nhandover = "rolling"\n', "processes.worker.handover",
     "must be one of stop-first | overlap, not 'rolling'"),
    ("[processes]\nworker = 3\n", "processes.worker", "expected a table, got an integer"),
    ('[processes]\nworker = "celery worker"\n', "processes.worker",
     "expected a table, got a string"),
    ("[[processes.worker]]\ncommand = \"run\"\n", "processes.worker",
     "expected a table, got an array"),
    ("[proceses.worker]\ncommand = \"run\"\n", "proceses",
     "unknown table (did you mean 'processes'?)"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD, ids=[key for _, key, _ in BAD])
def test_bad_process_table_names_the_key(tmp_path: Path, text: str, key: str,
                                         reason: str) -> None:
    """A bad [processes.NAME] table is a one-line ConfigError naming the dotted key."""
    err = load_error(tmp_path, text)
    assert err.key == key
    assert reason in err.reason


def test_processes_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    """`processes = 3` at the top level is an error naming processes."""
    path = tmp_path / "relman.toml"
    path.write_text("processes = 3\n" + APP + SERVER)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.key, err.reason) == (
        "processes", "expected a table of [processes.NAME] tables, got an integer")


def test_kind_none_needs_no_server_keys(tmp_path: Path) -> None:
    """kind = "none": no app, and env and env_file still apply (to the processes)."""
    config = load(tmp_path, '[processes.bot]\ncommand = "python -m bot"\n',
                  server='[server]\nkind = "none"\nenv = { A = "1" }\nenv_file = "bot.env"\n')
    assert config.server == ServerConfig(
        kind="none", env={"A": "1"}, env_file="bot.env")
    assert list(config.processes) == ["bot"]


def test_kind_none_without_processes_is_allowed(tmp_path: Path) -> None:
    """An app of kind "none" with no processes loads: it runs nothing (documented)."""
    config = load(tmp_path, "", server='[server]\nkind = "none"\n')
    assert config.processes == {}


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ('app = "wsgi:application"', "server.app"),
        ('wsgi_file = "wsgi.py"', "server.wsgi_file"),
        ('command = "serve {socket}"', "server.command"),
        ("workers = 4", "server.workers"),
        ('args = ["--preload"]', "server.args"),
        ('socket_mode = "0600"', "server.socket_mode"),
        ('socket_group = "www-data"', "server.socket_group"),
        ('protocol = "uwsgi"', "server.protocol"),
    ],
)
def test_kind_none_rejects_web_server_keys(tmp_path: Path, server: str, key: str) -> None:
    """With kind = "none" a key only a web server uses is an error naming it."""
    err = load_error(tmp_path, "", server=f'[server]\nkind = "none"\n{server}\n')
    assert err.key == key
    assert "kind = " in err.reason
