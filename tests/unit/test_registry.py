"""Release manifests: state transitions, storage on disk and the rollback target choice."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from relman.releases.ids import make_release_id
from relman.releases.layout import AppRoot
from relman.releases.registry import (
    IllegalTransition,
    Manifest,
    ReleaseState,
    Unreadable,
    advance,
    find_unreadable,
    load,
    load_all,
    release_order,
    rollback_target,
    save,
)

T0 = 1_790_000_000
BUILT, FAILED, UNFINISHED = ReleaseState.BUILT, ReleaseState.FAILED, ReleaseState.UNFINISHED


def rid(n: int) -> str:
    """The id of the n-th commit, one minute apart."""
    return make_release_id(T0 + 60 * n, f"{n:07x}" + "0" * 33)


def manifest(n: int, state: ReleaseState = BUILT, *, good: bool = True,
             created: float | None = None, release_id: str | None = None,
             live_at: float = 0.0) -> Manifest:
    """The n-th commit's release; *live_at*: when it last went live (0: never recorded)."""
    return Manifest(
        id=rid(n) if release_id is None else release_id, ref=f"v{n}", sha=f"{n:040x}", who="alice",
        created=T0 + 60 * n + 5 if created is None else created, state=state, known_good=good,
        last_live=live_at,
    )


def went_live(*order: int) -> list[Manifest]:
    """Known-good releases of the commits in *order*, which went live in that order (a
    release that went live twice keeps the later time)."""
    last = {n: T0 + 1000 * (i + 1) for i, n in enumerate(order)}
    return [manifest(n, live_at=at) for n, at in last.items()]


# Two commits made within one second (a rebase): same timestamp, deployed in this order.
SAME_SECOND_FIRST = manifest(0, release_id=make_release_id(T0, "f" * 40), created=T0 + 100)
SAME_SECOND_SECOND = manifest(0, release_id=make_release_id(T0, "0" * 40), created=T0 + 200)


@pytest.mark.parametrize(
    ("manifests", "live", "expected"),
    [
        pytest.param(went_live(1, 2, 3), rid(3), rid(2), id="live-before-the-live-one"),
        pytest.param(went_live(3, 2, 1), rid(1), rid(2),
                     id="an-older-commit-deployed-last-rolls-back-to-a-newer-one"),
        pytest.param(went_live(1, 2, 1), rid(1), rid(2),
                     id="a-second-rollback-rolls-forward"),
        pytest.param(went_live(1, 2, 1, 2), rid(2), rid(1),
                     id="and-back-again"),
        pytest.param([*went_live(1, 3), manifest(2, live_at=T0 + 9000)], rid(3), rid(2),
                     id="not-by-id-but-by-when-it-went-live"),
        pytest.param([manifest(1, live_at=T0 + 1), manifest(2, FAILED, live_at=T0 + 2),
                      manifest(3, live_at=T0 + 3)], rid(3), rid(1),
                     id="skips-failed-that-went-live"),
        pytest.param([manifest(1, live_at=T0 + 1), manifest(2, UNFINISHED, live_at=T0 + 2),
                      manifest(3, live_at=T0 + 3)], rid(3), rid(1),
                     id="skips-unfinished-being-rebuilt"),
        pytest.param([manifest(1, live_at=T0 + 1), manifest(2, good=False),
                      manifest(3, live_at=T0 + 3)], rid(3), rid(1),
                     id="skips-built-that-never-went-live"),
        pytest.param([manifest(1, good=False), manifest(2, FAILED, live_at=T0 + 2),
                      manifest(3, live_at=T0 + 3)], rid(3), None, id="none-qualifies"),
        pytest.param(went_live(1), rid(1), None, id="only-live"),
        pytest.param([], None, None, id="no-releases"),
        pytest.param([*went_live(2, 1), manifest(3, good=False)], None, rid(1),
                     id="no-live-picks-the-last-live"),
        pytest.param(went_live(2, 1), rid(9), rid(1), id="unknown-live-picks-the-last-live"),
        pytest.param([manifest(1), manifest(2), manifest(3, live_at=T0 + 5)], rid(3), rid(2),
                     id="never-recorded-falls-back-to-release-order"),
        pytest.param([manifest(1, live_at=T0 + 5), manifest(2), manifest(3)], rid(3), rid(1),
                     id="recorded-ranks-above-never-recorded"),
        pytest.param([SAME_SECOND_SECOND, SAME_SECOND_FIRST], SAME_SECOND_SECOND.id,
                     SAME_SECOND_FIRST.id, id="never-recorded-same-second-ordered-by-created"),
    ],
)
def test_rollback_target(manifests: list[Manifest], live: str | None,
                         expected: str | None) -> None:
    """The target is the known-good built release, other than live, that last went live
    (whatever its id), in any input order."""
    for order in (manifests, list(reversed(manifests))):
        found = rollback_target(order, live)
        assert (found.id if found else None) == expected


