"""Prune: which releases and venvs go (a pure choice), and what stays on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from relman.releases import prune as prune_module
from relman.releases.ids import make_release_id
from relman.releases.layout import AppRoot
from relman.releases.prune import choose_prunable, choose_prunable_venvs, prune
from relman.releases.registry import Manifest, ReleaseState, load_all, save
from relman.results import PruneResult

T0 = 1_790_000_000
BUILT, FAILED, UNFINISHED = ReleaseState.BUILT, ReleaseState.FAILED, ReleaseState.UNFINISHED


def rid(n: int) -> str:
    return make_release_id(T0 + 60 * n, f"{n:07x}" + "0" * 33)


def manifest(n: int, state: ReleaseState = BUILT, venv: str = "") -> Manifest:
    return Manifest(id=rid(n), ref=f"v{n}", sha=f"{n:040x}", who="alice",
                    created=T0 + 60 * n, state=state, known_good=state is BUILT, venv=venv)


def ids(*ns: int) -> frozenset[str]:
    return frozenset(rid(n) for n in ns)


SIX_BUILT = [manifest(n) for n in range(1, 7)]
MIXED = [manifest(1), manifest(2, FAILED), manifest(3), manifest(4, UNFINISHED), manifest(5),
         manifest(6, FAILED), manifest(7, UNFINISHED)]


@pytest.mark.parametrize(
    ("releases", "keep", "live", "target", "running", "pruned"),
    [
        pytest.param(SIX_BUILT, 3, rid(6), rid(5), ids(), ids(1, 2, 3),
                     id="keeps-newest-n-built"),
        pytest.param(SIX_BUILT, 10, rid(6), rid(5), ids(), ids(),
                     id="fewer-than-keep"),
        pytest.param(SIX_BUILT, 1, rid(2), None, ids(), ids(1, 3, 4, 5),
                     id="never-live-after-rollback"),
        pytest.param(SIX_BUILT, 1, rid(6), rid(1), ids(), ids(2, 3, 4, 5),
                     id="never-rollback-target"),
        pytest.param(SIX_BUILT, 1, rid(6), None, ids(2, 3), ids(1, 4, 5),
                     id="never-running"),
        pytest.param(SIX_BUILT, 1, None, None, ids(), ids(1, 2, 3, 4, 5),
                     id="no-live-yet"),
        pytest.param(MIXED, 2, rid(5), rid(3), ids(), ids(1, 2, 4, 6, 7),
                     id="failed-and-unfinished-pruned"),
        pytest.param(MIXED, 3, rid(5), None, ids(), ids(2, 4, 6, 7),
                     id="failed-and-unfinished-never-count-toward-keep"),
        pytest.param(MIXED, 1, rid(5), None, ids(6), ids(1, 2, 3, 4, 7),
                     id="running-failed-release-kept"),
        pytest.param(MIXED, 1, rid(7), None, ids(), ids(1, 2, 3, 4, 6),
                     id="live-unfinished-kept"),
        pytest.param([], 3, None, None, ids(), ids(), id="nothing"),
    ],
)
def test_choose_prunable(releases: list[Manifest], keep: int, live: str | None,
                         target: str | None, running: frozenset[str],
                         pruned: frozenset[str]) -> None:
    """All but the newest *keep* built releases go; live, target and running never do."""
    for order in (releases, list(reversed(releases))):
        chosen = choose_prunable(order, keep=keep, live=live, target=target, running=running)
        assert chosen == pruned
        assert {live, target}.isdisjoint(chosen)
        assert running.isdisjoint(chosen)


@pytest.mark.parametrize(
    ("names", "kept", "prunable"),
    [
        pytest.param(["a", "b", "c"], [manifest(1, venv="/r/venvs/a")], {"b", "c"},
                     id="unreferenced-go"),
        pytest.param(["a", "b"], [manifest(1, venv="/r/venvs/a"), manifest(2, venv="/r/venvs/b")],
                     set(), id="all-referenced"),
        pytest.param(["a"], [manifest(1, venv="/r/venvs/a"), manifest(2, venv="/r/venvs/a")],
                     set(), id="shared-venv"),
        pytest.param(["a", "b"], [manifest(1, UNFINISHED)], {"a", "b"},
                     id="release-without-venv"),
        pytest.param(["a", "b"], [manifest(1, venv="/r/venvs/a/")], {"b"},
                     id="trailing-slash"),
        pytest.param([], [manifest(1, venv="/r/venvs/a")], set(), id="no-venvs"),
    ],
)
def test_choose_prunable_venvs(names: list[str], kept: list[Manifest],
                               prunable: set[str]) -> None:
    """Venvs no kept release references are prunable (mark and sweep)."""
    assert choose_prunable_venvs(names, kept) == prunable


@pytest.mark.parametrize(
    ("unlisted", "prunable"),
    [
        pytest.param({}, {"b", "c", "d"}, id="none"),
        pytest.param({rid(2): "/r/venvs/b"}, {"c", "d"}, id="its-venv-is-referenced"),
        pytest.param({rid(2): "../../venvs/c/"}, {"b", "d"}, id="relative-link"),
        pytest.param({rid(2): "/r/venvs/b", rid(3): "/r/venvs/c"}, {"d"}, id="two"),
        pytest.param({rid(2): "/r/venvs/b", rid(3): None}, set(), id="no-link-keeps-all"),
    ],
)
def test_release_trees_without_a_manifest_keep_their_venvs(
    unlisted: dict[str, str | None], prunable: set[str]
) -> None:
    """A release tree whose manifest is lost or unreadable keeps the venv its .venv link
    names; one without a link could use any venv, so every venv stays."""
    kept = [manifest(1, venv="/r/venvs/a")]
    assert choose_prunable_venvs(["a", "b", "c", "d"], kept, unlisted=unlisted) == prunable


@pytest.fixture
def root(tmp_path: Path) -> AppRoot:
    app = AppRoot(tmp_path / "app")
    app.create()
    return app


def lay_out(root: AppRoot, releases: list[Manifest], venvs: list[str]) -> None:
    """Release dirs with a file in each, their manifests, and venv dirs with a python."""
    for m in releases:
        (root.release_dir(m.id) / "pkg").mkdir(parents=True)
        (root.release_dir(m.id) / "pkg" / "app.py").write_text("app = None\n")
        save(root, m)
    for name in venvs:
        (root.venvs / name / "bin").mkdir(parents=True)
        (root.venvs / name / "bin" / "python").write_text("")


def test_prune_on_disk_keeps_what_is_referenced(root: AppRoot) -> None:
    """prune() removes doomed releases and unreferenced venvs; live, target, running stay."""
    venv = str(root.venvs)
    releases = [
        manifest(1, BUILT, f"{venv}/shared"),      # old: pruned, its venv shared with 6
        manifest(2, BUILT, f"{venv}/v-target"),    # rollback target
        manifest(3, FAILED, f"{venv}/v-failed"),   # failed: pruned
        manifest(4, BUILT, f"{venv}/v-running"),   # running (keep-warm): stays
        manifest(5, UNFINISHED),                   # half-built: pruned
        manifest(6, BUILT, f"{venv}/shared"),      # live
    ]
    lay_out(root, releases, ["shared", "v-target", "v-failed", "v-running", "v-orphan"])
    (root.venvs / "lock-file").write_text("")  # not a venv directory: left alone
    root.current.symlink_to(root.release_dir(rid(6)))

    result = prune(root, load_all(root), keep=1, live=rid(6), target=rid(2),
                   running=ids(4))

    assert result == PruneResult(releases=tuple(sorted(ids(1, 3, 5))),
                                 venvs=("v-failed", "v-orphan"))
    assert sorted(p.name for p in root.releases.iterdir()) == sorted(ids(2, 4, 6))
    assert [m.id for m in load_all(root)] == sorted(ids(2, 4, 6))
    assert sorted(p.name for p in root.venvs.iterdir()) == [
        "lock-file", "shared", "v-running", "v-target"]
    assert (root.current / "pkg" / "app.py").is_file()
    assert (root.release_dir(rid(2)) / "pkg" / "app.py").is_file()


@pytest.mark.parametrize("manifest_left", ["truncated", "set-aside", "missing"])
def test_prune_never_removes_a_release_without_a_readable_manifest(
    root: AppRoot, manifest_left: str
) -> None:
    """The live release's manifest cut short, set aside or gone: its tree and the venv its
    .venv link names stay; unreferenced ones still go."""
    releases = [manifest(n, venv=f"{root.venvs}/v{n}") for n in (1, 2, 3)]
    lay_out(root, releases, ["v1", "v2", "v3", "v-orphan"])
    for m in releases:
        (root.release_dir(m.id) / ".venv").symlink_to(m.venv)
    live = root.manifest(rid(3))
    if manifest_left == "truncated":
        live.write_text(live.read_text()[:30])
    elif manifest_left == "set-aside":
        live.rename(live.with_name(live.name + ".corrupt-20261129T141500Z"))
    else:
        live.unlink()
    result = prune(root, load_all(root), keep=1, live=rid(3), target=None, running=ids())
    assert result == PruneResult(releases=(rid(1),), venvs=("v-orphan", "v1"))
    assert sorted(p.name for p in root.releases.iterdir()) == sorted(ids(2, 3))
    assert sorted(p.name for p in root.venvs.iterdir()) == ["v2", "v3"]


def test_a_release_tree_without_manifest_or_venv_link_keeps_every_venv(root: AppRoot) -> None:
    """A release tree with neither a manifest nor a .venv link could use any venv: prune
    keeps them all (and still removes what it may of the releases)."""
    lay_out(root, [manifest(1, venv=f"{root.venvs}/v1"), manifest(2)], ["v1", "v-orphan"])
    (root.release_dir(rid(9)) / "pkg").mkdir(parents=True)
    result = prune(root, load_all(root), keep=1, live=rid(2), target=None, running=ids())
    assert result == PruneResult(releases=(rid(1),), venvs=())
    assert sorted(p.name for p in root.releases.iterdir()) == sorted(ids(2, 9))
    assert sorted(p.name for p in root.venvs.iterdir()) == ["v-orphan", "v1"]


def test_prune_twice_removes_nothing_more(root: AppRoot) -> None:
    """A second prune with the same inputs finds nothing left to remove."""
    lay_out(root, [manifest(n, venv=f"{root.venvs}/v{n}") for n in range(1, 5)],
            ["v1", "v2", "v3", "v4"])
    first = prune(root, load_all(root), keep=2, live=rid(4), target=rid(3), running=ids())
    second = prune(root, load_all(root), keep=2, live=rid(4), target=rid(3), running=ids())
    assert first == PruneResult(releases=tuple(sorted(ids(1, 2))), venvs=("v1", "v2"))
    assert second == PruneResult(releases=(), venvs=())


def test_prune_finishes_a_crashed_removal(root: AppRoot) -> None:
    """A release whose directory is already gone but whose manifest remains is pruned cleanly."""
    lay_out(root, [manifest(1), manifest(2)], [])
    (root.release_dir(rid(1)) / "pkg" / "app.py").unlink()
    (root.release_dir(rid(1)) / "pkg").rmdir()
    root.release_dir(rid(1)).rmdir()
    result = prune(root, load_all(root), keep=1, live=rid(2), target=None, running=ids())
    assert result.releases == (rid(1),)
    assert [m.id for m in load_all(root)] == [rid(2)]


def test_prune_removes_the_logs_of_what_it_removes(root: AppRoot) -> None:
    """A pruned release's server log, its rotations and its build log go too (the disk
    stays bounded); a kept release's logs and the history stay."""
    lay_out(root, [manifest(1), manifest(2)], [])
    root.log.mkdir(exist_ok=True)
    names = [f"{rid(n)}{suffix}" for n in (1, 2) for suffix in (".log", ".log.1", ".build.log")]
    for name in [*names, "history.jsonl", "fetch.log"]:
        (root.log / name).write_text("x\n")
    result = prune(root, load_all(root), keep=1, live=rid(2), target=None, running=ids())
    assert result.releases == (rid(1),)
    assert sorted(p.name for p in root.log.iterdir()) == sorted(
        [n for n in names if n.startswith(rid(2))] + ["history.jsonl", "fetch.log"])


def test_a_directory_that_cannot_be_removed_stays_listed(
    root: AppRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If rmtree cannot remove a release (a busy mount, an immutable file: root's own
    permissions cannot be used to make one here, so rmtree fails by hand), its manifest and
    logs stay: the release is listed and pruned again later, never an unlisted directory."""
    lay_out(root, [manifest(1), manifest(2)], [])
    root.log.mkdir(exist_ok=True)
    (root.log / f"{rid(1)}.log").write_text("x\n")
    monkeypatch.setattr(prune_module.shutil, "rmtree", lambda *_a, **_k: None)
    result = prune(root, load_all(root), keep=1, live=rid(2), target=None, running=ids())
    assert result.releases == ()
    assert [m.id for m in load_all(root)] == sorted(ids(1, 2))
    assert (root.log / f"{rid(1)}.log").exists()
