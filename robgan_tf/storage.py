"""Writing to disk safely: atomic files, one writer per run directory, readable outputs, and storage
failures (a full or read-only disk) turned into one clear error that says what was kept.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import re
import shutil

import tensorflow as tf

from robgan_tf.layout import LOCK


class StorageError(RuntimeError):
    """A write failed (disk full, read-only, no permission); the message names the path and what was kept."""


class RunLocked(RuntimeError):
    """Another live process is writing to the same run directory."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read; the message names it, the newest intact one, and how to resume."""


def storage_error(err, path, kept):
    reason = getattr(err, "strerror", None) or str(getattr(err, "message", err)).splitlines()[0]
    reason = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", reason)  # TF's op prefix says nothing to a user
    return StorageError(f"cannot write {path}: {reason}. {kept} Free some space, fix the permissions or the file "
                        "size limit (ulimit -f), or use another --logdir; then rerun the same command.")


def atomic_save(path, write):
    """write(tmp_path) then os.replace(tmp_path, path): the file is whole or absent, never half-written. The
    temporary name keeps the extension (np.savez and savefig look at it); missing parent folders are made."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise storage_error(e, path, f"The previous {os.path.basename(path)} (if any) is unchanged.") from e


def atomic_write(path, data, mode="w"):
    """Writes `data` (str, or bytes with mode="wb") as a whole file or not at all."""
    def write(tmp):
        with open(tmp, mode) as f:
            f.write(data)

    atomic_save(path, write)


def atomic_write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


class LinkRefused(RuntimeError):
    """A file a run writes in place is a symbolic link: it could point anywhere, so it is not followed."""


def _open_no_follow(path, flags):
    """os.open(path, flags | O_NOFOLLOW): a run folder may be shared or unpacked from an archive, and a file written
    in place (appended, truncated) must never be a link that leads the write out of the run."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LinkRefused(f"{path} is a symbolic link (to {os.readlink(path)!r}); a run never writes through "
                              "links. Remove the link (or replace it with a copy of the file) and rerun.") from None
        raise


def append_jsonl(path, record):
    """Appends one JSON line (a crash can at worst leave a partial last line, which readers skip); refuses a path
    that is a symbolic link (LinkRefused)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = _open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    except OSError as e:
        raise storage_error(e, path, "Nothing else was written.") from e


def read_json_object(path, error, fix):
    """The JSON object in `path`; anything else (not JSON, not an object) raises `error` naming the file and `fix`."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{path} holds a {type(value).__name__}, not a JSON object; {fix}")
    return value


def read_jsonl(path, required=()):
    """The records of a JSON-lines file written by append_jsonl ([] when missing), skipping a partial last line,
    and any line that is not an object with the `required` keys (a damaged line is not worth a crash; the
    file is a log, and what it records is checked where it is used)."""
    records = []
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a partial last line of a killed run
                    continue
                if isinstance(record, dict) and all(k in record for k in required):
                    records.append(record)
    return records


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive flock on DIR/.lock held while a process writes the run.

    The kernel drops a flock when its holder dies (even by kill -9), so a stale lock never blocks: a dead
    holder's pid may remain in the file, but the lock itself is free. Within one process the lock is shared
    (`RunLock.hold`), so a notebook can open the same run twice.
    """

    _held = {}  # realpath -> RunLock held by this process

    def __init__(self, directory):
        self.directory, self.path, self.fd = directory, os.path.join(directory, LOCK), None

    @classmethod
    def hold(cls, directory):
        key = os.path.realpath(directory)
        if key not in cls._held:
            cls._held[key] = cls(directory).acquire()
        return cls._held[key]

    def acquire(self):
        try:
            fd = _open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise storage_error(e, self.path, "Nothing was written.") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"{self.directory} is being written by another process (pid {holder}). Wait for it to "
                            "finish or stop it, or use another --logdir.") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self):
        RunLock._held.pop(os.path.realpath(self.directory), None)
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def checkpoint_problem(prefix):
    """None if every tensor of the checkpoint at `prefix` reads back, else the reason it does not."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001 -- a damaged file fails in many ways (OpError, IndexError, ...)
        return f"{type(e).__name__}: {str(getattr(e, 'message', e)).splitlines()[0][:200]}"
    return None


def unreadable_checkpoint_error(manager, prefix, err):
    """CheckpointError for an unreadable `prefix`, naming the newest intact older checkpoint."""
    older = [p for p in reversed(manager.checkpoints) if p != prefix]
    intact = next((p for p in older if checkpoint_problem(p) is None), None)
    reason = str(getattr(err, "message", err)).splitlines()[0][:200]
    msg = f"checkpoint {prefix} cannot be restored ({reason})."
    if intact:
        msg += (f" The newest intact one is {intact}: resume from it with --resume_from={intact} (the unreadable "
                "files are left in place; later checkpoints replace them).")
    else:
        msg += " No intact older checkpoint exists here; nothing was deleted."
    return CheckpointError(msg)


def save_checkpoint(manager, number):
    """manager.save(number); a failed write removes its temporary files and keeps the previous checkpoint."""
    try:
        return manager.save(checkpoint_number=number)
    except (OSError, tf.errors.OpError) as e:
        for tmp in glob.glob(os.path.join(manager.directory, "*_temp*")):
            shutil.rmtree(tmp, ignore_errors=True) if os.path.isdir(tmp) else os.remove(tmp)
        kept = (f"The last complete checkpoint, {manager.latest_checkpoint}, is kept." if manager.latest_checkpoint
                else "No earlier checkpoint exists.")
        raise storage_error(e, os.path.join(manager.directory, f"ckpt-{number}"), kept) from e


def make_readable(path):
    """Directories 0755 and files 0644 below `path` (mkdtemp makes 0700: a server user could not read it)."""
    os.chmod(path, 0o755)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)


def temp_name(prefix):
    """A sibling temp name that records the writing pid, so a later run can tell a stale one."""
    return f"{prefix}{os.getpid()}-{os.urandom(4).hex()}"


def inside(path, folder):
    """True when `path` lies strictly inside `folder` once every link is resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder and path != folder


def stale_temps(parent, prefix):
    """Paths parent/<prefix><pid>-* whose writing process is gone."""
    out = []
    for path in glob.glob(os.path.join(parent, prefix + "*")):
        pid = os.path.basename(path)[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            out.append(path)
    return out