def test_release_order_is_commit_time_then_created() -> None:
    """Releases sort by the id's timestamp, then by first deploy, never by the sha."""
    newest = manifest(5, created=T0)  # created long ago, committed last
    shuffled = [newest, SAME_SECOND_SECOND, manifest(2), SAME_SECOND_FIRST]
    random.Random(4).shuffle(shuffled)
    assert [m.id for m in sorted(shuffled, key=release_order)] == [
        SAME_SECOND_FIRST.id, SAME_SECOND_SECOND.id, rid(2), newest.id]


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        pytest.param(UNFINISHED, BUILT, True, id="unfinished-built"),
        pytest.param(UNFINISHED, FAILED, True, id="unfinished-failed"),
        pytest.param(UNFINISHED, UNFINISHED, True, id="unfinished-same"),
        pytest.param(BUILT, FAILED, True, id="built-failed"),
        pytest.param(BUILT, UNFINISHED, True, id="built-rebuilt"),
        pytest.param(BUILT, BUILT, True, id="built-same"),
        pytest.param(FAILED, UNFINISHED, True, id="failed-retried"),
        pytest.param(FAILED, FAILED, True, id="failed-same"),
        pytest.param(FAILED, BUILT, False, id="failed-built-without-rebuild"),
    ],
)
def test_advance_follows_transition_table(old: ReleaseState, new: ReleaseState,
                                          allowed: bool) -> None:
    """advance() makes allowed transitions and raises IllegalTransition for the rest."""
    before = manifest(1, old)
    if allowed:
        after = advance(before, new, error="boom")
        assert (after.state, after.error) == (new, "boom")
        assert before.state is old  # manifests are values
    else:
        with pytest.raises(IllegalTransition, match=f"{before.id}: {old} -> {new}"):
            advance(before, new)


def test_illegal_transition_is_not_a_user_error() -> None:
    """IllegalTransition is a bug, so it is not a RelmanError the CLI would print as usage."""
    from relman.errors import RelmanError

    assert not issubclass(IllegalTransition, RelmanError)


@pytest.fixture
def root(tmp_path: Path) -> AppRoot:
    app = AppRoot(tmp_path / "app")
    app.create()
    return app


def full_manifest(n: int) -> Manifest:
    return Manifest(
        id=rid(n), ref="feature/x", sha="a" * 40, who="bob@host", created=T0 + 0.5,
        state=BUILT, known_good=True, deps_hash="d" * 64, venv="/srv/app/venvs/dd",
        timings={"fetch": 0.25, "build": 3.0}, error="", last_live=T0 + 9.0,
    )


def test_save_then_load_round_trips(root: AppRoot) -> None:
    """A saved manifest loads back equal, from state/releases/<id>.json."""
    original = full_manifest(1)
    save(root, original)
    assert root.manifest(original.id).is_file()
    assert json.loads(root.manifest(original.id).read_text())["state"] == "built"
    loaded = load(root, original.id)
    assert loaded == original
    assert loaded is not None
    assert loaded.state is BUILT


def test_load_of_missing_release_is_none(root: AppRoot) -> None:
    """Loading a release that has no manifest gives None."""
    assert load(root, rid(1)) is None


def test_load_all_is_oldest_first(root: AppRoot) -> None:
    """load_all() returns every manifest in release order."""
    for n in (3, 1, 2):
        save(root, manifest(n))
    assert [m.id for m in load_all(root)] == [rid(1), rid(2), rid(3)]


