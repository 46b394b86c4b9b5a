"""Disk faults and concurrent writers: atomic files, the run lock, failed checkpoint writes, stale temps."""
import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from robgan_tf import storage


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    storage.atomic_write_json(str(path), {"v": 1})

    def full_disk(tmp):
        with open(tmp, "w") as f:
            f.write('{"v": 2, "trunc')  # half written, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(storage.StorageError, match=r"cannot write .*a.json: No space left on device. The previous "
                                                   r"a.json \(if any\) is unchanged"):
        storage.atomic_save(str(path), full_disk)
    assert path.read_text() == '{\n  "v": 1\n}' and os.listdir(tmp_path) == ["a.json"]  # no temp file left


def _hold_lock_in_a_child(folder):
    """A forked child (this process's copy, so no second TensorFlow import) that takes the run lock and waits to
    be killed; returns (pid, a pipe that reads "locked" once it holds the lock)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child touches only the lock file and the pipe, never TensorFlow
        try:
            storage.RunLock(folder).acquire()
            os.write(write, b"locked\n")
            signal.pause()
        finally:
            os._exit(0)
    os.close(write)
    return pid, os.fdopen(read)


def test_one_writer_per_run_and_a_dead_holder_does_not_block(tmp_path):
    pid, pipe = _hold_lock_in_a_child(str(tmp_path))
    try:
        assert pipe.readline().strip() == "locked"
        with pytest.raises(storage.RunLocked, match=f"another process \\(pid {pid}\\)"):
            storage.RunLock(str(tmp_path)).acquire()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pipe.close()
    # the kernel released the dead holder's lock; its pid is still in the file but no longer blocks
    lock = storage.RunLock.hold(str(tmp_path))
    assert open(tmp_path / ".lock").read() == str(os.getpid())
    assert storage.RunLock.hold(str(tmp_path)) is lock  # re-entrant within a process
    lock.release()


def test_a_failed_checkpoint_write_removes_its_temp_files_and_keeps_the_last_one(tmp_path, monkeypatch):
    v = tf.Variable([1.0, 2.0])
    ckpt = tf.train.Checkpoint(v=v)
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=3)
    storage.save_checkpoint(manager, 1)
    real_write = ckpt._write

    def dies_midway(prefix, options=None):
        os.makedirs(prefix + "_temp", exist_ok=True)  # where TF writes the shards before renaming them
        open(os.path.join(prefix + "_temp", "part-00000-of-00001.data-00000-of-00001"), "wb").write(b"\0" * 10)
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(ckpt, "_write", dies_midway)
    v.assign([3.0, 4.0])
    with pytest.raises(storage.StorageError, match=r"ckpt-2: No space left on device. The last complete "
                                                   r"checkpoint, .*ckpt-1, is kept"):
        storage.save_checkpoint(manager, 2)
    assert not [p for p in os.listdir(tmp_path) if "_temp" in p]
    monkeypatch.setattr(ckpt, "_write", real_write)
    assert manager.latest_checkpoint.endswith("ckpt-1") and storage.checkpoint_problem(manager.latest_checkpoint) is None
    tf.train.Checkpoint(v=v).restore(manager.latest_checkpoint)
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


def test_stale_temps_are_those_of_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".export-tmp-{dead.pid}-ab").mkdir()
    (tmp_path / f".export-tmp-{os.getpid()}-cd").mkdir()  # ours: alive, in use
    assert storage.stale_temps(str(tmp_path), ".export-tmp-") == [str(tmp_path / f".export-tmp-{dead.pid}-ab")]


def test_checkpoint_problem_reports_a_truncated_checkpoint(tmp_path):
    ckpt = tf.train.Checkpoint(v=tf.Variable(np.arange(1000, dtype=np.float32)))
    prefix = ckpt.write(str(tmp_path / "c"))
    assert storage.checkpoint_problem(prefix) is None
    data = [p for p in os.listdir(tmp_path) if ".data-" in p][0]
    with open(tmp_path / data, "r+b") as f:
        f.truncate(100)
    assert storage.checkpoint_problem(prefix)


def test_files_a_run_writes_in_place_are_never_followed_through_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    os.makedirs(run)
    os.symlink(outside, run / ".lock")
    with pytest.raises(storage.LinkRefused, match=r"\.lock is a symbolic link .*outside.txt.*Remove the link"):
        storage.RunLock(str(run)).acquire()
    os.symlink(outside, run / "history.jsonl")
    with pytest.raises(storage.LinkRefused, match="history.jsonl is a symbolic link"):
        storage.append_jsonl(str(run / "history.jsonl"), {"changed": 1})
    assert outside.read_text() == "precious"  # neither truncated, overwritten with a pid, nor appended to


def test_damaged_jsonl_lines_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "train_seconds.jsonl"
    path.write_bytes(b'{"iteration": 2, "train_seconds": 1.5}\n[1, 2]\n"text"\n{"iteration": 4}\n\xff\xfe\n'
                     b'{"iteration": "6", "train_seconds": 3}\n{"iteration": 8, "train_seconds": 4.0}\n{"iter')
    assert storage.read_jsonl(str(path), required=("iteration", "train_seconds")) == [
        {"iteration": 2, "train_seconds": 1.5}, {"iteration": "6", "train_seconds": 3},
        {"iteration": 8, "train_seconds": 4.0}]
    from robgan_tf import loops

    os.makedirs(tmp_path / "eval")
    os.replace(path, tmp_path / "eval" / "train_seconds.jsonl")
    assert loops.clock_records(str(tmp_path)) == [{"iteration": 2, "train_seconds": 1.5},
                                                  {"iteration": 8, "train_seconds": 4.0}]  # "6" is not an iteration
    assert loops.train_seconds_at(str(tmp_path), 7) == 1.5
