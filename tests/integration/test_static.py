"""[static] through a real nginx running exactly the block `relman nginx-config` prints:
the assets of every kept release are served across swaps, a rollback and a prune."""

from __future__ import annotations

import http.client
import os
import stat
from pathlib import Path

import pytest

from testing.git import release_version
from testing.nginx import PrivateNginx

pytestmark = pytest.mark.integration

HASH = {"s1": "1a2b3c4d5e6f", "s2": "2b3c4d5e6f7a", "s3": "3c4d5e6f7a8b"}
STATIC = {'"/static/"': "static", '"/assets/img/"': "web/img"}
# A file that build.commands writes under a umask that keeps everyone else out: published
# readable for nginx's workers all the same.
BUILD = [["sh", "-c", "umask 077 && echo built-$(cat VERSION) > static/built.css"]]
IMMUTABLE = "public, max-age=31536000, immutable"


def release(repo: Path, version: str) -> None:
    """Commit *version* with static/<version>.css, its hashed twin, the shared static/app.css
    with this version's content, and web/img/<version>.png; no file of other versions."""
    for old in [*(repo / "static").glob("*"), *(repo / "web/img").glob("*")]:
        old.unlink()
    (repo / "static").mkdir(exist_ok=True)
    (repo / "web/img").mkdir(parents=True, exist_ok=True)
    files = {f"static/{version}.css": f"{version} plain",
             f"static/{version}.{HASH[version]}.css": f"{version} hashed",
             "static/app.css": f"app of {version}", f"web/img/{version}.png": version}
    for name, text in files.items():
        (repo / name).write_text(text)
    release_version(repo, version)


