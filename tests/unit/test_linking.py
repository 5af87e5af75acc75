"""The pure decisions of build.link_unchanged: which files of a new tree may be hard-linked
from the live release, and the index each export leaves."""

from __future__ import annotations

import os
from pathlib import Path

from relman.releases.linking import (
    Entry,
    Index,
    attributes_allow,
    batches,
    choose_linkable,
    identities,
    load_index,
    parse_ls_tree,
    save_index,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40
RW, RX = 0o100644, 0o100755
INDEX = Index(sha="1" * 40, files={
    "same.txt": Entry("100644", A, (10, 5, 100, RW)),
    "exec.sh": Entry("100755", B, (11, 6, 200, RX)),
    "edited.txt": Entry("100644", A, (12, 5, 300, RW)),
    "changed.txt": Entry("100644", A, (13, 5, 400, RW)),
    "moded.txt": Entry("100644", A, (14, 5, 500, RW)),
    "gone.txt": Entry("100644", A, (15, 5, 600, RW)),
    "chmodded.txt": Entry("100644", A, (16, 5, 700, RW)),
})
FOUND = {"same.txt": (10, 5, 100, RW), "exec.sh": (11, 6, 200, RX),
         "edited.txt": (12, 9, 301, RW), "changed.txt": (13, 5, 400, RW),
         "moded.txt": (14, 5, 500, RW), "gone.txt": None, "chmodded.txt": (16, 5, 700, RX)}


def test_only_unchanged_untouched_regular_files_are_linkable() -> None:
    """Same mode and blob, still the inode the export wrote with its size and mtime: linked.
    Another blob, another mode, a file written or chmod-ed since, a missing one, a
    symlink, a new path or a submodule: written afresh."""
    tree = {"same.txt": ("100644", A), "exec.sh": ("100755", B), "edited.txt": ("100644", A),
            "changed.txt": ("100644", C), "moded.txt": ("100755", A), "gone.txt": ("100644", A),
            "chmodded.txt": ("100644", A), "link": ("120000", A), "new.txt": ("100644", A),
            "sub": ("160000", C)}
    assert choose_linkable(tree, INDEX, FOUND) == {"same.txt", "exec.sh"}


def test_a_file_replaced_by_another_inode_is_not_linkable() -> None:
    """A file replaced (rename over it) is another inode, even with the same size and mtime."""
    tree = {"same.txt": ("100644", A)}
    assert choose_linkable(tree, INDEX, {"same.txt": (99, 5, 100, RW)}) == frozenset()


def test_parse_ls_tree_reads_nul_separated_records_with_odd_paths() -> None:
    """Paths with tabs, spaces and newlines come through whole."""
    out = (f"100644 blob {A}\tplain.txt\x00120000 blob {B}\tweird\tname\nx\x00"
           f"160000 commit {C}\tvendor/sub\0").encode()
    assert parse_ls_tree(out) == {"plain.txt": ("100644", A), "weird\tname\nx": ("120000", B),
                                  "vendor/sub": ("160000", C)}


def test_attributes_must_match_and_never_ask_for_export_subst() -> None:
    """Linking is allowed with no .gitattributes or the same ones in both trees; not when
    they differ or one asks for export-subst."""
    texts = {A: b"*.txt text eol=lf\n", B: b"VERSION export-subst\n", C: b"*.sh eol=crlf\n"}
    plain = {"app.py": ("100644", A)}
    assert attributes_allow(plain, plain, texts.__getitem__)
    same = {**plain, ".gitattributes": ("100644", A), "doc/.gitattributes": ("100644", C)}
    assert attributes_allow(same, same, texts.__getitem__)
    assert not attributes_allow(same, {**same, "doc/.gitattributes": ("100644", A)},
                                texts.__getitem__)
    assert not attributes_allow(same, plain, texts.__getitem__)
    subst = {**plain, ".gitattributes": ("100644", B)}
    assert not attributes_allow(subst, subst, texts.__getitem__)


def test_batches_keep_each_argument_list_under_the_budget() -> None:
    """Paths are split into lists whose encoded size stays within the budget, in order."""
    paths = [f"dir/file{n:06d}" for n in range(100)]  # 15 bytes each with the separator
    split = batches(paths, budget=150)
    assert [len(b) for b in split] == [10] * 10
    assert [p for b in split for p in b] == paths
    assert batches([], budget=150) == []
    assert batches(["x" * 500], budget=150) == [["x" * 500]]


def test_index_round_trips_and_an_unreadable_one_means_no_linking(tmp_path: Path) -> None:
    """save_index() then load_index() gives the same Index; a missing, cut-short or
    other-version file gives None."""
    path = tmp_path / "r.tree"
    save_index(path, INDEX)
    assert load_index(path) == INDEX
    assert load_index(tmp_path / "missing.tree") is None
    path.write_text('{"version": 2, "sha": "x", "files": {"a": ["100644"')
    assert load_index(path) is None
    path.write_text('{"version": 99, "sha": "x", "files": {}}')
    assert load_index(path) is None
    path.write_text('{"version": 2, "sha": "x", "files": {"a": [1, 2]}}')
    assert load_index(path) is None


def test_identities_never_follow_a_symlinked_directory(tmp_path: Path) -> None:
    """A file reached through a symlink (a build.shared directory) has no identity, nor
    has a symlink or a missing file; a regular file has its inode, size and mtime."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real/f").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/f").write_text("y")
    os.symlink(tmp_path / "elsewhere", tmp_path / "media")
    os.symlink("f", tmp_path / "real/link")
    st = (tmp_path / "real/f").stat()
    assert identities(tmp_path, ["real/f", "media/f", "real/link", "nope"]) == {
        "real/f": (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode), "media/f": None,
        "real/link": None, "nope": None}
