"""Tests for intlm.checkpoint: roundtrips, determinism, ordering, corruption and atomicity."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from intlm import atomic, checkpoint
from intlm.checkpoint import latest, list_checkpoints, load, save
from intlm.errors import IntlmError

from conftest import dead_pid


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "embed": rng.integers(-128, 128, (16, 8), dtype=np.int8),
        "bias": rng.integers(-(2**31), 2**31, (8,), dtype=np.int32),
        "zeros": np.zeros(6, np.int16),
        "scalar": np.array(123456789012, np.int64),
        "empty": np.zeros((0, 3), np.uint8),
        "mask": np.array([True, False, True]),
    }


ATTRS = {"seed": 7, "config": {"dim": 8, "layers": [1, 2]}, "cursor": 12345}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def chunk_of(ckpt: Path, name: str) -> Path:
    chunks = [p for p in (ckpt / name).rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunks) == 1
    return chunks[0]


def expect_error(path, *fragments):
    with pytest.raises(IntlmError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert str(f) in msg, msg
    return msg


def test_roundtrip(tmp_path):
    arrays = sample_arrays()
    path = save(tmp_path / "run", 42, arrays, ATTRS)
    assert path == tmp_path / "run" / "step-00000042"
    ck = load(path)
    assert ck.step == 42 and ck.path == path
    assert ck.attrs == {**ATTRS, "step": 42}
    assert sorted(ck.arrays) == sorted(arrays)
    for name, a in arrays.items():
        assert ck.arrays[name].dtype == a.dtype and ck.arrays[name].shape == a.shape
        assert np.array_equal(ck.arrays[name], a)
    assert json.loads((path / "zarr.json").read_text())["attributes"]["content_hash"] == checkpoint.content_hash(
        arrays, ck.attrs
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arrays=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
        hnp.arrays(
            st.sampled_from([np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64]),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        ),
        max_size=4,
    ),
    step=st.integers(0, 10**9),
)
def test_roundtrip_property(tmp_path, arrays, step):
    ck = load(save(tmp_path / "prop", step, arrays, {"k": step}))
    assert ck.step == step and sorted(ck.arrays) == sorted(arrays)
    for name, a in arrays.items():
        assert ck.arrays[name].dtype == a.dtype and np.array_equal(ck.arrays[name], a)


def test_a_0d_array_and_a_1_element_array_are_different_content(tmp_path):
    """The hash names the shape, so a save over the other's checkpoint replaces it (found by the
    round-trip property, whose examples share one folder and sometimes a step)."""
    scalar, vector = {"x": np.array(93, np.int8)}, {"x": np.array([93], np.int8)}
    assert checkpoint.content_hash(scalar, {}) != checkpoint.content_hash(vector, {})
    save(tmp_path, 0, vector, {})
    assert load(save(tmp_path, 0, scalar, {})).arrays["x"].shape == ()


def test_identical_saves_are_byte_identical(tmp_path):
    a = save(tmp_path / "a", 5, sample_arrays(), ATTRS)
    reordered = dict(reversed(list(ATTRS.items())))  # attrs key order does not matter either
    b = save(tmp_path / "b", 5, dict(reversed(list(sample_arrays().items()))), reordered)
    fa, fb = files_of(a), files_of(b)
    assert fa == fb and len(fa) >= 6
    changed = sample_arrays()
    changed["embed"][0, 0] ^= 1
    assert files_of(save(tmp_path / "c", 5, changed, ATTRS)) != fa


def test_list_and_latest_order(tmp_path):
    run = tmp_path / "run"
    assert list_checkpoints(run) == [] and latest(run) is None
    for step in (10, 9, 100, 123456789, 99999999):
        save(run, step, {"w": np.full(3, step, np.int64)}, {})
    (run / ".tmp-step-99999999-1").mkdir()  # a crashed save's leftover
    (run / "notes").mkdir()
    names = [p.name for p in list_checkpoints(run)]
    assert names == ["step-00000009", "step-00000010", "step-00000100", "step-99999999", "step-123456789"]
    assert latest(run) == run / "step-123456789"
    ck = load(run)  # a run folder loads its latest checkpoint
    assert ck.step == 123456789 and ck.arrays["w"].tolist() == [123456789] * 3


def test_leftover_tmp_folder_is_ignored(tmp_path):
    run = tmp_path / "run"
    save(run, 1, {"w": np.arange(4)}, {})
    tmp = run / ".tmp-step-00000002-999"
    tmp.mkdir()
    (tmp / "zarr.json").write_text("garbage")
    assert load(run).step == 1
    assert list_checkpoints(run) == [run / "step-00000001"]


def test_save_overwrites_same_step(tmp_path):
    save(tmp_path, 3, {"w": np.arange(4)}, {})
    save(tmp_path, 3, {"v": np.ones(2, np.int8)}, {"x": 1})
    ck = load(tmp_path / "step-00000003")
    assert list(ck.arrays) == ["v"] and ck.attrs == {"x": 1, "step": 3}


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError):
        save(tmp_path, 1, {"w": np.zeros(3, np.float32)}, {})
    with pytest.raises(ValueError):
        save(tmp_path, 1, {"a/b": np.zeros(3, np.int8)}, {})
    with pytest.raises(ValueError):
        save(tmp_path, 1, {"w": np.zeros(3, np.int8)}, {"step": 2})
    with pytest.raises(TypeError):
        save(tmp_path, 1, {"w": np.zeros(3, np.int8)}, {"seed": np.int64(3)})
    assert list_checkpoints(tmp_path) == []


# ---------------------------------------------------------------- errors and corruption


def test_missing_and_empty_paths(tmp_path):
    expect_error(tmp_path / "nope", "nope", "does not exist")
    (tmp_path / "run").mkdir()
    expect_error(tmp_path / "run", "no checkpoints")
    (tmp_path / "run" / "step-00000001").mkdir()
    expect_error(tmp_path / "run" / "step-00000001", "not a checkpoint")


def test_flipped_byte_in_chunk_is_detected(tmp_path):
    path = save(tmp_path, 1, sample_arrays(), ATTRS)
    chunk = chunk_of(path, "embed")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    expect_error(path, "corrupt")


def test_flipped_byte_in_raw_payload_hits_the_hash(tmp_path):
    # Incompressible data keeps zstd in raw-block mode, so a flipped byte decodes fine and only the hash sees it.
    data = np.frombuffer(np.random.default_rng(3).bytes(4096), np.uint8).copy()
    path = save(tmp_path, 1, {"w": data}, {})
    chunk = chunk_of(path, "w")
    raw = bytearray(chunk.read_bytes())
    raw[-100] ^= 0x01
    chunk.write_bytes(bytes(raw))
    expect_error(path, "content hash mismatch")


def test_truncated_chunk_is_detected(tmp_path):
    path = save(tmp_path, 1, sample_arrays(), ATTRS)
    chunk = chunk_of(path, "bias")
    chunk.write_bytes(chunk.read_bytes()[:5])
    expect_error(path, "corrupt")


@pytest.mark.parametrize("name", ["embed", "zeros", "scalar"])
def test_deleted_chunk_is_detected(tmp_path, name):
    # "zeros" matters: a missing all-zero chunk would read back as zeros and pass the hash.
    path = save(tmp_path, 1, sample_arrays(), ATTRS)
    chunk_of(path, name).unlink()
    expect_error(path, "corrupt")


def test_deleted_array_is_detected(tmp_path):
    path = save(tmp_path, 1, sample_arrays(), ATTRS)
    for p in sorted((path / "bias").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (path / "bias").rmdir()
    expect_error(path, "content hash mismatch")


def test_edited_attrs_are_detected(tmp_path):
    path = save(tmp_path, 1, sample_arrays(), ATTRS)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["seed"] = 8
    (path / "zarr.json").write_text(json.dumps(meta))
    expect_error(path, str(path), "content hash mismatch")


def test_garbage_metadata_is_detected(tmp_path):
    path = save(tmp_path, 1, sample_arrays(), ATTRS)
    (path / "zarr.json").write_text("{ this is not json")
    expect_error(path, "not a readable checkpoint")
    path2 = save(tmp_path, 2, sample_arrays(), ATTRS)
    (path2 / "embed" / "zarr.json").write_text("garbage")
    expect_error(path2, "corrupt")


def test_plain_zarr_group_is_not_a_checkpoint(tmp_path):
    g = zarr.open_group(tmp_path / "g", mode="w")
    g.create_array("w", shape=(3,), dtype="int8")[...] = 1
    expect_error(tmp_path / "g", "not an intlm checkpoint")


# ---------------------------------------------------------------- atomicity


def test_failure_mid_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save(run, 1, {"w": np.arange(3)}, {})
    real = zarr.Group.create_array
    calls = []

    def failing(self, name, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, name, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", failing)
    with pytest.raises(OSError):
        save(run, 2, sample_arrays(), ATTRS)
    assert len(calls) == 2  # it really failed part-way through
    assert [p.name for p in run.iterdir()] == ["step-00000001"]  # no step-00000002, no .tmp-* left
    assert load(run).step == 1


def test_failure_at_rename_leaves_no_checkpoint(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("rename failed")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        save(tmp_path / "run", 1, sample_arrays(), ATTRS)
    assert list((tmp_path / "run").iterdir()) == []


def test_resave_failing_at_the_swap_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    """Re-saving a step with other content: if the swap dies after the old folder is moved aside, the
    old checkpoint is back in place, whole (the old code had already deleted it)."""
    run = tmp_path / "run"
    save(run, 3, {"w": np.arange(4)}, {})
    real = atomic.os.replace

    def fail_moving_in(src, dst):
        if Path(dst).name == "step-00000003" and ".tmp-" in Path(src).name:
            raise OSError("killed here")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_moving_in)
    with pytest.raises(OSError, match="killed here"):
        save(run, 3, {"w": np.arange(5)}, {})
    assert load(run / "step-00000003").arrays["w"].tolist() == [0, 1, 2, 3]
    assert sorted(p.name for p in run.iterdir()) == ["step-00000003"]


def test_resaving_the_same_content_writes_nothing(tmp_path, monkeypatch):
    """The end of a run re-saves the step it just saved: an intact checkpoint with the same content
    hash is kept as it is."""
    path = save(tmp_path, 3, sample_arrays(), ATTRS)
    monkeypatch.setattr(atomic, "atomic_folder", None)  # any write would fail
    monkeypatch.setattr(checkpoint, "atomic_folder", None)
    assert save(tmp_path, 3, sample_arrays(), ATTRS) == path


def test_resaving_over_a_damaged_copy_rewrites_it(tmp_path):
    path = save(tmp_path, 3, sample_arrays(), ATTRS)
    chunk_of(path, "embed").unlink()
    save(tmp_path, 3, sample_arrays(), ATTRS)
    assert load(path).step == 3


def test_save_flushes_every_file_and_folder(tmp_path, monkeypatch):
    """fsync on every file and folder of the new checkpoint before the rename, and on the run folder
    after it, so a power cut cannot leave a renamed but empty checkpoint."""
    synced = []
    real = atomic._fsync
    monkeypatch.setattr(atomic, "_fsync", lambda p: (synced.append(Path(p).name), real(p)))
    path = save(tmp_path / "run", 1, sample_arrays(), ATTRS)
    written = [p for p in path.rglob("*")]
    assert set(synced) >= {p.name for p in written} | {f".step-00000001.tmp-{os.getpid()}"}
    assert synced[-1] == "run"


def test_clean_stale_removes_dead_leftovers_and_restores_a_moved_aside_checkpoint(tmp_path):
    """Leftovers of a dead process: a half-built .tmp folder goes; an .old folder (the previous
    checkpoint moved aside for the swap) comes back when its step folder is missing, and goes
    otherwise. A live process's leftovers are not touched."""
    dead, alive = dead_pid(), os.getpid()
    run = tmp_path / "run"
    save(run, 1, {"w": np.arange(2)}, {})
    (run / f".step-00000001.old-{dead}").mkdir()  # step 1 is in place: a leftover copy
    (run / f".step-00000003.tmp-{dead}").mkdir()
    save(run, 4, {"w": np.arange(4)}, {}).rename(run / f".step-00000004.old-{dead}")  # killed mid-swap
    (run / f".step-00000005.tmp-{alive}").mkdir()
    (run / f".log.jsonl.tmp-{dead}").write_text("x")
    assert load(run).step == 4  # opening a run folder cleans it
    assert sorted(p.name for p in run.iterdir()) == [f".step-00000005.tmp-{alive}", "step-00000001",
                                                    "step-00000004"]


def test_newest_intact_checkpoint_is_loaded_and_the_damaged_ones_named(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2, 3):
        save(run, step, {"w": np.full(3, step)}, {})
    chunk_of(run / "step-00000003", "w").unlink()
    (run / "step-00000004").mkdir()  # a half-deleted checkpoint, as the old re-save left them
    ck = load(run)
    assert ck.step == 2
    assert len(ck.damaged) == 2
    assert "step-00000004" in ck.damaged[0] and "step-00000003" in ck.damaged[1]
    chunk_of(run / "step-00000002", "w").unlink()
    chunk_of(run / "step-00000001", "w").unlink()
    expect_error(run, "step-00000004", "not a checkpoint")  # none intact: the newest one's error
