"""One writer per run folder: a training process holds an advisory lock on the folder's
``train.lock`` (``fcntl.flock``) for its whole life, from before it looks at the folder until
it ends, and writes its pid into the file. A second ``seqvae train`` on the same
``train.out_dir`` (the same command twice, another run, or a ``--resume`` beside a running
run) is refused with a :class:`~seqvae.training.run_folder.RunFolderError` naming the
holder's pid; nothing in the folder is touched. Readers (``seqvae eval``, ``report``) take
no lock. The kernel drops the lock when its process dies, however it dies, so a killed run
never blocks the next one. Under DDP only rank 0 takes it (the caller decides).

The lock file is removed when the run ends. A process that opened it just before could then
lock the removed file, so a lock counts only while the path still names the locked file.
A folder that the lock had to create, and that is still empty at the end (a start refused by
a config or data error), is removed again.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from seqvae.training.run_files import LOCK
from seqvae.training.run_folder import RunFolderError, check_is_folder, describe_os_error

try:
    import fcntl
except ImportError:   # Windows: no flock; there one writer per run folder is not enforced
    fcntl = None


class RunLock:
    """A context manager holding ``run_dir/train.lock`` (see the module); a no-op when not ``enabled``."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.path = self.run_dir / LOCK
        self._fd: int | None = None
        self._created: list[Path] = []   # folders this lock created, deepest first

    def __enter__(self) -> "RunLock":
        if not self.enabled or fcntl is None:
            return self
        check_is_folder(self.run_dir)
        self._created = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fd = self._acquire()
        except OSError as err:
            self._remove_created_folders()
            raise RunFolderError(f"cannot write the run folder {self.run_dir}: {describe_os_error(err)}") from None
        except RunFolderError:
            self._remove_created_folders()
            raise
        return self

    def _acquire(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = self._holder(fd)
                os.close(fd)
                raise RunFolderError(
                    f"{self.run_dir} is in use: another seqvae train (pid {pid or 'unknown'}) is writing this run "
                    "folder, and a run folder has one writer at a time. Nothing was changed. Wait for it to finish, "
                    f"stop it (kill -INT {pid or 'PID'}: it writes a checkpoint first), or choose another "
                    "train.out_dir") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            except BaseException:
                os.close(fd)
                raise
            if not same:
                os.close(fd)   # the holder removed the file as we opened it: lock the new one
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except BaseException:   # e.g. a full disk: the file is ours (locked, named by the path); drop both
                self.path.unlink(missing_ok=True)
                os.close(fd)
                raise
            return fd

    @staticmethod
    def _holder(fd: int) -> int | None:
        """The pid of the process that holds the lock (it writes it right after locking)."""
        for _ in range(20):
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if text.isdigit():
                return int(text)
            time.sleep(0.05)
        return None

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)   # while still locked (see the module)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._remove_created_folders()

    def _remove_created_folders(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()       # only while empty: a started run keeps its folder
            except OSError:
                break
        self._created = []
