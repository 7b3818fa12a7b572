"""LocalTransport: subprocess on this host, argv only, never a shell."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from veza_canary.errors import TransportError
from veza_canary.transport.base import Transport

#: Exit codes a shell gives for "command not found" and "found but not executable";
#: SSH and ``incus exec`` report the same, so callers see one convention everywhere.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


class LocalTransport(Transport):
    name = "local"
    is_local = True

    def _run(self, argv: tuple[str, ...], input: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes]:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C at the terminal reaches us, not our children mid-step
            )
        except FileNotFoundError:
            return EXIT_NOT_FOUND, b"", f"{argv[0]}: command not found\n".encode()
        except PermissionError:
            return EXIT_NOT_EXECUTABLE, b"", f"{argv[0]}: permission denied\n".encode()
        except OSError as exc:
            raise TransportError(f"[local] cannot run {argv[0]}: {exc.strerror or exc}") from exc
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # NOTE: kill the whole process group, not just the child: a grandchild
            # (``sh -c 'sleep 60; ...'``) would keep the pipes open and make the
            # communicate() below wait for it.
            kill_group(proc)
            proc.communicate()
            raise self._timed_out(argv, timeout, self.name) from None
        except BaseException:
            # KeyboardInterrupt and friends: never leave an orphan behind.
            kill_group(proc)
            proc.wait()
            raise
        code = proc.returncode
        # Popen reports "killed by signal N" as -N; shells, SSH and incus say 128+N.
        return (128 - code if code < 0 else code), out, err

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        dst = Path(remote_path)
        tmp = dst.with_name(f".{dst.name}.veza-tmp-{secrets.token_hex(6)}")
        try:
            if create_dirs:
                dst.parent.mkdir(parents=True, exist_ok=True)
            with open(local_path, "rb") as src, open(tmp, "xb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fchmod(out.fileno(), mode)
                # A rename is only as durable as the data behind it.
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise TransportError(f"[local] push {local_path} -> {remote_path}: {exc.strerror or exc}") from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def _pull(self, remote_path: str, local_path: Path) -> None:
        try:
            shutil.copyfile(remote_path, local_path)
        except OSError as exc:
            raise TransportError(f"[local] pull {remote_path}: {exc.strerror or exc}") from exc


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``): its children too."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # e.g. the directory never existed: keep the error that brought us here
