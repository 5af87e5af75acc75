"""Rollback follows the order releases went live, not release ids or mtimes (DESIGN
section 4): a second rollback rolls forward again, as Heroku's does."""

from __future__ import annotations

from testing.git import BASE_TIME, release_version
from testing.waiting import wait_until
from tests.integration.test_supervision import serving


def marks(app) -> dict[str, str]:
    """Release id -> its marker in `relman releases` (`*` live, `<` rollback target)."""
    rows = app.relman("releases", check=True).stdout.splitlines()[1:-1]
    return {row[3:29].strip(): row[1] for row in rows}


def target(app) -> str | None:
    return next((r["id"] for r in app.json("releases") if r["rollback_target"]), None)


def rollback_to(app, release: str, version: str) -> None:
    proc = app.relman("rollback", check=True)
    assert f"rolled back to {release}" in proc.stdout
    assert app.json("status")["live"] == release
    assert serving(app, version)


def test_rollback_follows_the_order_releases_went_live(make_app, app_repo):
    """Deploy A, then B whose commit is dated earlier (its id sorts first): rollback goes
    to A, a second rollback back to B; C, live after both and then failed, is skipped."""
    app = make_app(swap={"live_check_interval": 0.3, "verify_window": 60,
                         "drain_timeout": 5, "stop_timeout": 5})
    release_version(app_repo, "vb", when=BASE_TIME - 3600)  # made after v1, dated before
    app.relman("deploy", "v1", check=True)
    app.relman("deploy", "vb", check=True)
    ids = {r["ref"]: r["id"] for r in app.json("releases")}
    a, b = ids["v1"], ids["vb"]
    assert b < a, "B's id sorts first: its commit is older"
    assert target(app) == a
    assert marks(app) == {a: "<", b: "*"}

    rollback_to(app, a, "v1")
    assert target(app) == b, "the release live before A: a rollback rolls forward"
    assert marks(app) == {a: "*", b: "<"}
    rollback_to(app, b, "vb")
    assert target(app) == a

    # C goes live after A and B, then fails its live checks: rolled back to B by itself
    # and marked failed, so the next rollback skips it for A.
    release_version(app_repo, "vc", extra={"UNHEALTHY_AFTER": "1.5\n"})
    app.relman("deploy", "vc", check=True)
    c = next(r["id"] for r in app.json("releases") if r["ref"] == "vc")
    wait_until(lambda: app.json("status")["live"] == b, timeout=60, what="auto-rollback")
    wait_until(lambda: {r["id"]: r["state"] for r in app.json("releases")}[c] == "failed",
               timeout=30, what="C to be marked failed")
    assert target(app) == a
    rollback_to(app, a, "v1")
    assert target(app) == b