def test_load_all_on_empty_root_is_empty(root: AppRoot) -> None:
    """A new app root has no releases."""
    assert load_all(root) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("notes.json", json.dumps(manifest(7).to_json()), id="stem-not-an-id"),
        pytest.param("20261123T031500Z-1a2b3c4 (copy).json", json.dumps(manifest(7).to_json()),
                     id="editor-copy"),
        pytest.param("..json", "{}", id="dot-name"),
        pytest.param(f"{rid(7)}.json", "{not json", id="corrupt-json"),
        pytest.param(f"{rid(7)}.json", "", id="empty-file"),
        pytest.param(f"{rid(7)}.json", '{"id": "x"}', id="missing-fields"),
        pytest.param(f"{rid(7)}.json", json.dumps({**manifest(7).to_json(), "state": "bogus"}),
                     id="unknown-state"),
        pytest.param(f"{rid(7)}.json", b"\xff\xfe".decode("latin-1"), id="not-utf8"),
    ],
)
def test_load_all_skips_odd_files(root: AppRoot, name: str, text: str) -> None:
    """One odd file never stops the listing (it disabled all of Capistrano's cleanup, #1883)."""
    save(root, manifest(1))
    save(root, manifest(2))
    (root.manifests / name).write_text(text, encoding="latin-1")
    (root.manifests / f"{rid(8)}.json").mkdir()  # a directory with a manifest's name
    assert [m.id for m in load_all(root)] == [rid(1), rid(2)]


@pytest.mark.parametrize("text", ["[]", "null", "1"], ids=["list", "null", "number"])
def test_load_all_skips_json_that_is_not_an_object(root: AppRoot, text: str) -> None:
    """A manifest file holding JSON that is not an object is skipped like any corrupt one."""
    save(root, manifest(1))
    root.manifest(rid(2)).write_text(text)
    assert [m.id for m in load_all(root)] == [rid(1)]


def test_load_all_skips_manifest_whose_id_is_not_its_name(root: AppRoot) -> None:
    """A manifest whose id differs from its file name is not that release's manifest."""
    save(root, manifest(1))
    root.manifest(rid(2)).write_text(json.dumps(manifest(2, release_id="").to_json()))
    assert [m.id for m in load_all(root)] == [rid(1)]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param('{"id": "2026', "Unterminated string", id="truncated"),
        pytest.param("", "Expecting value", id="empty"),
        pytest.param("[]", "a manifest is a JSON object", id="not-an-object"),
        pytest.param('{"id": "x"}', "missing", id="missing-fields"),
        pytest.param(json.dumps(manifest(2).to_json()), "the manifest of", id="another-id"),
    ],
)
def test_load_of_an_unreadable_manifest_raises_unreadable(root: AppRoot, text: str,
                                                          reason: str) -> None:
    """load() tells an unreadable manifest (Unreadable, with the reason) from a missing one
    (None); load_all() skips it and find_unreadable() lists it."""
    save(root, manifest(1))
    root.manifest(rid(3)).write_text(text)
    with pytest.raises(Unreadable, match=reason) as caught:
        load(root, rid(3))
    assert caught.value.path == root.manifest(rid(3))
    assert [m.id for m in load_all(root)] == [rid(1)]
    assert [u.path for u in find_unreadable(root)] == [root.manifest(rid(3))]


def test_find_unreadable_ignores_files_that_are_not_manifests(root: AppRoot) -> None:
    """Only files named like a release's manifest are relman's to set aside."""
    save(root, manifest(1))
    (root.manifests / "notes.json").write_text("{not json")
    (root.manifests / f"{rid(2)}.json.corrupt-20261129T141500Z").write_text("{")
    (root.manifests / f"{rid(3)}.json").mkdir()
    assert [u.path.name for u in find_unreadable(root)] == [f"{rid(3)}.json"]


def test_load_all_with_a_cache_reads_only_changed_manifests(root: AppRoot) -> None:
    """With a cache, a manifest file that is the same inode, size and mtime is not read
    again; a saved (replaced) one is, and a removed one leaves the listing and the cache."""
    for n in (1, 2, 3):
        save(root, manifest(n))
    cache: dict = {}
    assert [m.id for m in load_all(root, cache)] == [rid(1), rid(2), rid(3)]
    path = root.manifest(rid(1))
    st = path.stat()
    text = path.read_text().replace('"alice"', '"bobby"')  # same size, in place
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_all(root, cache)[0].who == "alice", "unchanged identity: not read again"
    assert load_all(root)[0].who == "bobby"
    save(root, replace(manifest(2), who="carol"))
    root.manifest(rid(3)).unlink()
    assert [(m.id, m.who) for m in load_all(root, cache)] == [(rid(1), "alice"),
                                                              (rid(2), "carol")]
    assert set(cache) == {rid(1), rid(2)}
