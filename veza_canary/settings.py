"""Settings: one frozen value object, built from four layers.

Precedence, highest first (documented in README.md and tested)::

    command-line flag  >  environment variable  >  TOML config file  >  default

Every knob is declared once in ``KNOBS`` with its environment name (the runbook's
names: ``ARTIFACT``, ``SLI_WINDOW``, ...), its kebab-case flag (``--sli-window``),
its TOML key (``sli_window``), its default, a parser and a check. The loader treats
all four layers alike, so a bad value gets the same one-line message wherever it
came from, naming the knob and the layer, before anything is touched.

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
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from veza_canary.errors import ConfigError

# --- names ------------------------------------------------------------------

#: Incus instance names: 1-63 chars, letters/digits/hyphens, start with a letter, no trailing hyphen.
_INSTANCE_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
#: Incus remote names (the part before ``:`` in ``remote:container``).
_REMOTE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: HAProxy proxy and server names.
_HAPROXY_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_DURATION_RE = re.compile(r"^[1-9][0-9]{0,5}(ms|s|m|h)$")


def check_instance_name(value: str, *, allow_remote: bool = False) -> str | None:
    """Return a problem description, or None when ``value`` is a valid Incus instance name."""
    shown = _show(value)
    if allow_remote and ":" in value:
        remote, _, name = value.partition(":")
        if not _REMOTE_RE.match(remote):
            return f"{shown} has an invalid Incus remote name"
        value = name
    if not value:
        return "is empty"
    if len(value) > 63:
        return f"{shown} is longer than 63 characters"
    if not _INSTANCE_RE.match(value):
        return (
            f"{shown} is not a valid Incus instance name "
            "(letters, digits and hyphens; starts with a letter; no trailing hyphen)"
        )
    return None


def _show(value: str, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


# --- parsers and checks -----------------------------------------------------

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
_FALSE = {"0", "false", "no", "off", ""}


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
    s = _p_str(v)
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


def _c_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Check:
    def check(v: Any, _all: Mapping[str, Any]) -> str | None:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"{v:g} is too small (must be {'>' if lo_open else '>='} {lo:g})"
        if hi is not None and v > hi:
            return f"{v:g} is too large (must be <= {hi:g})"
        return None

    return check


def _c_instance(v: Any, _all: Mapping[str, Any]) -> str | None:
    return check_instance_name(v, allow_remote=True) if v is not None else None


def _c_node(v: Any, _all: Mapping[str, Any]) -> str | None:
    return check_instance_name(v)


def _c_nodes(v: Any, _all: Mapping[str, Any]) -> str | None:
    for name in v:
        problem = check_instance_name(name)
        if problem:
            return problem
    if len(set(v)) != len(v):
        return "lists a node twice"
    return None


def _c_haproxy_name(v: Any, _all: Mapping[str, Any]) -> str | None:
    if not _HAPROXY_NAME_RE.match(v):
        return f"{_show(v)} is not a valid HAProxy proxy name (letters, digits, _ . : -)"
    return None


def check_url(v: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Return a problem description, or None when ``v`` is a usable absolute URL."""
    if any(c.isspace() or ord(c) < 32 for c in v):
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
    return check_url(v) if v is not None else None


def _c_ssh_url(v: Any, _all: Mapping[str, Any]) -> str | None:
    if v is None or v == "local":
        return None
    problem = check_url(v, schemes=("ssh",))
    if problem:
        return problem + " (use ssh://user@host[:port] or 'local')"
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


def _c_duration(v: Any, _all: Mapping[str, Any]) -> str | None:
    if not _DURATION_RE.match(v):
        return f"{_show(v)} is not a PromQL duration like 30s, 1m or 5m"
    return None


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
    if v <= 0:
        return f"{v:g} must be > 0"
    if v > 3600:
        return f"{v:g}s is more than an hour"
    window = all_.get("sli_window")
    if isinstance(window, float) and window > 0 and v > window:
        return f"{v:g}s is longer than SLI_WINDOW ({window:g}s)"
    return None


