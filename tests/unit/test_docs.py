"""The man pages, the module budget and the wheel stay true to the code (STYLE practice 19).

man/relman.1 and man/relman.toml.5 are written by hand; these tests read their man(7)
source with a few conventions, stated at the top of each page:
- relman.1: each command is a `.SS NAME` under COMMANDS, its options are `.TP` tags in that
  subsection, and the group's options are `.TP` tags under GLOBAL OPTIONS;
- relman.toml.5: each table is a `.SS [table]` under KEYS, and each key is a `.TP` tag
  `\\fBkey\\fR (type; default \\fBvalue\\fR)` or `\\fBkey\\fR (type; required)`.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import click
import pytest

from relman.cli.commands import SSH_ALLOWED, cli
from relman.config import load_config, schema
from relman.errors import BY_CODE, INTERNAL_ERROR_EXIT
from testing.needs import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "relman"
MAN1 = ROOT / "man" / "relman.1"
MAN5 = ROOT / "man" / "relman.toml.5"
MAX_MODULE_LINES = 400
TEMPLATES = ("relman/templates/nginx-http.conf", "relman/templates/nginx-uwsgi.conf")
# Names that say nothing (STYLE practice 2) or that belong to the app servers relman runs.
BANNED_NAMES = frozenset({"util", "utils", "helpers", "common", "misc", "gunicorn", "uwsgi"})

Page = dict[str, dict[str, list[str]]]  # .SH title -> .SS title ("" before any) -> lines

_FONT = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)")
_ESCAPES = {r"\-": "-", r"\(dq": '"', r"\(<=": "<=", r"\(lq": '"', r"\(rq": '"',
            r"\(bu": "*", r"\e": "\\", r"\&": "", r"\ ": " "}
_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z0-9][\w-]*")


def plain(text: str) -> str:
    """*text* without font escapes, and with `\\-` and the other escapes the pages use
    replaced by the characters they print."""
    text = _FONT.sub("", text)
    for escape, char in _ESCAPES.items():
        text = text.replace(escape, char)
    return text


def _title(line: str) -> str:
    return plain(line.split(None, 1)[1] if " " in line else "").strip().strip('"')


def parse(path: Path) -> Page:
    """The page's lines (comments dropped) grouped by section and subsection."""
    page: Page = {}
    section = subsection = ""
    for line in path.read_text().splitlines():
        if line.startswith('.\\"'):
            continue
        if line.startswith(".SH "):
            section, subsection = _title(line), ""
            page[section] = {"": []}
        elif line.startswith(".SS ") and section:
            subsection = _title(line)
            page[section][subsection] = []
        elif section:
            page[section][subsection].append(line)
    return page


def tags(lines: list[str]) -> Iterator[str]:
    """The tag lines of the `.TP` items in *lines*, in plain text."""
    for before, line in itertools.pairwise(lines):
        if before.strip() == ".TP":
            yield plain(line)


def options_in(text: str) -> set[str]:
    """Every option-like word (-f, --server-name) in *text*."""
    return set(_OPTION.findall(text))


def click_options(command: click.Command, *, with_help: bool = False) -> set[str]:
    """All option names of *command*, long and short, as `param.opts` spells them."""
    params = (command.get_params(click.Context(command, **command.context_settings))
              if with_help else command.params)
    found = {opt for p in params if isinstance(p, click.Option)
             for opt in (*p.opts, *p.secondary_opts)}
    if isinstance(command, click.Group) and command is not cli:  # fleet: one subsection
        for sub in command.commands.values():
            found |= click_options(sub)
    return found


MAN1_PAGE = parse(MAN1)
MAN5_PAGE = parse(MAN5)


def test_every_command_has_a_subsection_in_relman_1() -> None:
    """Each click command has its own `.SS` subsection under COMMANDS in relman(1)."""
    missing = sorted(set(cli.commands) - set(MAN1_PAGE["COMMANDS"]))
    assert not missing, f"commands missing from man/relman.1 COMMANDS: {missing}"


def test_relman_1_documents_no_command_that_does_not_exist() -> None:
    """Every command subsection of relman(1) names a click command."""
    extra = sorted(set(MAN1_PAGE["COMMANDS"]) - set(cli.commands) - {""})
    assert not extra, f"man/relman.1 documents commands that cli.py lacks: {extra}"


