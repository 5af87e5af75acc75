"""[fleet] (DESIGN 9): every rule, a fleet-only config, and the ssh command line per host."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from relman.config import example_config, load_config
from relman.config_fleet import FleetConfig, Host, parse_host
from relman.config_values import BadValue
from relman.errors import ConfigError
from relman.fleet.config import load_fleet_config
from relman.fleet.ssh import ssh_argv

HOSTS = '["deploy@web1", "deploy@web2:2222", "web3"]'


def write(tmp_path: Path, fleet: str, app: str = 'name = "shop"') -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(f"[app]\n{app}\n\n[fleet]\n{fleet}\n")
    return path


def error(tmp_path: Path, fleet: str, app: str = 'name = "shop"') -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_fleet_config(write(tmp_path, fleet, app))
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_fleet_only_config_needs_app_name_and_fleet(tmp_path: Path) -> None:
    loaded = load_fleet_config(write(tmp_path, f"hosts = {HOSTS}"))
    assert loaded.app_name == "shop"
    assert loaded.fleet == FleetConfig(hosts=("deploy@web1", "deploy@web2:2222", "web3"))


def test_every_key_is_read(tmp_path: Path) -> None:
    fleet = load_fleet_config(write(tmp_path, f"""hosts = {HOSTS}
ssh = ["ssh", "-F", "ci_config"]
app = "shop"
strategy = "rolling"
batch = 2
canary = 2
canary_seconds = 5
parallel = 3
release_host = "deploy@web2:2222"
""")).fleet
    assert (fleet.ssh, fleet.app, fleet.strategy, fleet.batch, fleet.canary,
            fleet.canary_seconds, fleet.parallel, fleet.release_host) == (
        ("ssh", "-F", "ci_config"), "shop", "rolling", 2, 2, 5.0, 3, "deploy@web2:2222")


@pytest.mark.parametrize(("fleet", "key", "reason"), [
    ("", "fleet.hosts", "required"),
    ("hosts = []", "fleet.hosts", "at least one host"),
    ('hosts = "web1"', "fleet.hosts", "expected an array of strings"),
    ('hosts = ["deploy@web1", "deploy@web1"]', "fleet.hosts", "listed twice"),
    ('hosts = ["deploy@[::1]:22", "deploy@::1:22"]', "fleet.hosts", "not user@host"),
    ('hosts = ["-oProxyCommand=x"]', "fleet.hosts", "not user@host"),
    ('hosts = ["deploy@"]', "fleet.hosts", "not user@host"),
    ('hosts = ["a b"]', "fleet.hosts", "not user@host"),
    ('hosts = ["web1:0"]', "fleet.hosts", "between 1 and 65535"),
    ('hosts = ["web1:65536"]', "fleet.hosts", "between 1 and 65535"),
    ('hosts = ["web1:x"]', "fleet.hosts", "not user@host"),
    ('hosts = ["web1"]\nssh = []', "fleet.ssh", "must not be empty"),
    ('hosts = ["web1"]\nssh = ""', "fleet.ssh", "must not be empty"),
    ('hosts = ["web1"]\nstrategy = "all"', "fleet.strategy", "together | rolling"),
    ('hosts = ["web1"]\nbatch = 0', "fleet.batch", "at least 1"),
    ('hosts = ["web1"]\nbatch = 1.5', "fleet.batch", "expected an integer"),
    ('hosts = ["web1", "web2"]\ncanary = 2', "fleet.canary", "between 0 and 1"),
    ('hosts = ["web1"]\ncanary = -1', "fleet.canary", "between 0 and 0"),
    ('hosts = ["web1"]\ncanary_seconds = -1', "fleet.canary_seconds", "at least 0"),
    ('hosts = ["web1"]\nparallel = 0', "fleet.parallel", "at least 1"),
    ('hosts = ["web1"]\nrelease_host = "web2"', "fleet.release_host", "not one of fleet.hosts"),
    ('hosts = ["web1"]\napp = "-x"', "fleet.app", "must not start with -"),
    ('hosts = ["web1"]\nhost = "web1"', "fleet.host", "unknown key (did you mean 'hosts'?)"),
])
def test_bad_fleet_values_name_the_key(tmp_path: Path, fleet: str, key: str,
                                       reason: str) -> None:
    e = error(tmp_path, fleet)
    assert e.key == key
    assert reason in e.reason


@pytest.mark.parametrize(("app", "key", "reason"), [
    ("", "app.name", "required"),
    ('name = "Shop"', "app.name", "must match"),
    ('name = "shop"\nkeep = 2', "app.keep", "unknown key"),
    ('name = "shop"\nkeep_releases = "2"', "app.keep_releases", "expected an integer"),
])
def test_a_fleet_only_config_checks_its_app_table(tmp_path: Path, app: str, key: str,
                                                  reason: str) -> None:
    e = error(tmp_path, 'hosts = ["web1"]', app)
    assert (e.key, reason in e.reason) == (key, True)


def test_without_a_fleet_table_it_is_no_fleet_config(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('[app]\nname = "shop"\n')
    with pytest.raises(ConfigError, match="fleet: required"):
        load_fleet_config(path)


def test_a_host_config_with_fleet_is_validated_in_full(tmp_path: Path) -> None:
    """A file with a host's tables is a host's config: its rules all hold (here the
    gunicorn server needs server.app), and so a fleet-only config never weakens them."""
    host = '"/srv/git/shop.git"\nroot = "/srv/shop"'
    path = write(tmp_path, 'hosts = ["web1"]', f'name = "shop"\nrepo = {host}')
    with pytest.raises(ConfigError) as caught:
        load_fleet_config(path)
    assert caught.value.key == "server.app"
    path.write_text(path.read_text() + '\n[server]\napp = "wsgi:app"\n')
    assert load_fleet_config(path).fleet.hosts == ("web1",)
    assert load_config(path).fleet == FleetConfig(hosts=("web1",))


def test_a_host_config_still_needs_its_tables(tmp_path: Path) -> None:
    """load_config() of a fleet-only file: repo and root are still required there."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, 'hosts = ["web1"]'))
    assert caught.value.key == "app.repo"


