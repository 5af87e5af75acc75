"""What relman keeps from other local users and out of its output: the mirror, credentials
in app.repo, a candidate's socket before its mode is set (issue "never lose a process",
point 7)."""

from __future__ import annotations

import stat
from pathlib import Path

from testing.git import release_version

TOKEN = "s3cr3t-t0ken"


def root_of(app) -> Path:
    return Path(app.config.with_suffix(""))


def too_open(tree: Path) -> list[str]:
    """Entries under *tree* (itself included) that other users may read, write or enter,
    or whose group may write. Objects a local clone hard-linked from the source repository
    share its inodes, and so its modes: they are skipped (repo/ itself keeps them closed)."""
    found = []
    for path in [tree, *tree.rglob("*")]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o027 and not stat.S_ISLNK(st.st_mode) and (
                stat.S_ISDIR(st.st_mode) or st.st_nlink == 1):
            found.append(f"{oct(mode)} {path.relative_to(tree.parent)}")
    return found


def test_mirror_stays_private(make_app, app_repo):
    """repo/ (the history and app.repo with any token) is never open to other users: not
    after the first clone, not after a fetch; a mirror left 0755 by an older relman is
    closed at its next fetch."""
    app = make_app()
    repo = root_of(app) / "repo"
    app.relman("deploy", "v1", check=True)
    assert too_open(repo) == []
    repo.chmod(0o755)
    release_version(app_repo, "v2")
    app.relman("deploy", "v2", check=True)
    assert too_open(repo) == []
    assert stat.S_IMODE(repo.stat().st_mode) == 0o750


def test_credentials_in_app_repo_are_never_shown_or_recorded(make_app):
    """A token in app.repo reaches git only: the failing deploy's output, the history, the
    daemon's log, the fetch log, status and check show `https://***@host`."""
    app = make_app(start=False)
    url = f"https://ci:{TOKEN}@127.0.0.1:1/acme/shop.git"
    text = app.config.read_text()
    app.config.write_text("\n".join(f'repo = "{url}"' if line.startswith("repo = ") else line
                                    for line in text.splitlines()) + "\n")
    app.start(env={"no_proxy": "*", "NO_PROXY": "*"})
    proc = app.relman("deploy", "v1")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "fetching https://***@127.0.0.1:1/acme/shop.git failed" in proc.stderr
    root = root_of(app)
    shown = {
        "deploy output": proc.stdout + proc.stderr,
        "history.jsonl": (root / "log/history.jsonl").read_text(),
        "fetch.log": (root / "log/fetch.log").read_text(),
        "daemon log": app.log.read_text(),
        "history": app.relman("history").stdout,
        "status": app.relman("--json", "status").stdout,
        "check": app.relman("check").stdout,
    }
    assert "127.0.0.1:1/acme/shop.git" in shown["fetch.log"]
    assert "***@127.0.0.1" in shown["history.jsonl"]
    leaks = [name for name, text in shown.items() if TOKEN in text or "ci:" in text]
    assert leaks == []
