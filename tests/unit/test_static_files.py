"""Published static files: which files (a pure choice), and publication on a real disk:
hard links, modes, idempotence, removal, a publication cut short and run again."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from relman.config import load_config
from relman.releases.ids import make_release_id
from relman.releases.layout import AppRoot
from relman.releases.registry import Manifest, ReleaseState
from relman.releases.static import (
    STAGING,
    Published,
    choose_published,
    publication_order,
    publish,
    published_now,
    release_files,
)
from relman.releases.store import ReleaseStore
from relman.settings import settings_of, settings_to_json

T0 = 1_790_000_000
P = Path("/src")


def rid(n: int) -> str:
    return make_release_id(T0 + 60 * n, f"{n:07x}" + "0" * 33)


def manifest(n: int, state: ReleaseState = ReleaseState.BUILT, last_live: float = 0.0,
             settings: Mapping[str, object] | None = None) -> Manifest:
    return Manifest(id=rid(n), ref=f"v{n}", sha=f"{n:040x}", who="t", created=T0 + 60 * n,
                    state=state, last_live=last_live, settings=settings or {})


def files(release: str, *paths: str) -> dict[str, Path]:
    return {p: P / release / p for p in paths}


def tree(base: Path, paths: Mapping[str, str]) -> Path:
    """Files *paths* (relative path -> text) under *base*."""
    for rel, text in paths.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def contents(static_root: Path) -> dict[str, str]:
    return {rel: (static_root / rel).read_text() for rel in sorted(published_now(static_root))}


def test_choose_published_is_the_union() -> None:
    """Every path any release has is published."""
    chosen = choose_published([files("s2", "static/s2.css"), files("s1", "static/s1.css")])
    assert chosen == {"static/s2.css": P / "s2/static/s2.css",
                      "static/s1.css": P / "s1/static/s1.css"}


def test_choose_published_first_release_wins_a_shared_path() -> None:
    """A path two releases have comes from the first (the one going live)."""
    chosen = choose_published([files("new", "static/app.css"), files("old", "static/app.css")])
    assert chosen == {"static/app.css": P / "new/static/app.css"}


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(["static/x"], ["static/x/y.css"], {"static/x"}, id="file-beats-dir"),
        pytest.param(["static/x/y.css"], ["static/x"], {"static/x/y.css"}, id="dir-beats-file"),
        pytest.param(["a/b/c"], ["a/b", "a/d"], {"a/b/c", "a/d"}, id="only-the-clash-loses"),
    ],
)
def test_choose_published_file_and_directory_clash(first: list[str], second: list[str],
                                                   expected: set[str]) -> None:
    """A file where another release has a directory (or under its file) loses to the first."""
    assert set(choose_published([files("1", *first), files("2", *second)])) == expected


def test_publication_order_puts_the_winner_first_then_last_live() -> None:
    """The release going live first, then the others, most recently live first; unfinished
    releases, and failed ones that never went live, offer nothing."""
    releases = [manifest(1, last_live=300), manifest(2, last_live=100), manifest(3),
                manifest(4, ReleaseState.UNFINISHED), manifest(5, ReleaseState.FAILED,
                                                                 last_live=200),
                manifest(6, ReleaseState.FAILED)]
    order = [m.id for m in publication_order(releases, rid(3))]
    assert order == [rid(3), rid(1), rid(5), rid(2)]
    assert [m.id for m in publication_order(releases, None)] == [rid(1), rid(5), rid(2), rid(3)]


def test_release_files_walks_each_mapped_directory(tmp_path: Path) -> None:
    """Files under each [static] directory, named <name>/<path below it>; a directory the
    release lacks gives none."""
    release = tree(tmp_path / "r", {"staticfiles/app.css": "a", "staticfiles/img/x.png": "x",
                                    "web/dist/main.js": "m", "app.py": "secret"})
    found, skipped = release_files(release, {"/static/": "staticfiles",
                                             "/assets/js/": "web/dist/", "/gone/": "nope"})
    assert found == {"static/app.css": release / "staticfiles/app.css",
                     "static/img/x.png": release / "staticfiles/img/x.png",
                     "assets-js/main.js": release / "web/dist/main.js"}
    assert skipped == []


def test_release_files_never_follows_symbolic_links(tmp_path: Path) -> None:
    """A link inside a [static] directory, or a [static] directory that is a link (a
    build.shared entry), is skipped: nothing outside the tree is ever published."""
    shared = tree(tmp_path / "shared", {".env": "SECRET=1", "media/up.png": "u"})
    release = tree(tmp_path / "r", {"static/ok.css": "ok"})
    (release / "static" / "env").symlink_to(shared / ".env")
    (release / "static" / "dir").symlink_to(shared)
    (release / "media").symlink_to(shared / "media")
    (shared / "media/sub").mkdir()
    (shared / "media/sub/x.png").write_text("x")
    found, skipped = release_files(release, {"/static/": "static", "/media/": "media",
                                             "/sub/": "media/sub"}, "r1")
    assert found == {"static/ok.css": release / "static/ok.css"}
    assert sorted(skipped) == ["r1:media", "r1:media/sub", "r1:static/dir", "r1:static/env"]


def test_publish_hard_links_readable_files(tmp_path: Path) -> None:
    """Each file is a hard link of the release's file, readable by other users, in
    directories they may search."""
    release = tree(tmp_path / "r", {"s/a.css": "a", "s/sub/b.css": "b"})
    (release / "s/a.css").chmod(0o600)
    static_root = tmp_path / "static"
    result = publish(static_root, {"static/a.css": release / "s/a.css",
                                   "static/sub/b.css": release / "s/sub/b.css"})
    assert result == Published(linked=2)
    published = static_root / "static/a.css"
    assert os.path.samefile(published, release / "s/a.css")
    assert stat.S_IMODE(published.stat().st_mode) == 0o644
    for directory in (static_root, static_root / "static", static_root / "static/sub"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert not (static_root / STAGING).exists()


def test_publish_again_changes_nothing(tmp_path: Path) -> None:
    """A second publication of the same files (a redeploy) leaves every file in place."""
    release = tree(tmp_path / "r", {"s/a.css": "a", "s/b.css": "b"})
    wanted = {"static/a.css": release / "s/a.css", "static/b.css": release / "s/b.css"}
    publish(tmp_path / "static", wanted)
    inode = (tmp_path / "static/static/a.css").stat().st_ino
    assert publish(tmp_path / "static", wanted) == Published(unchanged=2)
    assert (tmp_path / "static/static/a.css").stat().st_ino == inode


def test_publish_removes_what_no_release_has(tmp_path: Path) -> None:
    """A file no release has any more goes, and so do the directories left empty."""
    s1 = tree(tmp_path / "s1", {"s/s1.css": "1", "s/old/x.png": "x"})
    s2 = tree(tmp_path / "s2", {"s/s2.css": "2"})
    static_root = tmp_path / "static"
    both = choose_published([release_files(s2, {"/static/": "s"})[0],
                             release_files(s1, {"/static/": "s"})[0]])
    publish(static_root, both)
    assert contents(static_root) == {"static/old/x.png": "x", "static/s1.css": "1",
                                     "static/s2.css": "2"}
    result = publish(static_root, release_files(s2, {"/static/": "s"})[0])
    assert result == Published(unchanged=1, removed=2)
    assert contents(static_root) == {"static/s2.css": "2"}
    assert not (static_root / "static/old").exists()


def test_publish_replaces_a_shared_path_with_the_winners(tmp_path: Path) -> None:
    """The same path with other content: the winner's file replaces the published one."""
    old = tree(tmp_path / "old", {"s/app.css": "old"})
    new = tree(tmp_path / "new", {"s/app.css": "new"})
    static_root = tmp_path / "static"
    publish(static_root, {"static/app.css": old / "s/app.css"})
    assert publish(static_root, {"static/app.css": new / "s/app.css"}) == Published(linked=1)
    assert contents(static_root) == {"static/app.css": "new"}