def test_every_command_option_is_documented_under_its_command() -> None:
    """Each option of each command, long and short form, is a `.TP` tag of its subsection."""
    missing = []
    for name, command in sorted(cli.commands.items()):
        lines = MAN1_PAGE["COMMANDS"].get(name, [])
        documented = set().union(*map(options_in, tags(lines)))
        missing += [f"{name} {opt}" for opt in sorted(click_options(command) - documented)]
    assert not missing, f"options missing from man/relman.1: {missing}"


def test_relman_1_documents_no_option_a_command_lacks() -> None:
    """Every option tagged in a command's subsection is an option of that command."""
    extra = []
    for name, lines in MAN1_PAGE["COMMANDS"].items():
        if name in cli.commands:
            documented = set().union(*map(options_in, tags(lines)))
            extra += [f"{name} {opt}" for opt in sorted(documented - click_options(
                cli.commands[name]))]
    assert not extra, f"man/relman.1 documents options that cli.py lacks: {extra}"


def test_every_command_argument_is_named_in_its_subsection() -> None:
    """Each positional argument of a command (REF, RELEASE) appears in its subsection."""
    missing = []
    for name, command in sorted(cli.commands.items()):
        text = plain("\n".join(MAN1_PAGE["COMMANDS"].get(name, [])))
        subs = command.commands.values() if isinstance(command, click.Group) else ()
        missing += [f"{name} {p.human_readable_name}"
                    for p in [*command.params, *(q for s in subs for q in s.params)]
                    if isinstance(p, click.Argument)
                    and not re.search(rf"\b{p.human_readable_name}\b", text)]
    assert not missing, f"arguments missing from man/relman.1: {missing}"


def test_every_global_option_is_documented() -> None:
    """Each option of the group (with --version, -h and --help) is a GLOBAL OPTIONS tag."""
    documented = set().union(*map(options_in, tags(MAN1_PAGE["GLOBAL OPTIONS"][""])))
    expected = click_options(cli, with_help=True)
    assert expected == documented, (
        f"missing: {sorted(expected - documented)}, not in cli.py: "
        f"{sorted(documented - expected)}")


def test_ssh_command_section_lists_every_allowed_command() -> None:
    """The ssh-command subsection names every command that ssh-command lets through."""
    text = plain("\n".join(MAN1_PAGE["COMMANDS"]["ssh-command"]))
    missing = sorted(c for c in SSH_ALLOWED if not re.search(rf"\b{c}\b", text))
    assert not missing, f"ssh-command in man/relman.1 does not list {missing}"


def test_every_exit_status_is_documented() -> None:
    """Each exit code relman can return is a tag under EXIT STATUS in relman(1)."""
    codes = {0, INTERNAL_ERROR_EXIT} | {cls.exit_code for cls in BY_CODE.values()}
    documented = {int(t.split()[1]) for t in tags(MAN1_PAGE["EXIT STATUS"][""])
                  if t.startswith(".B ")}
    assert codes <= documented, f"exit codes missing from man/relman.1: {codes - documented}"


def _documented_keys() -> dict[str, tuple[str, str]]:
    """dotted key -> (type, default or "") as relman.toml(5) shows them."""
    found = {}
    for table, lines in MAN5_PAGE["KEYS"].items():
        for tag in tags(lines):
            m = re.fullmatch(r"(\w+) \((.+?); (?:default (.+)|required)\)", tag.strip())
            assert m, f"[{table}]: tag {tag!r} does not read `key (type; default value)`"
            found[f"{table.strip('[]')}.{m[1]}"] = (m[2], m[3] or "")
    return found


def test_every_config_key_is_documented_with_its_type_and_default() -> None:
    """Each key of schema() is a tag under its `.SS [table]` with schema()'s type and default."""
    documented = _documented_keys()
    wrong = [f"{key}: schema says ({kind}; {default or 'required'}), page says "
             f"{documented.get(key, 'nothing')}"
             for key, kind, default, _doc in schema()
             if documented.get(key) != (kind, default)]
    assert not wrong, "man/relman.toml.5 is out of date:\n" + "\n".join(wrong)


