"""The lab's state file: what the lab itself started or changed, so ``down`` undoes only that.

Lives in ``STATE_DIR`` (``/var/lib/veza-canary-lab/state.json``), never in the repo.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from veza_canary.lab.config import STATE_DIR, LabError

STATE_FILE = STATE_DIR / "state.json"


@dataclass(kw_only=True, slots=True)
class LabState:
    #: True when the lab started incusd (then ``down`` stops it); its PID.
    incusd_started: bool = False
    incusd_pid: int | None = None
    #: ip_forward before the lab first touched the machine ("0" or "1"); None: not recorded.
    ip_forward_before: str | None = None
    #: The LabConfig of the last successful ``up`` (``LabConfig.to_dict``).
    config: dict[str, Any] | None = None
    #: Whether Debian's HAProxy has the Prometheus exporter (then HAProxy is scraped too).
    haproxy_exporter: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = STATE_FILE) -> LabState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read the lab state file {path}: {exc}",
                           hint=f"inspect it, or remove it if no lab is running: rm {path}") from exc
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(asdict(self), fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def remove(path: Path = STATE_FILE) -> None:
        path.unlink(missing_ok=True)
