"""intlm prepare's --include/--exclude globs and its binary files (skipped in a folder with one
line that counts them, refused when named), and ``intlm cache list|clear``."""

import json

import pytest

from intlm import data
from intlm.data import open_store

from conftest import run_main, text_bytes
from test_cli import assert_one_error_line


pytestmark = pytest.mark.usefixtures("cache_dir")  # each test its own corpus cache (conftest.py)


@pytest.fixture
def tree(tmp_path):
    """A source tree: text in several kinds of file, a compiled file, and a folder of them."""
    root = tmp_path / "src"
    for i, name in enumerate(["a.py", "b.py", "notes.md", "docs/guide.md", "docs/api.txt", "pkg/c.py"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text_bytes(40, seed=i))
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.cpython-311.pyc").write_bytes(bytes(range(256)) * 4)
    (root / "pkg" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    return root


def documents(store) -> list:
    """The prepared documents, relative to the tree, sorted."""
    return sorted({s["path"].split("/src/")[1] for s in open_store(store).meta["sources"]})


@pytest.mark.parametrize("args,expected", [
    ([], ["a.py", "b.py", "docs/api.txt", "docs/guide.md", "notes.md", "pkg/c.py"]),
    (["--include", "*.py"], ["a.py", "b.py", "pkg/c.py"]),
    (["--include", "*.py", "--include", "*.md"], ["a.py", "b.py", "docs/guide.md", "notes.md", "pkg/c.py"]),
    (["--exclude", "docs"], ["a.py", "b.py", "notes.md", "pkg/c.py"]),  # a folder's name
    (["--include", "docs/*"], ["docs/api.txt", "docs/guide.md"]),  # a path inside the folder
    (["--include", "*.py", "--exclude", "pkg/*"], ["a.py", "b.py"]),
])
def test_prepare_include_and_exclude(monkeypatch, capsys, tmp_path, tree, args, expected):
    code, out, err = run_main(monkeypatch, capsys, "prepare", tree, "--out", tmp_path / "c.zarr", *args)
    assert code == 0, err
    assert documents(tmp_path / "c.zarr") == expected
    assert out.startswith(str(tmp_path / "c.zarr"))


def test_binary_files_in_a_folder_are_skipped_with_one_counting_line(monkeypatch, capsys, tmp_path, tree):
    """The .pyc and the .png are left out; one stderr line counts them. Excluded, they are not counted."""
    code, _, err = run_main(monkeypatch, capsys, "prepare", tree, "--out", tmp_path / "c.zarr")
    assert code == 0
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith("note: skipped 2 binary files (")
    code, _, err = run_main(monkeypatch, capsys, "prepare", tree, "--out", tmp_path / "d.zarr",
                            "--exclude", "__pycache__", "--exclude", "*.png")
    assert code == 0 and err == ""


def test_a_binary_file_named_alone_is_refused(monkeypatch, capsys, tmp_path, tree):
    code, _, err = run_main(monkeypatch, capsys, "prepare", tree / "pkg" / "logo.png", tree / "a.py",
                            "--out", tmp_path / "c.zarr")
    assert code == 2
    assert_one_error_line(err, "logo.png", "looks binary")
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--include", "*.rs"], "--include/--exclude"),  # nothing matches
    (["--include", "*.pyc"], "no text files in"),  # only binary files match: the error counts them
])
def test_a_folder_with_nothing_to_take_is_one_error(monkeypatch, capsys, tmp_path, tree, args, fragment):
    code, _, err = run_main(monkeypatch, capsys, "prepare", tree, "--out", tmp_path / "c.zarr", *args)
    assert code == 2
    assert_one_error_line(err, fragment)


def test_pretrain_on_a_folder_skips_its_binary_files(tmp_path, tree, cache_dir):
    """A folder given to pretrain (prepared into the cache) is no longer refused over one binary file."""
    corpus = data.load_corpus(str(tree), cache_dir)
    assert len(corpus.meta["sources"]) == 6


def test_cache_list_and_clear(monkeypatch, capsys, tmp_path, tree, cache_dir):
    """list: a line per store (size, name, what it was prepared from) and a total; clear: the text
    corpora go, the default corpus stays unless --all."""
    single = tmp_path / "one.txt"
    single.write_bytes(text_bytes(300, seed=9))
    data.load_corpus(str(tree), cache_dir)
    data.load_corpus(str(single), cache_dir)
    default = cache_dir / "shakespeare.zarr"  # stands in for the downloaded default corpus
    data.prepare([str(single)], default)
    code, out, _ = run_main(monkeypatch, capsys, "cache", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert any(line.endswith(f"{single}") and "corpus-" in line for line in lines)
    assert any(line.endswith(f"{tree} (6 files)") for line in lines)
    assert "shakespeare.zarr  the default corpus" in lines[2]
    assert lines[-1].endswith(f"in {cache_dir} (3 entries)")
    code, out, _ = run_main(monkeypatch, capsys, "cache", "clear")
    assert code == 0 and out.startswith("freed ") and "(2 entries)" in out
    assert sorted(p.name for p in cache_dir.iterdir()) == ["shakespeare.zarr"]
    assert json.loads((default / "zarr.json").read_text())["attributes"]["format"] == data.FORMAT
    code, out, _ = run_main(monkeypatch, capsys, "cache", "clear", "--all")
    assert code == 0 and "(1 entries)" in out and list(cache_dir.iterdir()) == []
    code, out, _ = run_main(monkeypatch, capsys, "cache", "list")
    assert code == 0 and out.splitlines() == [f"      0 B  in {cache_dir} (0 entries)"]


def test_cache_list_of_a_missing_cache(monkeypatch, capsys, cache_dir):
    code, out, err = run_main(monkeypatch, capsys, "cache", "list")
    assert (code, err) == (0, "") and "(0 entries)" in out
    assert run_main(monkeypatch, capsys, "cache", "clear")[:2] == (0, f"freed 0 B (0 entries) in {cache_dir}\n")