def test_publish_cut_short_and_run_again_is_exact(tmp_path: Path) -> None:
    """What a killed publication leaves (staged links, a file of a clashing directory, part
    of the files) is put right by the next one."""
    release = tree(tmp_path / "r", {"s/a.css": "a", "s/x/y.css": "y", "s/c.css": "c"})
    static_root = tmp_path / "static"
    wanted = release_files(release, {"/static/": "s"})[0]
    tree(static_root, {f"{STAGING}/0": "half", "static/a.css": "stale", "static/x": "file",
                       "other/gone.js": "g"})
    result = publish(static_root, wanted)
    assert result == Published(linked=3, removed=1)
    assert contents(static_root) == {"static/a.css": "a", "static/c.css": "c",
                                     "static/x/y.css": "y"}
    assert sorted(p.name for p in static_root.iterdir()) == ["static"]


def test_publish_nothing_creates_nothing(tmp_path: Path) -> None:
    assert publish(tmp_path / "static", {}) == Published()
    assert not (tmp_path / "static").exists()


def _store(tmp_path: Path, static: str) -> ReleaseStore:
    path = tmp_path / "relman.toml"
    path.write_text(f'[app]\nname = "shop"\nrepo = "/r"\nroot = "{tmp_path / "root"}"\n'
                    f'[server]\napp = "a:b"\n[static]\n{static}\n')
    config = load_config(path)
    AppRoot(config.app.root).create()
    return ReleaseStore(config)


def test_store_publishes_each_release_with_its_own_static(tmp_path: Path) -> None:
    """A release publishes from the [static] directories it recorded, not today's; a file
    leaves when the last release that has it is gone (pruned)."""
    store = _store(tmp_path, '"/static/" = "new"')
    old_settings = settings_to_json(settings_of(store.config), store.settings_key())
    old_settings["static"] = {"/static/": "old"}
    store.save(manifest(1, last_live=100, settings=old_settings))
    store.save(manifest(2, last_live=200))
    tree(store.root.release_dir(rid(1)), {"old/s1.css": "1", "new/unused.css": "u"})
    tree(store.root.release_dir(rid(2)), {"new/s2.css": "2"})
    store.publish_static(rid(2))
    assert contents(store.root.static) == {"static/s1.css": "1", "static/s2.css": "2"}
    store.root.manifest(rid(1)).unlink()  # what prune removes, the tree aside
    store.publish_static(rid(2))
    assert contents(store.root.static) == {"static/s2.css": "2"}


def test_publish_replaces_a_copy_of_one_size_and_time_but_other_content(tmp_path: Path
                                                                       ) -> None:
    """A published copy is compared by content: git archive stamps two releases committed
    in one second with one mtime, and a file may keep its size ("v1" -> "v2")."""
    old = tree(tmp_path / "old", {"s/app.css": "v1"})
    new = tree(tmp_path / "new", {"s/app.css": "v2"})
    stamp = (1_790_000_000, 1_790_000_000)
    os.utime(old / "s/app.css", stamp)
    os.utime(new / "s/app.css", stamp)
    static_root = tmp_path / "static"
    tree(static_root, {"static/app.css": "v1"})  # a copy of old's, not a link
    os.utime(static_root / "static/app.css", stamp)
    assert publish(static_root, {"static/app.css": old / "s/app.css"}) == Published(
        unchanged=1)
    assert publish(static_root, {"static/app.css": new / "s/app.css"}) == Published(linked=1)
    assert contents(static_root) == {"static/app.css": "v2"}
