"""The artifact and the rollback binary: validated, hashed, snapshotted.

The bytes are copied once into a private temp directory and hashed there; every
push reads that snapshot, so the bytes shipped are exactly the bytes hashed even
if the original file changes during the deploy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from veza_canary.errors import ConfigError

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Artifact:
    original: Path
    path: Path  # the private snapshot
    sha256: str
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.original), "sha256": self.sha256, "size": self.size}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def shown(path: Path | str) -> str:
    """A path for a one-line message: as is when printable, else quoted (a newline or an escape sequence in
    a path must not forge a second error line or drive the terminal)."""
    s = str(path)
    return s if s.isprintable() else repr(s)


def check_binary(path: Path, knob: str) -> None:
    """Refuse anything but a non-empty, executable regular file (not a symlink)."""
    p = shown(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ConfigError(knob, f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(knob, f"{p}: cannot stat ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(knob, f"{p}: is a symlink; pass the real file (its target could change mid-deploy)")
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(knob, f"{p}: is a directory, not a binary")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(knob, f"{p}: is not a regular file")
    if st.st_size == 0:
        raise ConfigError(knob, f"{p}: is empty")
    if not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise ConfigError(knob, f"{p}: is not executable (chmod +x it if it is the right file)")
    if not os.access(path, os.R_OK):
        raise ConfigError(knob, f"{p}: is not readable")


def snapshot(path: Path, knob: str, workdir: Path) -> Artifact:
    check_binary(path, knob)
    p = shown(path)
    dst = workdir / f"{knob.lower()}.bin"
    try:
        shutil.copyfile(path, dst)
    except OSError as exc:
        raise ConfigError(knob, f"{p}: cannot read ({exc.strerror})") from None
    os.chmod(dst, 0o700)
    return Artifact(original=path, path=dst, sha256=sha256_file(dst), size=dst.stat().st_size)


WORKDIR_PREFIX = "veza-canary-"


def private_workdir() -> Path:
    """A 0700 temp dir for this run's snapshots; its name carries our PID (see ``remove_stale_workdirs``)."""
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))


def remove_stale_workdirs() -> list[Path]:
    """Remove the work dirs of runs that were SIGKILLed (their PID is gone); never another live run's."""
    removed = []
    for p in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = p.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if p.lstat().st_uid != os.getuid() or not stat.S_ISDIR(p.lstat().st_mode):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        except OSError:  # alive (EPERM) or gone meanwhile
            continue
    return removed
