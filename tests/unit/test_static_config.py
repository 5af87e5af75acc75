"""[static]: URL prefixes, the directories they publish to, and the errors of bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from relman.config import load_config
from relman.errors import ConfigError
from relman.static_urls import prefix_problem, static_name
from tests.unit.test_config import config_text, write


@pytest.mark.parametrize(
    ("prefix", "name"),
    [("/static/", "static"), ("/assets/img/", "assets-img"), ("/a-b/", "a-b"),
     ("/v1.2/", "v1.2"), ("/_next/static/", "_next-static"), ("/~u/", "~u")],
)
def test_static_name_joins_the_segments(prefix: str, name: str) -> None:
    """A prefix publishes to its segments joined by "-"."""
    assert prefix_problem(prefix) is None
    assert static_name(prefix) == name


def test_static_table_loads_in_file_order(tmp_path: Path) -> None:
    """[static] becomes a read-only prefix -> directory mapping, in file order."""
    text = config_text() + '\n[static]\n"/static/" = "staticfiles"\n"/img/" = "web/img/"\n'
    config = load_config(write(tmp_path, text))
    assert list(config.static.items()) == [("/static/", "staticfiles"), ("/img/", "web/img/")]
    with pytest.raises(TypeError):
        config.static["/x/"] = "x"  # type: ignore[index]


def test_no_static_table_is_empty(tmp_path: Path) -> None:
    assert dict(load_config(write(tmp_path, config_text())).static) == {}


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ('"static" = "static"', 'static."static"', 'must start and end with "/"'),
        ('"/static" = "static"', 'static."/static"', 'must start and end with "/"'),
        ('"/" = "static"', 'static."/"', 'must not be "/"'),
        ('"/../" = "static"', 'static."/../"', "not starting with a dot"),
        ('"/.well-known/" = "x"', 'static."/.well-known/"', "not starting with a dot"),
        ('"/a//b/" = "x"', 'static."/a//b/"', "each segment"),
        ('"/a b/" = "x"', 'static."/a b/"', "each segment"),
        ('"/a;b/" = "x"', 'static."/a;b/"', "each segment"),
        ('"/$x/" = "x"', 'static."/$x/"', "each segment"),
        ('"/static/" = "/srv/static"', 'static."/static/"', "must be a relative path"),
        ('"/static/" = "../shared"', 'static."/static/"', "without '..'"),
        ('"/static/" = "."', 'static."/static/"', "names the directory itself"),
        ('"/static/" = ""', 'static."/static/"', "relative path"),
        ('"/static/" = 3', 'static."/static/"', "expected a string, got an integer"),
        ('"/a-b/" = "x"\n"/a/b/" = "y"', 'static."/a/b/"',
         'publishes to the same directory as "/a-b/"'),
    ],
)
def test_bad_static_entry_names_file_and_key(tmp_path: Path, table: str, key: str,
                                             reason: str) -> None:
    """A bad prefix, a directory outside the release, or two prefixes with one name: a
    ConfigError naming the file and the prefix (exit 2)."""
    path = write(tmp_path, config_text() + f"\n[static]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.file, err.key) == (str(path), key)
    assert reason in err.reason
    assert err.exit_code == 2


def test_static_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'static = "/static/"\n' + config_text())
    with pytest.raises(ConfigError, match="static: expected a table"):
        load_config(path)
