"""An invalid relman.toml still names its app root (lenient_root); the commands that need only
the root use it with a warning, and those that need the config exit 2 (issue point 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relman.config import load_config
from relman.config_search import lenient_root
from relman.errors import ConfigError

GOOD = '[app]\nname = "shop"\nrepo = "/r"\nroot = "{root}"\n'


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "bogus = 1\n",
        GOOD + "keep_releases = 0\n",
        GOOD + '[serve]\nkind = "x"\n',
        GOOD + '[server]\nkind = "gunicorn"\n',
        '[app]\nname = "shop"\nroot = "{root}"\n',
        GOOD + "[server]\nworkers = \n",
        "[server]\nworkers = 4 4\n\n" + GOOD,
        "[app]\nname = 'shop'\n  root='{root}'   # where it lives\nrepo = \n",
        '[ app ]  # the app\nroot = "{root}"\n[server\n',
        'app.root = "{root}"\napp.name = "shop"\n[server\n',
        GOOD + 'root = "{root}"\n',
    ],
    ids=["unknown-key", "bad-value", "unknown-table", "cross-key-rule", "missing-key",
         "toml-error-after", "toml-error-before", "literal-string-and-comment",
         "spaced-header", "dotted-key", "same-root-twice"],
)
def test_root_is_found_in_an_invalid_config(tmp_path: Path, text: str) -> None:
    """The root comes from the parsed TOML whatever else is wrong, else from a root line
    under [app] (or a top-level app.root) when the file is not TOML at all."""
    path = tmp_path / "relman.toml"
    path.write_text(text.format(root=tmp_path))
    with pytest.raises(ConfigError):
        load_config(path)
    assert lenient_root(path) == tmp_path


@pytest.mark.parametrize(
    "text",
    [
        '[app]\nroot = "srv/shop"\nbogus = 1\n',
        "[app]\nroot = 5\n",
        '[app]\nroot = ["{root}"]\n',
        '[app]\nname = "shop"\nbogus = 1\n',
        '[app]\nroot = "{root}/absent"\nbogus = 1\n',
        '[server]\nroot = "{root}"\n[app\n',
        '[[app]]\nroot = "{root}"\n',
        '[[app]]\nroot = "{root}"\nname = \n',
        GOOD + 'root = "/"\n',
        'root = "{root}"\n[app\n',
        "",
    ],
    ids=["relative", "not-a-string", "an-array", "missing", "not-a-directory",
         "other-table", "array-of-tables", "array-of-tables-toml-error", "two-roots",
         "top-level-root", "empty"],
)
def test_no_root_unless_one_absolute_existing_directory(tmp_path: Path, text: str) -> None:
    """No guess: a root that is missing, relative, not a string, not a directory, outside
    [app] or ambiguous gives None, and the command fails with the config error."""
    path = tmp_path / "relman.toml"
    path.write_text(text.format(root=tmp_path))
    assert lenient_root(path) is None


def test_no_root_from_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    """A missing file, or a directory, gives None."""
    assert lenient_root(tmp_path / "absent.toml") is None
    assert lenient_root(tmp_path) is None