# --- the knob table -----------------------------------------------------------

MIN_SLI_WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class Knob:
    name: str  # dataclass field and TOML key
    env: str
    default: Any
    parse: Parser
    help: str
    check: Check | None = None
    secret: bool = False
    is_flag: bool = False  # boolean on/off flag on the CLI

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


K = Knob
KNOBS: tuple[Knob, ...] = (
    # What to ship and what to fall back to.
    K("artifact", "ARTIFACT", None, _p_path, "New veza-api binary to ship."),
    K("rollback_binary", "ROLLBACK_BINARY", None, _p_path,
      "Last-known-good binary (local). Unset: use INSTALL_DIR/veza-api.previous on the node."),
    # Fleet.
    K("canary_node", "CANARY_NODE", "backend-api-2", _p_str, "Node that gets the canary.", _c_node),
    K("peer_nodes", "PEER_NODES", ("backend-api-1",), _p_node_list,
      "Peers rolled after the canary (space or comma separated).", _c_nodes),
    K("pool_backend", "POOL_BACKEND", "api_pool", _p_str, "HAProxy backend of the pool.", _c_haproxy_name),
    K("install_dir", "INSTALL_DIR", "/opt/veza/backend-api", _p_str, "Install dir on each node.", _c_abs_path),
    K("service_name", "SERVICE_NAME", "veza-backend-api", _p_str, "systemd unit of the service.",
      lambda v, a: None if re.match(r"^[A-Za-z0-9@._-]{1,100}$", v) else f"{_show(v)} is not a unit name"),
    K("restart_command", "RESTART_COMMAND", None, _p_argv,
      "Restart argv run on the node (default: systemctl restart SERVICE_NAME)."),
    K("node_health_url", "NODE_HEALTH_URL", "http://127.0.0.1:8080", _p_str,
      "Base URL of the service, as seen from inside its container.", _c_url),
    K("health_path", "HEALTH_PATH", "/api/v1/health", _p_str, "Health endpoint path.", _c_http_path),
    K("lb_url", "LB_URL", "http://haproxy.lxd", _p_str, "Base URL of the load balancer.", _c_url),
    # HAProxy runtime API.
    K("haproxy_container", "HAPROXY_CONTAINER", "haproxy", _p_str,
      "Incus container running HAProxy ([remote:]name).", _c_instance),
    K("haproxy_socket", "HAPROXY_SOCKET", "/run/haproxy/admin.sock", _p_str,
      "Admin socket path inside the HAProxy container.", _c_abs_path),
    K("haproxy_local_socket", "HAPROXY_LOCAL_SOCKET", None, _p_path,
      "Talk to this local admin socket directly instead of through incus exec."),
    # Incus / SSH.
    K("incus_host", "INCUS_HOST", None, _p_opt_str,
      "Where incus runs: unset/'local', or ssh://user@host[:port].", _c_ssh_url),
    K("ssh_key_file", "SSH_KEY_FILE", None, _p_path, "Private key for INCUS_HOST (else agent/defaults)."),
    K("ssh_known_hosts", "SSH_KNOWN_HOSTS", None, _p_path, "Extra known_hosts file."),
    K("ssh_accept_new_host_key", "SSH_ACCEPT_NEW_HOST_KEY", False, _p_bool,
      "Accept and remember an unknown SSH host key (off: unknown keys are refused).", is_flag=True),
    K("ssh_connect_timeout", "SSH_CONNECT_TIMEOUT", 10.0, _p_float, "SSH connect timeout (s).",
      _c_range(0, 600, lo_open=True)),
    # Timing.
    K("drain_timeout", "DRAIN_TIMEOUT", 120.0, _p_float, "Deadline for a drain to reach 0 sessions (s).",
      _c_range(0, 86400, lo_open=True)),
    K("drain_timeout_action", "DRAIN_TIMEOUT_ACTION", "fail", _choice("fail", "shutdown-sessions"),
      "On drain timeout: fail (restore and stop) or shutdown-sessions (kill them and go on)."),
    K("node_health_timeout", "NODE_HEALTH_TIMEOUT", 60.0, _p_float, "Deadline for node health (s).",
      _c_range(0, 3600, lo_open=True)),
    K("up_timeout", "UP_TIMEOUT", 60.0, _p_float, "Deadline for HAProxy to report a node UP (s).",
      _c_range(0, 3600, lo_open=True)),
    K("poll_interval", "POLL_INTERVAL", 0.5, _p_float, "Poll interval of drain/health/UP waits (s).",
      _c_range(0, 60, lo_open=True)),
    # SLI.
    K("prom_url", "PROM_URL", "http://prom.lxd:9090", _p_str, "Prometheus base URL.", _c_url),
    K("sli_window", "SLI_WINDOW", 3600.0, _p_float, "SLI watch window (s).", _c_sli_window),
    K("sli_probe_interval", "SLI_PROBE_INTERVAL", 30.0, _p_float, "Seconds between SLI probes.",
      _c_probe_interval),
    K("prom_p95_threshold_s", "PROM_P95_THRESHOLD_S", 0.5, _p_float, "p95 latency threshold (s).",
      _c_range(0, 3600, lo_open=True)),
    K("prom_err_rate_threshold", "PROM_ERR_RATE_THRESHOLD", 0.005, _p_float, "5xx ratio threshold (0-1).",
      _c_range(0, 1, lo_open=True)),
    K("sli_rate_window", "SLI_RATE_WINDOW", "1m", _p_str, "PromQL rate() window.", _c_duration),
    K("sli_selector", "SLI_SELECTOR", 'node="{node}"', _p_str,
      "Label matchers scoping the SLI; {node} is the canary. Empty: whole fleet."),
    K("sli_min_requests", "SLI_MIN_REQUESTS", 5.0, _p_float,
      "Fewer requests than this in the rate window is no-data, not a pass.", _c_range(0, 1e9)),
    K("sli_max_nodata", "SLI_MAX_NODATA", 3, _p_int, "Consecutive no-data probes tolerated.",
      _c_range(0, 1000)),
    K("sli_max_errors", "SLI_MAX_ERRORS", 3, _p_int, "Consecutive Prometheus errors tolerated.",
      _c_range(0, 1000)),
    K("prom_ca_bundle", "PROM_CA_BUNDLE", None, _p_path, "CA bundle for an https PROM_URL."),
    K("prom_client_cert", "PROM_CLIENT_CERT", None, _p_path, "Client certificate (PEM) for Prometheus."),
    K("prom_client_key", "PROM_CLIENT_KEY", None, _p_path, "Client key (PEM) for Prometheus."),
    K("prom_token_file", "PROM_TOKEN_FILE", None, _p_path, "File holding a bearer token for Prometheus."),
    K("http_timeout", "HTTP_TIMEOUT", 5.0, _p_float, "Timeout of one HTTP request (s).",
      _c_range(0, 300, lo_open=True)),
    # Migrations.
    K("force_migrate", "FORCE_MIGRATE", False, _p_bool,
      "Bypass the migration backward-compat gate (logged loudly).", is_flag=True),
    K("migrations_dir", "MIGRATIONS_DIR", "migrations", _p_str, "golang-migrate directory."),
    K("migrations_since", "MIGRATIONS_SINCE", "origin/main", _p_str, "Lint migrations new since this ref."),
    K("migrations_dialect", "MIGRATIONS_DIALECT", "postgres", _choice("postgres", "mysql"), "SQL dialect."),
    # Safety overrides and bookkeeping.
    K("allow_short_window", "ALLOW_SHORT_SLI_WINDOW", False, _p_bool,
      "Allow SLI_WINDOW below 300 s (labs and tests only).", is_flag=True),
    K("allow_degraded", "ALLOW_DEGRADED", False, _p_bool,
      "Deploy even when a node is not UP before the start.", is_flag=True),
    K("allow_no_rollback", "ALLOW_NO_ROLLBACK", False, _p_bool,
      "Deploy without a verified rollback binary (auto-rollback impossible).", is_flag=True),
    K("lock_wait", "LOCK_WAIT", 0.0, _p_float, "Wait this long for the deploy lock (s).",
      _c_range(0, 86400)),
    K("lock_stale_after", "LOCK_STALE_AFTER", 7200.0, _p_float, "A lock older than this is stale (s).",
      _c_range(0, 30 * 86400, lo_open=True)),
    K("state_dir", "STATE_DIR", None, _p_path, "Local state dir (reports). Default: XDG state dir."),
)
del K

