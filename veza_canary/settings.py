"""Settings: small frozen value objects, built from four layers.

Precedence, highest first (documented in README.md and tested)::

    command-line flag  >  environment variable  >  TOML config file  >  default

Each knob is declared exactly once, as a field of one of the groups below
(``SLISettings.window`` is ``SLI_WINDOW`` / ``--sli-window`` / ``sli_window``):
the field's default *is* the knob's default, and its metadata holds the env
name, parser, check and help. ``KNOBS`` is read off those fields. The loader
treats all layers alike, so a bad value gets the same one-line message wherever
it came from, naming the knob and the layer, before anything is touched.

An empty value (``FOO=``, ``--foo ''``, ``foo = ""``) means "not given" in every
layer. Durations accept ``30``, ``30s``, ``500ms``, ``5m`` and ``1h`` in every
layer (one parser: ``parse_duration``).

The config file is ``--config PATH`` or ``$VEZA_CANARY_CONFIG``, else
``./veza-canary.toml`` when it exists. Keys are the snake_case knob names, at top
level; an unknown key is an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from veza_canary.errors import ConfigError

# --- names ------------------------------------------------------------------

#: Incus instance names: 1-63 chars, letters/digits/hyphens, start with a letter, no trailing hyphen.
_INSTANCE_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: Incus remote names (the part before ``:`` in ``remote:container``).
_REMOTE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: HAProxy proxy and server names.
_HAPROXY_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_UNIT_RE = re.compile(r"[A-Za-z0-9@._-]{1,100}")
_DURATION_RE = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?)(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# Every pattern above is matched with fullmatch: ``$`` would accept a trailing newline.


def check_instance_name(value: str, *, allow_remote: bool = False) -> str | None:
    """Return a problem description, or None when ``value`` is a valid Incus instance name."""
    shown = _show(value)
    if allow_remote and ":" in value:
        remote, _, name = value.partition(":")
        if not _REMOTE_RE.fullmatch(remote):
            return f"{shown} has an invalid Incus remote name"
        value = name
    if not value:
        return "is empty"
    if len(value) > 63:
        return f"{shown} is longer than 63 characters"
    if not _INSTANCE_RE.fullmatch(value):
        return (
            f"{shown} is not a valid Incus instance name "
            "(letters, digits and hyphens; starts with a letter; no trailing hyphen)"
        )
    return None


def _show(value: str, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


# --- parsers (one per kind of value) -----------------------------------------

Parser = Callable[[Any], Any]
Check = Callable[[Any, "Mapping[str, Any]"], "str | None"]


def _p_str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__}")
    return v


def _p_opt_str(v: Any) -> str | None:
    v = _p_str(v)
    return v or None


def _p_float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(v, int | float):
        f = float(v)
    else:
        try:
            f = float(_p_str(v).strip())
        except ValueError:
            raise ValueError(f"not a number: {_show(str(v))}") from None
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {_show(str(v))}")
    return f


def parse_duration(v: Any) -> float:
    """Seconds from ``30``, ``30s``, ``500ms``, ``5m``, ``1h`` (or a TOML number). The only duration parser."""
    if isinstance(v, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(v, int | float):
        f = float(v)
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"not a duration: {v!r}")
        return f
    m = _DURATION_RE.fullmatch(_p_str(v).strip())
    if not m:
        raise ValueError(f"{_show(str(v))} is not a duration like 30, 30s, 500ms, 5m or 1h")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def _p_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(v, int):
        return v
    try:
        return int(_p_str(v).strip())
    except ValueError:
        raise ValueError(f"not an integer: {_show(str(v))}") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _p_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = _p_str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"not a boolean: {_show(str(v))} (use 1/0, true/false, yes/no)")


def _p_path(v: Any) -> Path | None:
    s = str(v) if isinstance(v, Path) else _p_str(v)
    if not s:
        return None
    if "\x00" in s:
        raise ValueError("contains a NUL byte")
    return Path(s).expanduser()


def _p_node_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, list | tuple):
        items = [_p_str(x) for x in v]
    else:
        # Split on commas and ASCII blanks only: a newline or other control
        # character inside a name must reach the name check and be refused.
        items = [x for x in re.split(r"[, ]+", _p_str(v).strip(" ,")) if x != ""]
    return tuple(items)


@dataclass(frozen=True, slots=True)
class Share:
    """A count of nodes, or a percentage of a pool (``2``, ``50%``)."""

    value: float
    percent: bool = False

    def of(self, pool: int) -> int:
        """How many nodes of a pool of ``pool``: a percentage rounds up (a safety floor never rounds away)."""
        return math.ceil(pool * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


def _p_share(v: Any) -> Share:
    if isinstance(v, Share):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return Share(float(v))
    s = _p_str(v).strip()
    m = re.fullmatch(r"([0-9]{1,4})(%?)", s)
    if not m:
        raise ValueError(f"{_show(s)} is not a count or a percentage like 2 or 25%")
    return Share(float(m.group(1)), bool(m.group(2)))


def _c_share(lo: int) -> Check:
    def check(v: Any, _all: Mapping[str, Any]) -> str | None:
        if v.value < lo or (v.percent and v.value > 100):
            return f"{v} is out of range ({lo}..; a percentage at most 100%)"
        return None

    return check


def _p_argv(v: Any) -> tuple[str, ...] | None:
    if isinstance(v, list | tuple):
        argv = tuple(_p_str(x) for x in v)
    else:
        s = _p_str(v).strip()
        if not s:
            return None
        try:
            argv = tuple(shlex.split(s))
        except ValueError as exc:
            raise ValueError(f"cannot split into arguments: {exc}") from None
    return argv or None


def _choice(*options: str) -> Parser:
    def parse(v: Any) -> str:
        s = _p_str(v).strip()
        if s not in options:
            raise ValueError(f"{_show(s)} is not one of: {', '.join(options)}")
        return s

    return parse


# --- checks -------------------------------------------------------------------


def _c_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Check:
    def check(v: Any, _all: Mapping[str, Any]) -> str | None:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"{v:g} is too small (must be {'>' if lo_open else '>='} {lo:g})"
        if hi is not None and v > hi:
            return f"{v:g} is too large (must be <= {hi:g})"
        return None

    return check


def _c_instance(v: Any, _all: Mapping[str, Any]) -> str | None:
    return check_instance_name(v, allow_remote=True)


def _c_node(v: Any, _all: Mapping[str, Any]) -> str | None:
    return check_instance_name(v)


def _c_nodes(v: Any, _all: Mapping[str, Any]) -> str | None:
    if not v:
        return "lists no node"
    for name in v:
        problem = check_instance_name(name)
        if problem:
            return problem
    if len(set(v)) != len(v):
        return "lists a node twice"
    return None


def _c_instances(v: Any, all_: Mapping[str, Any]) -> str | None:
    """HAPROXY_CONTAINERS: Incus names ([remote:]name), no repeats, not with a local socket; HAPROXY_CONTAINER,
    when changed from its default, must be one of them (the list wins, a contradiction is refused)."""
    if not v:
        return None
    for name in v:
        problem = check_instance_name(name, allow_remote=True)
        if problem:
            return problem
    if len(set(v)) != len(v):
        return "lists a container twice"
    if len(v) > 1 and all_.get("haproxy_local_socket"):
        return "more than one HAProxy cannot be reached through one HAPROXY_LOCAL_SOCKET"
    one = all_.get("haproxy_container")
    if one and one != DEFAULT_HAPROXY_CONTAINER and one not in v:
        return f"does not list HAPROXY_CONTAINER={_show(one)} (set one or the other, or list it)"
    return None


def _c_haproxy_name(v: Any, _all: Mapping[str, Any]) -> str | None:
    if not _HAPROXY_NAME_RE.fullmatch(v):
        return f"{_show(v)} is not a valid HAProxy proxy name (letters, digits, _ . : -)"
    return None


def _c_unit(v: Any, _all: Mapping[str, Any]) -> str | None:
    return None if _UNIT_RE.fullmatch(v) else f"{_show(v)} is not a systemd unit name"


def check_url(v: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Return a problem description, or None when ``v`` is a usable absolute URL."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in schemes:
        return f"must start with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname:
        return "has no host"
    if port == 0:
        return "has port 0"
    return None


def _c_url(v: Any, _all: Mapping[str, Any]) -> str | None:
    return check_url(v)


def _c_ssh_url(v: Any, _all: Mapping[str, Any]) -> str | None:
    if v == "local":
        return None
    problem = check_url(v, schemes=("ssh",))
    if problem:
        return problem + " (use ssh://user@host[:port] or 'local')"
    if urlsplit(v).password is not None:
        return "must not carry a password (use SSH_KEY_FILE or an agent)"
    return None


def _c_abs_path(v: Any, _all: Mapping[str, Any]) -> str | None:
    s = str(v)
    if not s.startswith("/"):
        return f"{_show(s)} must be an absolute path"
    if any(part == ".." for part in s.split("/")):
        return f"{_show(s)} must not contain '..'"
    if any(c.isspace() or ord(c) < 32 for c in s):
        return f"{_show(s)} must not contain whitespace or control characters"
    return None


def _c_http_path(v: Any, _all: Mapping[str, Any]) -> str | None:
    if not v.startswith("/") or any(c.isspace() or ord(c) < 32 for c in v):
        return f"{_show(v)} must be an absolute URL path like /api/v1/health"
    return None


def _c_readable_file(v: Any, _all: Mapping[str, Any]) -> str | None:
    """A file given as a setting (CA bundle, key, token): a readable regular file, never a device or FIFO."""
    return check_readable_file(Path(v))


#: Files read as settings are small (PEM, tokens, keys, TOML); anything bigger is a mistake.
MAX_SETTINGS_FILE_BYTES = 1 << 20


def check_readable_file(path: Path) -> str | None:
    p = str(path) if str(path).isprintable() else repr(str(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{p}: no such file"
    except OSError as exc:
        return f"{p}: cannot stat ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return f"{p}: is a directory"
    if not stat.S_ISREG(st.st_mode):
        return f"{p}: is not a regular file (device, FIFO or socket)"
    if st.st_size > MAX_SETTINGS_FILE_BYTES:
        return f"{p}: is larger than {MAX_SETTINGS_FILE_BYTES // 1024} KiB"
    if not os.access(path, os.R_OK):
        return f"{p}: is not readable"
    return None


def _c_rate_window(v: Any, _all: Mapping[str, Any]) -> str | None:
    if v < 1 or v != int(v):
        return f"{v:g}s must be a whole number of seconds >= 1 (a PromQL range)"
    if v > 24 * 3600:
        return f"{v:g}s is more than a day"
    return None


def _c_selector(v: Any, _all: Mapping[str, Any]) -> str | None:
    """Label matchers only (no braces outside a quoted value, no injected PromQL); ``{node}`` the only placeholder."""
    from veza_canary.evidence import check_matchers

    return check_matchers(v, ("node",))


def _c_sli_metric(v: Any, _all: Mapping[str, Any]) -> str | None:
    from veza_canary.evidence import check_metric

    return check_metric(v)


def _c_matchers(*placeholders: str) -> Check:
    def check(v: Any, _all: Mapping[str, Any]) -> str | None:
        from veza_canary.evidence import check_matchers

        return check_matchers(v, placeholders)

    return check


def _c_sli_window(v: Any, all_: Mapping[str, Any]) -> str | None:
    if v <= 0:
        return f"{v:g} must be > 0 (a watch of no time judges nothing)"
    floor = 0.0 if all_.get("allow_short_window") else MIN_SLI_WINDOW
    if v < floor:
        return (
            f"{v:g}s is below the {MIN_SLI_WINDOW:g}s minimum "
            "(the runbook's floor; --allow-short-window lowers it for labs and tests)"
        )
    if v > 7 * 24 * 3600:
        return f"{v:g}s is more than a week"
    return None


def _c_probe_interval(v: Any, all_: Mapping[str, Any]) -> str | None:
    if v < MIN_PROBE_INTERVAL:
        return f"{v:g}s is too small (must be >= {MIN_PROBE_INTERVAL:g}s: Prometheus scrapes no faster)"
    if v > 3600:
        return f"{v:g}s is more than an hour"
    window = all_.get("sli_window")
    if isinstance(window, float) and window > 0 and v > window:
        return f"{v:g}s is longer than SLI_WINDOW ({window:g}s)"
    return None


DEFAULT_HAPROXY_CONTAINER = "haproxy"

MIN_SLI_WINDOW = 300.0
MIN_PROBE_INTERVAL = 1.0
MIN_POLL_INTERVAL = 0.05


# --- the knobs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Knob:
    """One knob: a field of a settings group, and how the four layers spell and check it."""

    name: str  # TOML key, flag (kebab-case) and the key used by load_settings(flags=...)
    env: str
    parse: Parser
    help: str
    check: Check | None = None
    secret: bool = False
    is_flag: bool = False  # boolean on/off flag on the CLI
    group: str = ""  # attribute of Settings holding the group ("" = Settings itself)
    field: str = ""  # attribute inside the group
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def read(self, s: Settings) -> Any:
        return getattr(getattr(s, self.group) if self.group else s, self.field)

    @property
    def shown_default(self) -> str:
        """The default as the knob tables print it (``(unset)``, ``1``/``0``, ``3600``, ``a b``)."""
        v = self.default
        if v is None:
            return "(unset)"
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, tuple):
            return " ".join(v)
        return str(v)


def knob(env: str, default: Any, parse: Parser, help: str, *, check: Check | None = None,  # noqa: A002
         key: str | None = None, is_flag: bool = False, secret: bool = False) -> Any:
    """A settings field that is also a knob: ``KNOBS`` is built from these."""
    spec = {"env": env, "parse": parse, "help": help, "check": check, "key": key or env.lower(),
            "is_flag": is_flag, "secret": secret}
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple default")
    return field(default=default, metadata={"knob": spec})


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolSettings:
    """Which nodes take part: the canary first, then the peers."""

    canary: str = knob("CANARY_NODE", "backend-api-2", _p_str, "Node that gets the canary.", check=_c_node)
    peers: tuple[str, ...] = knob("PEER_NODES", ("backend-api-1",), _p_node_list,
                                  "Peers rolled after the canary (space or comma separated).", check=_c_nodes)
    batch: Share = knob("PEER_BATCH", Share(1), _p_share,
                        "Peers changed together (a count or a percentage of the peers; 1 = one at a time).",
                        check=_c_share(1))
    min_in_rotation: Share = knob("MIN_IN_ROTATION", Share(1), _p_share,
                                  "Servers of the backend that must stay UP and in rotation at every moment "
                                  "(a count or a percentage of the backend).", check=_c_share(0))

    @property
    def nodes(self) -> tuple[str, ...]:
        """Canary first, then peers, without repeats."""
        return (self.canary, *[p for p in self.peers if p != self.canary])


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceSettings:
    """The service on each node and how to reach it."""

    name: str = knob("SERVICE_NAME", "veza-backend-api", _p_str, "systemd unit of the service.", check=_c_unit)
    install_dir: str = knob("INSTALL_DIR", "/opt/veza/backend-api", _p_str, "Install dir on each node.",
                            check=_c_abs_path)
    restart_command: tuple[str, ...] | None = knob(
        "RESTART_COMMAND", None, _p_argv, "Restart argv run on the node (default: systemctl restart SERVICE_NAME).")
    health_url: str = knob("NODE_HEALTH_URL", "http://127.0.0.1:8080", _p_str,
                           "Base URL of the service, as seen from inside its container.", check=_c_url)
    health_path: str = knob("HEALTH_PATH", "/api/v1/health", _p_str, "Health endpoint path.", check=_c_http_path)
    lb_url: str = knob("LB_URL", "http://haproxy.lxd", _p_str, "Base URL of the load balancer.", check=_c_url)

    @property
    def binary_path(self) -> str:
        return f"{self.install_dir.rstrip('/')}/veza-api"

    @property
    def previous_path(self) -> str:
        return f"{self.install_dir.rstrip('/')}/veza-api.previous"

    @property
    def restart_argv(self) -> tuple[str, ...]:
        return self.restart_command or ("systemctl", "restart", self.name)

    @property
    def node_health_url(self) -> str:
        return self.health_url.rstrip("/") + self.health_path

    @property
    def lb_health_url(self) -> str:
        return self.lb_url.rstrip("/") + self.health_path


@dataclass(frozen=True, kw_only=True, slots=True)
class HAProxySettings:
    """The HAProxy runtime API."""

    backend: str = knob("POOL_BACKEND", "api_pool", _p_str, "HAProxy backend of the pool.", check=_c_haproxy_name)
    container: str = knob("HAPROXY_CONTAINER", DEFAULT_HAPROXY_CONTAINER, _p_str,
                          "Incus container running HAProxy ([remote:]name).", check=_c_instance)
    containers: tuple[str, ...] | None = knob(
        "HAPROXY_CONTAINERS", None, _p_node_list,
        "Several HAProxy containers serving the pool (space or comma separated; a list in the config file): "
        "every change goes to all, a node is drained or UP only when all agree; the lock and the history "
        "live on the first (docs/multi-lb.md). Unset: HAPROXY_CONTAINER alone.", check=_c_instances)
    socket: str = knob("HAPROXY_SOCKET", "/run/haproxy/admin.sock", _p_str,
                       "Admin socket path inside the HAProxy container.", check=_c_abs_path)
    local_socket: Path | None = knob("HAPROXY_LOCAL_SOCKET", None, _p_path,
                                     "Talk to this local admin socket directly instead of through incus exec.")

    @property
    def lbs(self) -> tuple[str, ...]:
        """Every HAProxy container, the one holding the lock and the history first."""
        return self.containers or (self.container,)


@dataclass(frozen=True, kw_only=True, slots=True)
class SSHSettings:
    """Where Incus runs, and how to reach it over SSH."""

    incus_host: str | None = knob("INCUS_HOST", None, _p_opt_str,
                                  "Where incus runs: unset/'local', or ssh://user@host[:port].", check=_c_ssh_url)
    key_file: Path | None = knob("SSH_KEY_FILE", None, _p_path, "Private key for INCUS_HOST (else agent/defaults).",
                                 check=_c_readable_file)
    known_hosts: Path | None = knob("SSH_KNOWN_HOSTS", None, _p_path, "Extra known_hosts file.",
                                    check=_c_readable_file)
    accept_new_host_key: bool = knob("SSH_ACCEPT_NEW_HOST_KEY", False, _p_bool,
                                     "Accept and remember an unknown SSH host key (off: unknown keys are refused).",
                                     is_flag=True)
    connect_timeout: float = knob("SSH_CONNECT_TIMEOUT", 10.0, parse_duration, "SSH connect timeout.",
                                  check=_c_range(0, 600, lo_open=True))


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeouts:
    """Deadlines and poll cadence of the waits (seconds)."""

    drain: float = knob("DRAIN_TIMEOUT", 120.0, parse_duration, "Deadline for a drain to reach 0 sessions.",
                        check=_c_range(0, 86400, lo_open=True))
    drain_action: str = knob("DRAIN_TIMEOUT_ACTION", "fail", _choice("fail", "shutdown-sessions"),
                             "On drain timeout: fail (restore and stop) or shutdown-sessions (kill them and go on).")
    node_health: float = knob("NODE_HEALTH_TIMEOUT", 60.0, parse_duration, "Deadline for node health.",
                              check=_c_range(0, 3600, lo_open=True))
    up: float = knob("UP_TIMEOUT", 60.0, parse_duration, "Deadline for HAProxy to report a node UP.",
                     check=_c_range(0, 3600, lo_open=True))
    poll_interval: float = knob("POLL_INTERVAL", 0.5, parse_duration,
                                "Longest gap between two polls of a drain, health, UP or LB wait "
                                "(the gaps start at 0.1 s and double up to it).",
                                check=_c_range(MIN_POLL_INTERVAL, 60))
    http: float = knob("HTTP_TIMEOUT", 5.0, parse_duration, "Timeout of one HTTP request.",
                       check=_c_range(0, 300, lo_open=True))


@dataclass(frozen=True, kw_only=True, slots=True)
class PrometheusSettings:
    """Where Prometheus is and how to talk to it."""

    url: str = knob("PROM_URL", "http://prom.lxd:9090", _p_str, "Prometheus base URL.", check=_c_url)
    ca_bundle: Path | None = knob("PROM_CA_BUNDLE", None, _p_path, "CA bundle for an https PROM_URL.",
                                  check=_c_readable_file)
    client_cert: Path | None = knob("PROM_CLIENT_CERT", None, _p_path, "Client certificate (PEM) for Prometheus.",
                                    check=_c_readable_file)
    client_key: Path | None = knob("PROM_CLIENT_KEY", None, _p_path, "Client key (PEM) for Prometheus.",
                                   check=_c_readable_file)
    token_file: Path | None = knob("PROM_TOKEN_FILE", None, _p_path, "File holding a bearer token for Prometheus.",
                                   check=_c_readable_file)


@dataclass(frozen=True, kw_only=True, slots=True)
class SLISettings:
    """The SLI watch: what is measured, against what, for how long."""

    window: float = knob("SLI_WINDOW", 3600.0, parse_duration, "SLI watch window.", check=_c_sli_window)
    probe_interval: float = knob("SLI_PROBE_INTERVAL", 30.0, parse_duration, "Time between SLI probes.",
                                 check=_c_probe_interval)
    p95_threshold_s: float = knob("PROM_P95_THRESHOLD_S", 0.5, parse_duration, "p95 latency threshold.",
                                  check=_c_range(0, 3600, lo_open=True))
    err_ratio_threshold: float = knob("PROM_ERR_RATE_THRESHOLD", 0.005, _p_float, "5xx ratio threshold (0-1).",
                                      check=_c_range(0, 1, lo_open=True))
    rate_window_s: float = knob("SLI_RATE_WINDOW", 60.0, parse_duration, "PromQL rate() window.",
                                check=_c_rate_window)
    selector: str = knob("SLI_SELECTOR", 'node="{node}"', _p_str,
                         "Label matchers scoping the SLI; {node} is the canary. Without {node}: whole fleet.",
                         check=_c_selector)
    min_requests: float = knob("SLI_MIN_REQUESTS", 5.0, _p_float,
                               "Fewer requests than this in the rate window is no-data, not a pass.",
                               check=_c_range(0, 1e9))
    max_nodata: int = knob("SLI_MAX_NODATA", 3, _p_int, "Consecutive no-data probes tolerated.",
                           check=_c_range(0, 1000))
    max_errors: int = knob("SLI_MAX_ERRORS", 3, _p_int, "Consecutive Prometheus errors tolerated.",
                           check=_c_range(0, 1000))
    # The judge (veza_canary/verdict.py; why: docs/sli-judge.md) and the metric it reads (evidence.py).
    judge: str = knob("SLI_JUDGE", "sound", _choice("sound", "first-red"),
                      "sound: counts since rotation, with confidence and a baseline; first-red: the runbook's "
                      "literal rule (first red probe rolls back).")
    confidence: float = knob("SLI_CONFIDENCE", 0.95, _p_float,
                             "Confidence of a rollback: a canary exactly at the SLO is rolled back at most "
                             "1 - this often.", check=_c_range(0.5, 0.9999, lo_open=True))
    metric: str = knob("SLI_METRIC", "veza_gin_http_request_duration_seconds", _p_str,
                       "Histogram base name (<name>_bucket and <name>_count are read).", check=_c_sli_metric)
    baseline_selector: str = knob("SLI_BASELINE_SELECTOR", 'node=~"{peers}"', _p_str,
                                  "Label matchers of the baseline; {peers} is the peers as a regex.",
                                  check=_c_matchers("peers"))
    error_selector: str = knob("SLI_ERROR_SELECTOR", 'status=~"5.."', _p_str,
                               "Label matchers that make a request an error.", check=_c_matchers())
    exclude: str = knob("SLI_EXCLUDE", 'path!="{health_path}"', _p_str,
                        "Label matchers leaving requests out of the SLI; {health_path} is HEALTH_PATH.",
                        check=_c_matchers("health_path"))
    baseline_err_factor: float = knob("SLI_BASELINE_ERR_FACTOR", 2.0, _p_float,
                                      "Fail a canary whose 5xx ratio is this many times the baseline's ...",
                                      check=_c_range(1, 100))
    baseline_err_margin: float = knob("SLI_BASELINE_ERR_MARGIN", 0.001, _p_float,
                                      "... and at least this much above it (0.001 = 0.1 percentage point).",
                                      check=_c_range(0, 1))
    baseline_p95_factor: float = knob("SLI_BASELINE_P95_FACTOR", 1.5, _p_float,
                                      "Fail a canary whose p95 is this many times the baseline's.",
                                      check=_c_range(1, 100))
    hold_limit_s: float = knob("SLI_HOLD_LIMIT", 900.0, parse_duration,
                               "A fleet-wide incident longer than this rolls the canary back without blocking "
                               "the release.", check=_c_range(0, 86400))

    @property
    def rate_window(self) -> str:
        """The rate window as a PromQL range (``60s``)."""
        return f"{int(self.rate_window_s)}s"


@dataclass(frozen=True, kw_only=True, slots=True)
class MigrationSettings:
    """The migration backward-compat gate."""

    dir: str = knob("MIGRATIONS_DIR", "migrations", _p_str, "golang-migrate directory.")
    since: str = knob("MIGRATIONS_SINCE", "origin/main", _p_str, "Lint migrations new since this ref.")
    dialect: str = knob("MIGRATIONS_DIALECT", "postgres", _choice("postgres", "mysql"), "SQL dialect.")
    force: bool = knob("FORCE_MIGRATE", False, _p_bool, "Bypass the migration backward-compat gate (logged loudly).",
                       is_flag=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class SafetySettings:
    """Overrides of safety checks, and the fleet lock."""

    allow_short_window: bool = knob("ALLOW_SHORT_SLI_WINDOW", False, _p_bool,
                                    "Allow SLI_WINDOW below 300 s (labs and tests only).",
                                    key="allow_short_window", is_flag=True)
    allow_degraded: bool = knob("ALLOW_DEGRADED", False, _p_bool,
                                "Deploy even when a node is not UP before the start.", is_flag=True)
    allow_no_rollback: bool = knob("ALLOW_NO_ROLLBACK", False, _p_bool,
                                   "Deploy without a verified rollback binary (auto-rollback impossible).",
                                   is_flag=True)
    lock_wait: float = knob("LOCK_WAIT", 0.0, parse_duration, "Wait this long for the deploy lock.",
                            check=_c_range(0, 86400))
    lock_stale_after: float = knob("LOCK_STALE_AFTER", 7200.0, parse_duration, "A lock older than this is stale.",
                                   check=_c_range(0, 30 * 86400, lo_open=True))


def _p_list(v: Any) -> tuple[str, ...]:
    """Words separated by blanks or commas (env, flag), or a TOML list: URLs, event and hook names."""
    return _p_node_list(v)


def _c_webhook_urls(v: Any, _all: Mapping[str, Any]) -> str | None:
    for url in v:
        problem = check_url(url)
        if problem:
            from veza_canary.notify import shown_url  # the URL is a credential: never echo it whole

            return f"{shown_url(url)} {problem}"
    if len(set(v)) != len(v):
        return "lists a URL twice"
    return None


def _c_webhook_events(v: Any, _all: Mapping[str, Any]) -> str | None:
    from veza_canary.notify import EVENTS

    unknown = [e for e in v if e not in EVENTS]
    return f"unknown event(s) {', '.join(map(_show, unknown))} (known: {', '.join(EVENTS)})" if unknown else None


def _c_hook_names(v: Any, _all: Mapping[str, Any]) -> str | None:
    from veza_canary.hooks import HOOK_NAMES

    unknown = [h for h in v if h not in HOOK_NAMES]
    return f"unknown hook(s) {', '.join(map(_show, unknown))} (known: {', '.join(HOOK_NAMES)})" if unknown else None


@dataclass(frozen=True, kw_only=True, slots=True)
class NotifySettings:
    """Webhooks, local hook scripts (docs/hooks-and-notifications.md)."""

    webhook_urls: tuple[str, ...] | None = knob(
        "WEBHOOK_URLS", None, _p_list,
        "URLs that get a JSON POST per event (blank/comma separated; a list in the config file).",
        check=_c_webhook_urls, secret=True)
    webhook_timeout: float = knob("WEBHOOK_TIMEOUT", 5.0, parse_duration, "Timeout of one webhook POST attempt.",
                                  check=_c_range(0, 60, lo_open=True))
    webhook_events: tuple[str, ...] | None = knob(
        "WEBHOOK_EVENTS", None, _p_list, "Only these events to the webhooks (unset: all).",
        check=_c_webhook_events)
    hooks_dir: Path = knob("HOOKS_DIR", Path(".veza-canary/hooks"), _p_path,
                           "Directory of the hook executables (relative: to the repository root).")
    hook_timeout: float = knob("HOOK_TIMEOUT", 300.0, parse_duration,
                               "A hook running longer is killed (its whole process group).",
                               check=_c_range(0, 86400, lo_open=True))
    required_hooks: tuple[str, ...] | None = knob(
        "REQUIRED_HOOKS", None, _p_list, "Hooks that must exist and be executable (preflight fails otherwise).",
        check=_c_hook_names)


# --- traffic shaping (docs/traffic-shaping.md) -----------------------------------------------------------------


def _p_steps(v: Any) -> str:
    """``5,25,100`` (env, flag), ``[5, 25, 100]`` (TOML): the ramp's weights in percent, normalised to ``5,25,100``."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        items: list[Any] = [v]
    elif isinstance(v, list | tuple):
        items = list(v)
    else:
        items = [x for x in re.split(r"[, ]+", _p_str(v).strip(" ,")) if x != ""]
    out = []
    for x in items:
        n = _p_int(x) if not isinstance(x, float) else x
        if isinstance(n, float):
            if n != int(n):
                raise ValueError(f"{n:g} is not a whole percent")
            n = int(n)
        out.append(n)
    return ",".join(str(n) for n in out)