def fetch(nginx: PrivateNginx, path: str) -> tuple[int, str, str]:
    """(status, body, Cache-Control) of GET *path*, sent as it is (no normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return (response.status, response.read().decode(errors="replace"),
                response.getheader("Cache-Control") or "")
    finally:
        conn.close()


def body(nginx: PrivateNginx, path: str) -> str:
    status, text, _ = fetch(nginx, path)
    assert status == 200, (path, status, text[:200])
    return text


def test_assets_of_every_kept_release_are_served_until_pruned(stack, app_repo, base_dir):
    """After the swap from s1 to s2 both s1.css and s2.css are served (the hashed ones with
    the year-long cache header); a path both have is the live release's, a rollback's
    included; once s1 is pruned its files are 404s and s2's and s3's are still served."""
    release(app_repo, "s1")
    app, nginx = stack("gunicorn", app={"keep_releases": 1}, static=STATIC,
                       build={"commands": BUILD})
    printed = app.relman("nginx-config", "--listen", nginx.listen, check=True).stdout
    assert "location ^~ /static/ {" in printed
    nginx.reload(printed)
    root = base_dir / "sample"

    app.relman("deploy", "s1", check=True)
    assert body(nginx, "/static/s1.css") == "s1 plain"
    assert fetch(nginx, "/static/s1.css")[2] == "no-cache"
    assert fetch(nginx, f"/static/s1.{HASH['s1']}.css")[1:] == ("s1 hashed", IMMUTABLE)
    assert body(nginx, "/assets/img/s1.png") == "s1"
    assert body(nginx, "/static/built.css") == "built-s1\n"
    built = root / "static/static/built.css"
    assert stat.S_IMODE(built.stat().st_mode) & 0o044 == 0o044

    release(app_repo, "s2")
    app.relman("deploy", "s2", check=True)
    for version in ("s1", "s2"):
        assert body(nginx, f"/static/{version}.css") == f"{version} plain"
        assert fetch(nginx, f"/static/{version}.{HASH[version]}.css")[2] == IMMUTABLE
        assert body(nginx, f"/assets/img/{version}.png") == version
    assert body(nginx, "/static/app.css") == "app of s2"
    assert body(nginx, "/static/built.css") == "built-s2\n"
    # Hard links of the live release's own files: one file system.
    live = (root / "current").resolve()
    assert os.path.samefile(root / "static/static/s2.css", live / "static/s2.css")

    app.relman("rollback", check=True)  # to s1: its app.css wins again
    assert body(nginx, "/static/app.css") == "app of s1"
    assert body(nginx, "/static/s2.css") == "s2 plain"
    app.relman("rollback", check=True)  # forward to s2
    assert body(nginx, "/static/app.css") == "app of s2"

    release(app_repo, "s3")
    app.relman("deploy", "s3", check=True)  # keep 1 + the rollback target s2: s1 goes
    assert len(list((root / "releases").iterdir())) == 2
    for path in ("/static/s1.css", f"/static/s1.{HASH['s1']}.css", "/assets/img/s1.png"):
        assert fetch(nginx, path)[0] == 404, path
    for version in ("s2", "s3"):
        assert body(nginx, f"/static/{version}.css") == f"{version} plain"
    assert not list((root / "static").glob(".tmp"))


def test_alias_cannot_be_left_through_the_prefix(stack, app_repo, base_dir):
    """Neither "/static../" nor an encoded or dotted path reaches a file outside
    static/<name>/: they go to the app (or are refused), never to the disk."""
    release(app_repo, "s1")
    app, nginx = stack("gunicorn", static={'"/static/"': "static"})
    nginx.reload(app.relman("nginx-config", "--listen", nginx.listen, check=True).stdout)
    app.relman("deploy", "s1", check=True)
    root = base_dir / "sample"
    (root / "static/secret.txt").write_text("not for the web")
    os.chmod(root / "static/secret.txt", 0o644)
    assert body(nginx, "/static/s1.css") == "s1 plain"
    for path in ("/static../secret.txt", "/static/../static/secret.txt",
                 "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt",
                 "/static/.tmp/", "/static/s1.1a2b3c4d5e6f.css/../../secret.txt"):
        status, text, _ = fetch(nginx, path)
        assert "not for the web" not in text, (path, status)


def test_daemon_killed_after_publication_puts_the_live_files_back(make_app, app_repo,
                                                                   base_dir):
    """kill -9 of the daemon after s2's files were published, before its switch: the next
    daemon gives the live s1 its own app.css back and keeps s2's own files (s2 is built
    and kept); deploying s2 again then publishes exactly what a clean deploy would."""
    release(app_repo, "s1")
    app = make_app(static={'"/static/"': "static"})
    app.relman("deploy", "s1", check=True)
    published = base_dir / "sample/static/static"
    release(app_repo, "s2")
    app.kill9()
    app.start(env={"RELMAN_TEST_CRASH_AT": "published"})
    app.relman("deploy", "s2")
    app.proc.wait(30)
    assert (published / "app.css").read_text() == "app of s2"  # the crash came after
    app.start()
    assert (published / "app.css").read_text() == "app of s1"
    assert (published / "s2.css").read_text() == "s2 plain"
    assert not (published.parent / ".tmp").exists()
    app.relman("deploy", "s2", check=True)
    names = sorted(p.name for p in published.iterdir())
    assert names == sorted(["app.css", "s1.css", f"s1.{HASH['s1']}.css", "s2.css",
                            f"s2.{HASH['s2']}.css"])
    assert (published / "app.css").read_text() == "app of s2"


def test_static_on_another_file_system_is_copied(make_app, app_repo, base_dir):
    """With static/ on a file system of its own (a tmpfs here), hard links fail with
    EXDEV: the files are copied, readable, and a second publication copies nothing."""
    from testing.fullfs import small_tmpfs

    release(app_repo, "s1")
    app = make_app(static={'"/static/"': "static"})
    root = base_dir / "sample"
    with small_tmpfs(root / "static"):
        os.chmod(root / "static", 0o755)
        out = app.relman("deploy", "s1", check=True).stdout
        assert "3 copied" in out, out
        copy = root / "static/static/s1.css"
        assert copy.read_text() == "s1 plain"
        assert not os.path.samefile(copy, root / "current/static/s1.css")
        assert stat.S_IMODE(copy.stat().st_mode) & 0o044 == 0o044
        again = app.relman("deploy", "s1", check=True).stdout
        assert "0 copied, 3 unchanged" in again, again
        app.stop()  # before the tmpfs goes