def test_relman_toml_5_documents_no_key_that_does_not_exist() -> None:
    """Every key tagged in relman.toml(5) is a key of schema()."""
    extra = sorted(set(_documented_keys()) - {key for key, *_ in schema()})
    assert not extra, f"man/relman.toml.5 documents keys that config.py lacks: {extra}"


def _examples(lines: list[str]) -> Iterator[str]:
    """The text of each `.EX` ... `.EE` block in *lines*."""
    block: list[str] | None = None
    for line in lines:
        if line.startswith(".EX"):
            block = []
        elif line.startswith(".EE") and block is not None:
            yield plain("\n".join(block)) + "\n"
            block = None
        elif block is not None:
            block.append(line)


def test_relman_toml_5_examples_are_valid_configs(tmp_path: Path) -> None:
    """Each example of relman.toml(5) loads; a lone [server] table gets an [app] table."""
    examples = list(_examples(MAN5_PAGE["EXAMPLES"][""]))
    assert len(examples) >= 2
    app = '[app]\nname = "x"\nrepo = "/srv/git/x.git"\nroot = "/srv/x"\n\n'
    for n, text in enumerate(examples):
        path = tmp_path / f"example{n}.toml"
        path.write_text(text if "[app]" in text else app + text)
        load_config(path)  # raises ConfigError, naming the key, if the page is wrong


@pytest.mark.parametrize("page", [MAN1, MAN5], ids=lambda p: p.name)
def test_man_page_passes_mandoc_lint(page: Path) -> None:
    """`mandoc -Tlint -W warning` prints nothing for the page."""
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        skip_or_fail("mandoc is not installed", "lint the man pages (.ci/system-deps)")
    proc = subprocess.run([mandoc, "-Tlint", "-W", "warning", str(page)],
                          capture_output=True, text=True, check=False)
    assert proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_fits_the_size_budget() -> None:
    """No module under relman/ is longer than 400 lines (STYLE practice 2)."""
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in _modules()}
    over = {str(p): n for p, n in sorted(sizes.items()) if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


def _dependency_import_names() -> set[str]:
    """Import names of relman's declared dependencies, test extras included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project.get("optional-dependencies", {}).values() for r in extra]
    dists = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
             for r in requirements}
    names = {d.replace("-", "_") for d in dists}
    for name, owners in metadata.packages_distributions().items():
        if any(o.lower().replace("_", "-") in dists for o in owners):
            names.add(name)
    return names


# DESIGN section 1 puts the supervisor part under relman/ because supervisord owns the bare
# name, which the test extras now install (bench/supervise.py compares the two); nested, it
# shadows nothing, and ruff's banned-api keeps a bare `import supervisor` out.
DESIGN_NESTED = frozenset({"relman/supervisor"})


def test_no_module_shadows_stdlib_or_a_dependency() -> None:
    """No module or package under relman/ is named after a stdlib module or a dependency."""
    taken = set(sys.stdlib_module_names) | _dependency_import_names() | BANNED_NAMES
    names = {p.relative_to(ROOT): p.stem for p in _modules()
             if p.stem not in ("__init__", "__main__")}
    names |= {p.relative_to(ROOT): p.name for p in PACKAGE.rglob("*")
              if p.is_dir() and p.name != "__pycache__"}
    clashes = sorted(str(path) for path, name in names.items()
                     if name in taken and str(path) not in DESIGN_NESTED)
    assert not clashes, f"modules named after stdlib modules or dependencies: {clashes}"


def _build_wheel(out: Path) -> Path:
    """Build relman's wheel into *out*: pip when hatchling is importable, else uv."""
    hatchling = subprocess.run([sys.executable, "-c", "import hatchling"],
                               capture_output=True, check=False).returncode == 0
    if hatchling:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-w", str(out), str(ROOT)]
    else:
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if uv is None:
            skip_or_fail("neither hatchling nor uv is available to build the wheel",
                         "install uv or hatchling in the test venv")
        argv = [uv, "build", "--wheel", "--quiet", "-o", str(out), str(ROOT)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}{proc.stderr}"
    (wheel,) = out.glob("relman-*.whl")
    return wheel


def test_wheel_ships_the_nginx_templates(tmp_path: Path) -> None:
    """The built wheel contains the nginx templates that `relman nginx-config` reads."""
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
    missing = [t for t in TEMPLATES if t not in names]
    assert not missing, f"the wheel lacks {missing}"