KNOBS_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
KNOBS_BY_ENV: dict[str, Knob] = {k.env: k for k in KNOBS}


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Every knob, resolved and validated. Build with ``load_settings``."""

    artifact: Path | None = None
    rollback_binary: Path | None = None
    canary_node: str = "backend-api-2"
    peer_nodes: tuple[str, ...] = ("backend-api-1",)
    pool_backend: str = "api_pool"
    install_dir: str = "/opt/veza/backend-api"
    service_name: str = "veza-backend-api"
    restart_command: tuple[str, ...] | None = None
    node_health_url: str = "http://127.0.0.1:8080"
    health_path: str = "/api/v1/health"
    lb_url: str = "http://haproxy.lxd"
    haproxy_container: str = "haproxy"
    haproxy_socket: str = "/run/haproxy/admin.sock"
    haproxy_local_socket: Path | None = None
    incus_host: str | None = None
    ssh_key_file: Path | None = None
    ssh_known_hosts: Path | None = None
    ssh_accept_new_host_key: bool = False
    ssh_connect_timeout: float = 10.0
    drain_timeout: float = 120.0
    drain_timeout_action: str = "fail"
    node_health_timeout: float = 60.0
    up_timeout: float = 60.0
    poll_interval: float = 0.5
    prom_url: str = "http://prom.lxd:9090"
    sli_window: float = 3600.0
    sli_probe_interval: float = 30.0
    prom_p95_threshold_s: float = 0.5
    prom_err_rate_threshold: float = 0.005
    sli_rate_window: str = "1m"
    sli_selector: str = 'node="{node}"'
    sli_min_requests: float = 5.0
    sli_max_nodata: int = 3
    sli_max_errors: int = 3
    prom_ca_bundle: Path | None = None
    prom_client_cert: Path | None = None
    prom_client_key: Path | None = None
    prom_token_file: Path | None = None
    http_timeout: float = 5.0
    force_migrate: bool = False
    migrations_dir: str = "migrations"
    migrations_since: str = "origin/main"
    migrations_dialect: str = "postgres"
    allow_short_window: bool = False
    allow_degraded: bool = False
    allow_no_rollback: bool = False
    lock_wait: float = 0.0
    lock_stale_after: float = 7200.0
    state_dir: Path | None = None
    #: Where each value came from: knob name -> "flag" | "env" | "config" | "default".
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    # -- derived ---------------------------------------------------------------
    @property
    def nodes(self) -> tuple[str, ...]:
        """Canary first, then peers, without repeats."""
        return (self.canary_node, *[p for p in self.peer_nodes if p != self.canary_node])

    @property
    def binary_path(self) -> str:
        return f"{self.install_dir}/veza-api"

    @property
    def previous_path(self) -> str:
        return f"{self.install_dir}/veza-api.previous"

    @property
    def restart_argv(self) -> tuple[str, ...]:
        return self.restart_command or ("systemctl", "restart", self.service_name)

    @property
    def node_health_full_url(self) -> str:
        return self.node_health_url.rstrip("/") + self.health_path

    @property
    def lb_health_url(self) -> str:
        return self.lb_url.rstrip("/") + self.health_path

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir:
            return self.state_dir
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "veza-canary"

    def public_dict(self) -> dict[str, Any]:
        """Settings for reports and logs: JSON-friendly, secrets redacted."""
        from veza_canary.log import redact_value

        out: dict[str, Any] = {}
        for knob in KNOBS:
            v = getattr(self, knob.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[knob.name] = "[REDACTED]" if knob.secret and v else redact_value(v)
        return out


def _coerce(knob: Knob, raw: Any, layer: str, layer_name: str) -> Any:
    try:
        return knob.parse(raw)
    except ValueError as exc:
        raise ConfigError(_where(knob, layer, layer_name), str(exc)) from None


def _where(knob: Knob, layer: str, layer_name: str) -> str:
    if layer == "flag":
        return knob.flag
    if layer == "env":
        return knob.env
    if layer == "config":
        return f"{knob.name} (in {layer_name})"
    return knob.env


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file; every problem is a ConfigError naming the file."""
    shown = str(path) if str(path).isprintable() else repr(str(path))  # a newline must not forge a 2nd line
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("--config", f"{shown}: no such file") from None
    except IsADirectoryError:
        raise ConfigError("--config", f"{shown}: is a directory") from None
    except OSError as exc:
        raise ConfigError("--config", f"{shown}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{shown}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{shown}: malformed TOML ({exc})") from None
    unknown = sorted(k for k in data if k not in KNOBS_BY_NAME and k not in _EXTRA_CONFIG_TABLES)
    if unknown:
        keys = ", ".join(k if k.isprintable() else repr(k) for k in unknown)
        raise ConfigError("--config", f"{shown}: unknown key(s): {keys}")
    return data


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


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every knob: flag > env > config file > default; validate all of them.

    ``flags`` maps knob names to raw values (None means "not given"). ``env``
    defaults to ``os.environ``. An empty env var counts as unset, as in shell
    scripts where ``FOO=`` means "no value".
    """
    flags = flags or {}
    env = os.environ if env is None else env
    unknown_flags = set(flags) - set(KNOBS_BY_NAME)
    if unknown_flags:
        raise ValueError(f"unknown knob(s): {sorted(unknown_flags)}")  # programming error
    if config is None:
        path = find_config(config_path, env)
        config = read_config_file(path) if path else {}
        config_name = (str(path) if str(path).isprintable() else repr(str(path))) if path else ""
    else:
        config_name = "config"

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for knob in KNOBS:
        if flags.get(knob.name) is not None:
            values[knob.name] = _coerce(knob, flags[knob.name], "flag", "")
            sources[knob.name] = "flag"
        elif env.get(knob.env, "") != "":
            values[knob.name] = _coerce(knob, env[knob.env], "env", "")
            sources[knob.name] = "env"
        elif knob.name in config:
            values[knob.name] = _coerce(knob, config[knob.name], "config", config_name)
            sources[knob.name] = "config"
        else:
            values[knob.name] = knob.default
            sources[knob.name] = "default"

    for knob in KNOBS:
        if knob.check is None or values[knob.name] is None:
            continue
        problem = knob.check(values[knob.name], values)
        if problem:
            raise ConfigError(_where(knob, sources[knob.name], config_name), problem)

    if values["canary_node"] in values["peer_nodes"]:
        raise ConfigError("PEER_NODES", f"lists the canary node {values['canary_node']!r}")
    if values["prom_url"] and values["prom_url"].startswith("http://") and (
        values["prom_client_cert"] or values["prom_ca_bundle"]
    ):
        raise ConfigError("PROM_URL", "TLS knobs are set but PROM_URL is plain http://")
    return Settings(**values, sources=sources)


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings from defaults plus overrides, without reading the environment or a config file."""
    return dataclasses.replace(Settings(), **overrides)