def _c_steps(v: Any, _all: Mapping[str, Any]) -> str | None:
    steps = [int(x) for x in v.split(",") if x]
    if not steps:
        return "lists no step"
    if any(not 1 <= s <= 100 for s in steps):
        return f"{v}: every step must be a percent between 1 and 100"
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        return f"{v}: steps must increase"
    if steps[-1] != 100:
        return f"{v}: the last step must be 100 (it restores the configured weight)"
    if len(steps) > 20:
        return f"{v}: more than 20 steps"
    return None


def _c_step_hold(v: Any, all_: Mapping[str, Any]) -> str | None:
    if v <= 0:
        return f"{v:g} must be > 0 (a step held for no time judges nothing)"
    floor = 0.0 if all_.get("allow_short_window") else MIN_SLI_WINDOW
    if v < floor:
        return (f"{v:g}s is below the {MIN_SLI_WINDOW:g}s minimum "
                "(a small step needs time to gather evidence; --allow-short-window lowers it for labs and tests)")
    if v > 7 * 24 * 3600:
        return f"{v:g}s is more than a week"
    return None


_PIN_KEY_RE = re.compile(r"[A-Za-z0-9_.:@+=/-]{1,100}")


def _c_pins(v: Any, _all: Mapping[str, Any]) -> str | None:
    for key in v:
        if not _PIN_KEY_RE.fullmatch(key):
            return (f"{_show(key)} is not a pin key (1-100 of letters, digits and _ . : @ + = / -; "
                    "it becomes a map entry over the runtime API)")
    if len(set(v)) != len(v):
        return "lists a key twice"
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class TrafficSettings:
    """Blast radius: the weighted ramp and the pinned stage (docs/traffic-shaping.md)."""

    steps_spec: str = knob("CANARY_STEPS", "100", _p_steps,
                           "Weighted ramp: the canary's weight at each step, in percent of its configured weight "
                           "(e.g. 5,25,100; the last step is 100). 100 alone: no ramp.", check=_c_steps)
    step_hold: float = knob("CANARY_STEP_HOLD", 600.0, parse_duration,
                            "How long each ramp step before the last is held and judged (the last: SLI_WINDOW).",
                            check=_c_step_hold)
    pins: tuple[str, ...] | None = knob(
        "CANARY_PINS", None, _p_list,
        "Pinned stage before random traffic: map keys (header/cookie values) routed to the canary only. "
        "Unset: no pinned stage.", check=_c_pins)
    pin_map: Path = knob("CANARY_PIN_MAP", Path("/etc/haproxy/canary-pin.map"), _p_path,
                        "HAProxy map file the pinned stage edits over the runtime API (key -> server).",
                        check=_c_abs_path)
    pin_hold: float = knob("CANARY_PIN_HOLD", 600.0, parse_duration,
                           "How long the pinned stage is held and judged.", check=_c_step_hold)

    @property
    def steps(self) -> tuple[int, ...]:
        """The ramp's steps in percent, ending with 100."""
        return tuple(int(x) for x in self.steps_spec.split(","))

    @property
    def ramped(self) -> bool:
        """True when the canary enters rotation below its configured weight."""
        return self.steps != (100,)