def test_load_config_checks_a_fleet_table(tmp_path: Path) -> None:
    text = example_config(name="shop", repo="/srv/git/shop.git", root=Path("/srv/shop"))
    assert "[fleet]" not in text
    path = tmp_path / "relman.toml"
    path.write_text(text + '\n[fleet]\nhosts = ["web1"]\nbatch = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "fleet.batch"


@pytest.mark.parametrize(("text", "host"), [
    ("deploy@web1", Host("deploy@web1", None)),
    ("deploy@web1:2222", Host("deploy@web1", 2222)),
    ("web1", Host("web1", None)),  # an alias from ~/.ssh/config: ssh finds the user there
    ("web1.example.com:22", Host("web1.example.com", 22)),
    ("deploy@127.0.0.1:65535", Host("deploy@127.0.0.1", 65535)),
    ("deploy@[::1]:2222", Host("deploy@::1", 2222)),
    ("[fe80::1]", Host("fe80::1", None)),
    ("ci.deploy@web_1", Host("ci.deploy@web_1", None)),
])
def test_parse_host(text: str, host: Host) -> None:
    assert parse_host(text) == host


@pytest.mark.parametrize("text", ["", "@web1", "deploy@", "-web1", "deploy@-web1", "web1:",
                                  "a@b@c", "web1 ", "deploy@web1:2222:1", "::1"])
def test_parse_host_refuses(text: str) -> None:
    with pytest.raises(BadValue):
        parse_host(text)


SSH = ("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
       "-o", "ServerAliveCountMax=4")


@pytest.mark.parametrize(("host", "app", "args", "argv"), [
    ("deploy@web1", "", ["deploy", "v1"],
     [*SSH, "--", "deploy@web1", "relman deploy v1"]),
    ("deploy@web2:2222", "", ["status"],
     [*SSH, "-p", "2222", "--", "deploy@web2", "relman status"]),
    ("web3", "shop", ["deploy", "v1", "--prepare"],
     [*SSH, "--", "web3", "relman --app shop deploy v1 --prepare"]),
    ("deploy@[::1]:22", "", ["switch", "r1"],
     [*SSH, "-p", "22", "--", "deploy@::1", "relman switch r1"]),
    ("web1", "", ["deploy", "v1; rm -rf ~"],
     [*SSH, "--", "web1", "relman deploy 'v1; rm -rf ~'"]),
    ("web1", "", ["deploy", "it's $HOME"],
     [*SSH, "--", "web1", "relman deploy 'it'\"'\"'s $HOME'"]),
    ("web1", "", ["deploy", ""], [*SSH, "--", "web1", "relman deploy ''"]),
])
def test_ssh_argv(host: str, app: str, args: list[str], argv: list[str]) -> None:
    fleet = FleetConfig(hosts=(host,), app=app)
    assert ssh_argv(fleet, host, args) == argv
    assert shlex.split(argv[-1]) == ["relman", *(["--app", app] if app else []), *args]


def test_ssh_argv_uses_the_configured_ssh() -> None:
    fleet = FleetConfig(hosts=("web1:2200",), ssh=("ssh", "-F", "/ci/ssh config"))
    assert ssh_argv(fleet, "web1:2200", ["ps"]) == [
        "ssh", "-F", "/ci/ssh config", "-p", "2200", "--", "web1", "relman ps"]


def test_a_misspelt_fleet_table_is_named(tmp_path: Path) -> None:
    text = example_config(name="shop", repo="/srv/git/shop.git", root=Path("/srv/shop"))
    path = tmp_path / "relman.toml"
    path.write_text(text + '\n[fleets]\nhosts = ["web1"]\n')
    with pytest.raises(ConfigError, match=r"fleets: unknown table \(did you mean 'fleet'\?\)"):
        load_config(path)


def test_a_bad_fleet_table_exits_2_with_one_line(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    """Through the CLI (`relman check`): exit 2, one line naming file, key and reason."""
    from tests.unit.test_broken_config import run

    text = example_config(name="shop", repo="/srv/git/shop.git", root=tmp_path / "shop")
    path = tmp_path / "relman.toml"
    path.write_text(text + '\n[fleet]\nhosts = ["web1", "web1"]\n')
    code, out, err = run(capsys, "--config", str(path), "check")
    assert code == 2
    assert (out + err).strip() == \
        f"relman: error: {path}: fleet.hosts: 'web1' is listed twice"
    assert "Traceback" not in out + err
