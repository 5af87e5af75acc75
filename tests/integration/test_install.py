"""`make install` and `make uninstall` (issue 11): a real venv of the distro's Python with a
real pip install of this checkout, into a temporary INSTALL_ROOT, run for another user, then
upgraded and removed, leaving what was there before."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from testing.needs import need_root, skip_or_fail

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "relman@.service"
LOGROTATE = REPO / "contrib" / "logrotate" / "relman"
MANS = {"man1/relman.1": REPO / "man" / "relman.1",
        "man5/relman.toml.5": REPO / "man" / "relman.toml.5"}


def make(target: str, root: Path, *args: str, source: Path = REPO,
         umask: str = "077") -> subprocess.CompletedProcess[str]:
    """`make TARGET INSTALL_ROOT=root ARGS` in *source*, under *umask* (root's may be 077)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DESTDIR", "MAKEFLAGS")}
    argv = ["bash", "-c", f'umask {umask} && exec make "$@"', "make", "--no-print-directory",
            "-C", str(source), target, f"INSTALL_ROOT={root}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env,
                          check=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under *root* but the venv's inside: a file's sha256, a link's target, or
    "dir"."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name.startswith("opt/relman/"):
            continue
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def copy_checkout(dest: Path) -> Path:
    """A copy of this checkout's files (tracked and new, not ignored ones such as .venv)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True, check=True)
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def open_dirs(root: Path) -> None:
    """Open the directories a test made under *root* as /etc and /usr are, whatever the
    umask the tests run under."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def run_as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True,
                          text=True, timeout=60, cwd="/", check=False)


def installed_unit(root: Path) -> str:
    """contrib's unit with ExecStart naming the installed link."""
    text = UNIT.read_text()
    unit = text.replace("ExecStart=/usr/local/bin/relman ",
                        f"ExecStart={root}/usr/local/bin/relman ", 1)
    assert unit != text
    return unit


def check_installed(root: Path) -> None:
    """The link runs, for another user too; the unit, logrotate file and man pages are in
    place and readable by all."""
    relman = root / "usr/local/bin/relman"
    assert os.readlink(relman) == f"{root}/opt/relman/bin/relman"
    version = f"relman, version {metadata.version('relman')}"
    done = subprocess.run([str(relman), "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, version), done.stderr
    done = run_as_nobody(str(relman), "--version")
    assert (done.returncode, done.stdout.strip()) == (0, version), done.stderr

    assert (root / "etc/systemd/system/relman@.service").read_text() == installed_unit(root)
    assert (root / "etc/logrotate.d/relman").read_bytes() == LOGROTATE.read_bytes()
    mandoc = shutil.which("mandoc") or skip_or_fail(
        "mandoc is not installed", "install it (apt-get install mandoc, .ci/system-deps)")
    for name, shipped in MANS.items():
        page = root / "usr/local/share/man" / name
        assert page.read_bytes() == shipped.read_bytes()
        shown = run_as_nobody(mandoc, "-Tutf8", str(page))
        assert shown.returncode == 0, shown.stderr
        assert "relman" in shown.stdout

    shipped = [root / "etc/systemd/system/relman@.service", root / "etc/logrotate.d/relman",
               *(root / "usr/local/share/man" / name for name in MANS)]
    closed = [str(p) for p in [*(root / "opt/relman").rglob("*"), *shipped,
                               *(d for f in shipped for d in f.parents if root in d.parents)]
              if not p.is_symlink() and not _readable_by_all(p)]
    assert not closed, f"not readable by other users: {closed[:5]}"


def _readable_by_all(path: Path) -> bool:
    need = 0o005 if path.is_dir() else 0o004
    return path.stat().st_mode & need == need


def test_install_runs_for_the_deploy_user_upgrades_and_uninstalls(base_dir, tmp_path):
    """`make install` under umask 077 gives a relman that another user runs, from a copy of
    the checkout that is gone afterwards; installing again changes nothing but keeps an
    edited logrotate file and remakes a venv of another Python; `make uninstall` leaves
    what was there before (and the edited file)."""
    need_root("runs the installed relman as nobody")
    root = base_dir
    (root / "etc/logrotate.d").mkdir(parents=True)
    (root / "etc/logrotate.d/nginx").write_text("/var/log/nginx/*.log { daily }\n")
    (root / "etc/relman").mkdir()
    (root / "etc/relman/shop.toml").write_text('[app]\nname = "shop"\n')
    open_dirs(root)
    before = snapshot(root)

    source = copy_checkout(tmp_path / "first")
    done = make("install", root, source=source)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"linked as {root}/usr/local/bin/relman" in done.stdout
    shutil.rmtree(source)   # the venv holds a copy, not a link to the checkout
    check_installed(root)
    installed = snapshot(root)

    # Again (an upgrade from a new checkout): the same files, nothing added.
    done = make("install", root, source=copy_checkout(tmp_path / "second"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(root) == installed
    check_installed(root)

    # An older relman's man page, as the list recorded it: the upgrade replaces it.
    page = root / "usr/local/share/man/man1/relman.1"
    page.write_text(".TH RELMAN 1\nolder\n")
    manifest = root / "opt/relman/.relman-install"
    manifest.write_text(manifest.read_text().replace(
        hashlib.sha256(MANS["man1/relman.1"].read_bytes()).hexdigest(),
        hashlib.sha256(page.read_bytes()).hexdigest()))
    # The admin set the logrotate file's path; the distro's Python was upgraded.
    logrotate = root / "etc/logrotate.d/relman"
    edited = logrotate.read_text().replace("/srv/*/log/*.log", "/srv/shop/log/*.log")
    logrotate.write_text(edited)
    cfg = root / "opt/relman/pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace("version = ", "version = 3.10.0\nwas = "))
    done = make("install", root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"kept {logrotate}: edited since it was installed" in done.stderr
    assert "making it again" in done.stdout
    assert logrotate.read_text() == edited
    assert page.read_bytes() == MANS["man1/relman.1"].read_bytes()
    assert "was = " not in cfg.read_text()
    assert os.access(root / "opt/relman/bin/relman", os.X_OK)

    # A program still running from the venv (a daemon) keeps it: it imports from it later.
    sleeper = subprocess.Popen([str(root / "opt/relman/bin/python"), "-c",
                                "import time; time.sleep(120)"])
    try:
        done = make("uninstall", root)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.returncode != 0
    assert f"pid {sleeper.pid} still run(s) from {root}/opt/relman" in done.stderr
    assert (root / "opt/relman/bin/relman").exists()

    done = make("uninstall", root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"kept {logrotate}" in done.stderr
    left = snapshot(root)
    assert left.pop("etc/logrotate.d/relman") == hashlib.sha256(edited.encode()).hexdigest()
    assert left == before

    done = make("uninstall", root)
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout


def test_install_takes_over_a_copy_by_hand_and_opens_it_up(base_dir):
    """The README's old steps (a venv made by hand under umask 077, the link, the unit copied
    as is) are taken over by `make install`: the venv is opened to other users, and
    `make uninstall` then removes them too; a logrotate file edited by hand is left alone."""
    need_root("runs the installed relman as nobody")
    root = base_dir
    python = subprocess.run(["make", "-s", "-C", str(REPO), "--eval=show:;@echo $(PYTHON)",
                             "show"], capture_output=True, text=True, check=True).stdout.strip()
    (root / "opt").mkdir(mode=0o755)   # /opt is there, and open
    (root / "opt").chmod(0o755)
    subprocess.run(["bash", "-c", f'umask 077 && {python} -m venv "$1"', "venv",
                    str(root / "opt/relman")], check=True, timeout=120)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/relman").symlink_to(root / "opt/relman/bin/relman")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/relman@.service").write_text(installed_unit(root))
    (root / "etc/logrotate.d").mkdir()
    logrotate = root / "etc/logrotate.d/relman"   # copied and edited by hand: not ours
    logrotate.write_text(LOGROTATE.read_text().replace("su deploy deploy", "su web web"))
    logrotate.chmod(0o644)
    for made in ("usr", "etc"):
        open_dirs(root / made)

    done = make("install", root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"left {logrotate} alone: make install did not put it there" in done.stderr
    assert "su web web" in logrotate.read_text()
    logrotate.write_bytes(LOGROTATE.read_bytes())   # for check_installed; no longer listed
    check_installed(root)
    logrotate.write_text("edited by hand\n")

    done = make("uninstall", root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(root) == {"etc": "dir", "etc/systemd": "dir", "etc/systemd/system": "dir",
                              "opt": "dir", "usr": "dir", "usr/local": "dir",
                              "usr/local/bin": "dir", "etc/logrotate.d": "dir",
                              "etc/logrotate.d/relman": hashlib.sha256(
                                  b"edited by hand\n").hexdigest(),
                              }, "it removes what it took over, and only that"


def _foreign_relman(root: Path) -> dict[str, str]:
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/relman").write_text("#!/bin/sh\necho a pip --break-system-packages\n")
    return {}


def _not_a_venv(root: Path) -> dict[str, str]:
    (root / "opt/relman").mkdir(parents=True)
    (root / "opt/relman/notes.txt").write_text("not a venv\n")
    return {}


@pytest.mark.parametrize(
    ("arrange", "says"),
    [
        (lambda root: {"DESTDIR": str(root)}, "DESTDIR is not supported"),
        (lambda root: {"BINDIR": "usr/local/bin"}, "BINDIR=usr/local/bin: want an absolute"),
        (lambda root: {"MANDIR": f"{root}/my man"}, "want an absolute path of letters"),
        (lambda root: {"PYTHON": "/bin/false"}, "is not a Python 3.11 or later"),
        (_foreign_relman, "relman exists and is not a link to"),
        (_not_a_venv, "relman exists and is not a virtualenv"),
    ],
    ids=["destdir", "relative-path", "space-in-path", "not-python", "foreign-relman",
         "not-a-venv"],
)
def test_install_refuses_bad_input_before_changing_anything(base_dir, arrange, says):
    """Each bad setting or thing in the way stops `make install` with one line that names
    it, and nothing under the root changes."""
    root = base_dir
    settings = arrange(root)
    before = snapshot(root) | {p.name: p.read_text() for p in root.glob("opt/relman/*")}
    args = [f"{key}={value}" for key, value in settings.items()]
    done = make("install", root, *args)
    assert done.returncode != 0, done.stdout
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(root) | {p.name: p.read_text() for p in root.glob("opt/relman/*")} == before


def test_install_as_a_user_who_may_not_write_there_says_to_run_it_as_root(base_dir):
    """`make install` by a user who cannot write the paths stops at once and says why."""
    need_root("runs make install as nobody")
    source = copy_checkout(base_dir / "src")
    subprocess.run(["chmod", "-R", "go+rX", str(source)], check=True)   # whatever our umask
    (base_dir / "root").mkdir()
    (base_dir / "root").chmod(0o755)
    done = subprocess.run(["runuser", "-u", "nobody", "--", "make", "--no-print-directory",
                           "-C", str(source), "install", f"INSTALL_ROOT={base_dir}/root"],
                          capture_output=True, text=True, timeout=120, cwd="/", check=False)
    assert done.returncode != 0, done.stdout
    assert f"cannot write {base_dir}/root (for {base_dir}/root/opt/relman): run it as root" \
        in done.stderr, done.stderr
    assert not any((base_dir / "root").iterdir())