def _group(cls: type) -> Any:
    return field(default_factory=cls)


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Every knob, resolved and validated, in small groups. Build with ``load_settings``."""

    artifact: Path | None = knob("ARTIFACT", None, _p_path, "New veza-api binary to ship.")
    rollback_binary: Path | None = knob(
        "ROLLBACK_BINARY", None, _p_path,
        "Last-known-good binary (local). Unset: the binary the canary runs when the deploy starts.")
    state_dir: Path | None = knob("STATE_DIR", None, _p_path, "Local state dir (reports). Default: XDG state dir.")
    pool: PoolSettings = _group(PoolSettings)
    service: ServiceSettings = _group(ServiceSettings)
    haproxy: HAProxySettings = _group(HAProxySettings)
    ssh: SSHSettings = _group(SSHSettings)
    timeouts: Timeouts = _group(Timeouts)
    prometheus: PrometheusSettings = _group(PrometheusSettings)
    sli: SLISettings = _group(SLISettings)
    migrations: MigrationSettings = _group(MigrationSettings)
    safety: SafetySettings = _group(SafetySettings)
    notify: NotifySettings = _group(NotifySettings)
    traffic: TrafficSettings = _group(TrafficSettings)
    #: Where each value came from: knob name -> "flag" | "env" | "config" | "default".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: The TOML config file read, if any (other parts of the tool read their own tables from it).
    config_file: Path | None = field(default=None, compare=False)

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir:
            return self.state_dir
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "veza-canary"

    def replace(self, **knobs: Any) -> Settings:
        """A copy with some knobs (by knob name, already parsed values) changed: ``s.replace(sli_window=60.0)``."""
        unknown = set(knobs) - set(KNOBS_BY_NAME)
        if unknown:
            raise ValueError(f"unknown knob(s): {sorted(unknown)}")  # programming error
        values = {k.name: k.read(self) for k in KNOBS} | knobs
        return build_settings(values, {**self.sources, **dict.fromkeys(knobs, "override")}, self.config_file)

    def public_dict(self) -> dict[str, Any]:
        """Settings for reports and logs, keyed by knob name: JSON-friendly, secrets redacted."""
        from veza_canary.log import redact_value

        out: dict[str, Any] = {}
        for k in KNOBS:
            v = k.read(self)
            if isinstance(v, Path | Share):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[k.name] = "[REDACTED]" if k.secret and v else redact_value(v)
        return out


_NOT_KNOBS = ("sources", "config_file")


def _knobs_of(cls: type, group: str) -> Iterator[Knob]:
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("knob")
        if spec is not None:
            yield Knob(name=spec["key"], env=spec["env"], parse=spec["parse"], help=spec["help"],
                       check=spec["check"], secret=spec["secret"], is_flag=spec["is_flag"], group=group,
                       field=f.name, default=f.default)
        elif f.name not in _NOT_KNOBS:
            yield from _knobs_of(f.default_factory, f.name)  # type: ignore[misc,arg-type]


#: Every knob, in declaration order (README table, --help, validation order).
KNOBS: tuple[Knob, ...] = tuple(_knobs_of(Settings, ""))
KNOBS_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
KNOBS_BY_ENV: dict[str, Knob] = {k.env: k for k in KNOBS}
_GROUPS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Settings)  # type: ignore[misc]
                            if "knob" not in f.metadata and f.name not in _NOT_KNOBS}


# --- loading ----------------------------------------------------------------------


def _coerce(knob: Knob, raw: Any, layer: str, layer_name: str) -> Any:
    try:
        return knob.parse(raw)
    except ValueError as exc:
        raise ConfigError(_where(knob, layer, layer_name), str(exc)) from None


def _where(knob: Knob, layer: str, layer_name: str) -> str:
    if layer == "flag":
        return knob.flag
    if layer == "config":
        return f"{knob.name} (in {layer_name})"
    return knob.env


#: TOML nesting deeper than this is refused (tomllib recurses; a hostile file must not crash it).
_MAX_TOML_DEPTH = 32


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file; every problem is a ConfigError naming the file."""
    shown = str(path) if str(path).isprintable() else repr(str(path))  # a newline must not forge a 2nd line
    problem = check_readable_file(path)
    if problem:
        raise ConfigError("--config", problem)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("--config", f"{shown}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_SETTINGS_FILE_BYTES:
        raise ConfigError("--config", f"{shown}: is larger than {MAX_SETTINGS_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{shown}: is not UTF-8 text") from None
    if _nesting(text) > _MAX_TOML_DEPTH:
        raise ConfigError("--config", f"{shown}: nested more than {_MAX_TOML_DEPTH} levels deep")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{shown}: malformed TOML ({exc})") from None
    except RecursionError:
        raise ConfigError("--config", f"{shown}: nested too deeply") from None
    unknown = sorted(k for k in data if k not in KNOBS_BY_NAME and k not in _EXTRA_CONFIG_TABLES)
    if unknown:
        keys = ", ".join(k if k.isprintable() else repr(k) for k in unknown)
        raise ConfigError("--config", f"{shown}: unknown key(s): {keys}")
    return data


def _nesting(text: str) -> int:
    """An upper bound of the bracket nesting of a TOML text (strings counted too: a bound, not a parse)."""
    depth = deepest = 0
    for c in text:
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
    return deepest


#: Top-level TOML tables owned by other parts of the tool (e.g. the linter's rule severities).
_EXTRA_CONFIG_TABLES = frozenset({"lint"})

DEFAULT_CONFIG_NAME = "veza-canary.toml"


def find_config(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get("VEZA_CANARY_CONFIG"):
        return Path(env["VEZA_CANARY_CONFIG"])
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.is_file() else None


def _given(v: Any) -> bool:
    """An empty value means "not given", in every layer."""
    return v is not None and v != "" and v != [] and v != ()


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every knob: flag > env > config file > default; validate all of them.

    ``flags`` maps knob names to raw values (None or empty means "not given").
    ``env`` defaults to ``os.environ``; pass ``{}`` for none. ``config`` (a mapping)
    replaces reading a config file.
    """
    flags = flags or {}
    env = os.environ if env is None else env
    unknown_flags = set(flags) - set(KNOBS_BY_NAME)
    if unknown_flags:
        raise ValueError(f"unknown knob(s): {sorted(unknown_flags)}")  # programming error
    path = None
    if config is None:
        path = find_config(config_path, env)
        config = read_config_file(path) if path else {}
        config_name = (str(path) if str(path).isprintable() else repr(str(path))) if path else ""
    else:
        config_name = "config"

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k in KNOBS:
        if _given(flags.get(k.name)):
            values[k.name] = _coerce(k, flags[k.name], "flag", "")
            sources[k.name] = "flag"
        elif _given(env.get(k.env)):
            values[k.name] = _coerce(k, env[k.env], "env", "")
            sources[k.name] = "env"
        elif _given(config.get(k.name)):
            values[k.name] = _coerce(k, config[k.name], "config", config_name)
            sources[k.name] = "config"
        else:
            values[k.name] = k.default
            sources[k.name] = "default"

    for k in KNOBS:
        if k.check is None or values[k.name] is None:
            continue
        problem = k.check(values[k.name], values)
        if problem:
            raise ConfigError(_where(k, sources[k.name], config_name), problem)

    if values["canary_node"] in values["peer_nodes"]:
        raise ConfigError("PEER_NODES", f"lists the canary node {values['canary_node']!r}")
    if values["prom_url"].startswith("http://") and (values["prom_client_cert"] or values["prom_ca_bundle"]):
        raise ConfigError("PROM_URL", "TLS knobs are set but PROM_URL is plain http://")
    if bool(values["prom_client_cert"]) != bool(values["prom_client_key"]):
        raise ConfigError("PROM_CLIENT_CERT" if values["prom_client_key"] else "PROM_CLIENT_KEY",
                          "PROM_CLIENT_CERT and PROM_CLIENT_KEY go together")
    return build_settings(values, sources, path)


def build_settings(values: Mapping[str, Any], sources: Mapping[str, str] | None = None,
                   config_file: Path | None = None) -> Settings:
    """Assemble the groups from knob values keyed by knob name (missing ones take their defaults)."""
    top: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}
    plain: dict[str, Any] = {}
    for k in KNOBS:
        if k.name in values:
            (top[k.group] if k.group else plain)[k.field] = values[k.name]
    groups = {g: cls(**top[g]) for g, cls in _GROUPS.items()}
    return Settings(**plain, **groups, sources=dict(sources or {}), config_file=config_file)
