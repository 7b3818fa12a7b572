"""LocalTransport: subprocess on this host, argv only, never a shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from veza_canary.errors import CommandFailed, TransportError
from veza_canary.transport.base import Transport


class LocalTransport(Transport):
    name = "local"

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
            raise CommandFailed(f"[local] command not found: {argv[0]}") from None
        except OSError as exc:
            raise TransportError(f"[local] cannot run {argv[0]}: {exc.strerror}") from exc
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise self._timed_out(argv, timeout, self.name) from None
        except BaseException:
            # KeyboardInterrupt and friends: never leave an orphan behind.
            proc.kill()
            proc.wait()
            raise
        return proc.returncode, out, err

    def _push(self, local_path: Path, remote_path: str, mode: int, create_dirs: bool) -> None:
        dst = Path(remote_path)
        if create_dirs:
            dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.veza-tmp-{os.getpid()}")
        try:
            shutil.copyfile(local_path, tmp)
            os.chmod(tmp, mode)
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"[local] push {local_path} -> {remote_path}: {exc.strerror}") from exc

    def _pull(self, remote_path: str, local_path: Path) -> None:
        try:
            shutil.copyfile(remote_path, local_path)
        except OSError as exc:
            raise TransportError(f"[local] pull {remote_path}: {exc.strerror}") from exc
