"""The lint run: read, analyse (cached), replay the history, judge the new files.

::

    read files --> analyse each (content-hash cache; parsed in this process)
               --> replay history (every non-new .up.sql, in version order) into a Schema
               --> for each new file, in version order:
                       each change: rules judge it against the schema, then it is applied
                       end of file: drop findings cancelled by a re-creation in the same file
                       suppressions, severities
               --> LintResult

Only reading files touches the disk (and the cache); judgement is pure.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from veza_canary.errors import ConfigError, LintInputError
from veza_canary.log import get_logger
from veza_canary.migrations.cache import Cache, cache_key
from veza_canary.migrations.changes import ANALYZER_VERSION, AnalyzedFile, Change
from veza_canary.migrations.rules import (
    SEVERITIES,
    Finding,
    Hit,
    Rule,
    RuleContext,
    load_rules,
    resolve,
    rules_for,
)
from veza_canary.migrations.schema import NewObjects, Schema

log = get_logger(__name__)



@dataclass(frozen=True, slots=True)
class LintOptions:
    dialect: str = "postgres"
    severities: Mapping[str, str] = field(default_factory=dict)  # rule code or name -> block|warn|off
    force: bool = False
    cache: bool = True
    cache_dir: Path | None = None


@dataclass(slots=True)
class LintResult:
    """What a lint run found. ``blocking`` keeps blocking findings even when bypassed."""

    files: list[str]
    findings: list[Finding]
    bypassed: bool = False
    history: int = 0
    notes: list[str] = field(default_factory=list)
    dialect: str = "postgres"

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warn" and f.suppressed is None]

    @property
    def suppressed(self) -> list[Finding]:
        return [f for f in self.findings if f.suppressed is not None]

    @property
    def ok(self) -> bool:
        return not self.blocking or self.bypassed

    def summary(self) -> str:
        n = len(self.files)
        b, w, s = len(self.blocking), len(self.warnings), len(self.suppressed)
        head = f"migration lint: {n} file{'s' if n != 1 else ''}, {b} blocking, {w} warning{'s' if w != 1 else ''}"
        if s:
            head += f", {s} suppressed"
        if b and self.bypassed:
            head += " -- BYPASSED by FORCE_MIGRATE"
        elif b:
            head += " -- would break the old binary"
        elif not n:
            head += " (nothing new to lint)"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bypassed": self.bypassed,
            "dialect": self.dialect,
            "files": list(self.files),
            "history_files": self.history,
            "summary": self.summary(),
            "counts": {"blocking": len(self.blocking), "warnings": len(self.warnings),
                       "suppressed": len(self.suppressed)},
            "findings": [f.to_dict() for f in self.findings],
            "suppressions": [{"code": f.code, "path": f.path, "line": f.line, "reason": f.suppressed}
                             for f in self.suppressed],
            "notes": list(self.notes),
        }


# --- reading ---------------------------------------------------------------------


def version_key(path: Path) -> tuple[int, int, str]:
    """golang-migrate order: the numeric version prefix, then the name."""
    name = path.name
    m = _VERSION_RE.match(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


_VERSION_RE = re.compile(r"(\d+)")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(path: Path, within: Path | None = None) -> None:
    """Refuse a migration "file" that is not a regular file, or a link that dangles or leads out of ``within``.

    Such an entry is never skipped: a gate that skips what it cannot read lets it through.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise LintInputError(f"{path}: no such file") from None
    except OSError as exc:
        raise LintInputError(f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            raise LintInputError(f"{path}: is a dangling symbolic link; refusing it") from None
        if within is not None:
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(os.path.realpath(within)):
                raise LintInputError(f"{path}: is a symbolic link leading outside {within} (to {target}); "
                                     "refusing it")
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode) and within is None:
            raise LintInputError(f"{path}: is a directory")
        raise LintInputError(f"{path}: is {_kind(st.st_mode)}, not a regular file; refusing it")


def read_sql(path: Path, *, checked: bool = False) -> bytes:
    """The bytes of a migration file, refused unless it is readable UTF-8 text in a regular file."""
    if not checked:
        check_regular(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LintInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LintInputError(f"{path}: is a directory") from None
    except OSError as exc:
        raise LintInputError(f"{path}: cannot read ({exc.strerror})") from None
    if b"\0" in data[:8192]:
        raise LintInputError(f"{path}: is a binary file, not SQL")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LintInputError(f"{path}:{line}: is not UTF-8 text") from None
    return data


def up_files(directory: Path) -> list[Path]:
    """Every ``*.up.sql`` of ``directory`` in version order; an entry that is not a regular file is refused."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        raise LintInputError(f"{directory}: migrations directory does not exist") from None
    except NotADirectoryError:
        raise LintInputError(f"{directory}: is not a directory") from None
    except OSError as exc:
        raise LintInputError(f"{directory}: cannot read the migrations directory ({exc.strerror})") from None
    out = []
    for e in entries:
        name = e.name
        if not name.endswith(".up.sql"):
            continue
        if not e.is_file(follow_symlinks=False):  # (d_type: no system call for the regular files)
            check_regular(Path(e.path), directory)
        m = _VERSION_RE.match(name)
        out.append(((0, int(m.group(1)), name) if m else (1, 0, name), e.path))
    out.sort()
    return [Path(p) for _k, p in out]


# --- analysis (cached) --------------------------------------------------------------------


def content_keys(datas: Sequence[bytes], dialect: str) -> list[str]:
    from veza_canary.migrations.cache import sqlglot_version

    version = sqlglot_version()
    return [cache_key(d, dialect, ANALYZER_VERSION, version) for d in datas]


def analyze_all(datas: Sequence[bytes], opts: LintOptions, keys: Sequence[str] | None = None,
                cache: Cache | None = None) -> list[AnalyzedFile]:
    """Every file analysed, in order (see ``iter_analysed``)."""
    with closing(iter_analysed(datas, opts, keys, cache)) as it:
        return list(it)


def iter_analysed(datas: Sequence[bytes], opts: LintOptions, keys: Sequence[str] | None = None,
                  cache: Cache | None = None) -> Iterator[AnalyzedFile]:
    """Analysed files in input order; each distinct content analysed once, from the cache when it can.

    A generator, so the caller replays and judges each file as it comes; the cache is
    written once the iterator is exhausted.
    """
    cache = cache or Cache(opts.cache_dir, enabled=opts.cache)
    keys = list(keys) if keys is not None else content_keys(datas, opts.dialect)
    cached: list[AnalyzedFile | None] = cache.get_many(keys)
    done: dict[str, AnalyzedFile] = {}  # content key -> analysis parsed in this run
    analyze_text = None
    for i, k in enumerate(keys):
        af = cached[i] or done.get(k)
        if af is None:
            if analyze_text is None:  # sqlglot is imported only when something must be parsed
                from veza_canary.migrations.analyze import analyze_text
            af = done[k] = analyze_text(datas[i].decode("utf-8"), opts.dialect)
        yield af
    if cache.enabled and done:
        cache.put_many(done.items())
    log.debug("lint.analysed", files=len(datas), cache_hits=cache.hits, parsed=len(done))


# --- judgement ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Input:
    """A file of the run; its bytes are read when first needed (a warm run never reads its history)."""

    path: Path
    shown: str
    checked: bool = False
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = read_sql(self.path, checked=self.checked)
        return self._data


def _stat_key(path: Path) -> str | None:
    """A cache key for a file's identity and state (path, device, inode, size, mtime, ctime), or None.

    Like git's index: a file whose stat data are unchanged has its content key from the
    last run that read it. Any write changes the ctime, which user space cannot set back.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    ident = f"{os.path.abspath(path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    return "stat-" + hashlib.sha256(ident.encode()).hexdigest()


def _keys(inputs: Sequence[_Input], n_hist: int, dialect: str, cache: Cache) -> list[str]:
    """Content keys of every input; a history file whose stat data the cache knows is not read."""
    keys: list[str | None] = [None] * len(inputs)
    stat_keys: list[str | None] = [None] * n_hist
    if cache.enabled and n_hist:
        stat_keys = [_stat_key(i.path) for i in inputs[:n_hist]]
        known = cache.get_many([k or "" for k in stat_keys], str)
        for j, k in enumerate(known):
            if stat_keys[j] is not None and isinstance(k, str):
                keys[j] = k
    missing = [j for j, k in enumerate(keys) if k is None]
    for j, k in zip(missing, content_keys([inputs[j].data for j in missing], dialect), strict=True):
        keys[j] = k
    fresh = [(stat_keys[j], keys[j]) for j in missing if j < n_hist and stat_keys[j] is not None]
    if fresh:
        cache.put_many(fresh)  # type: ignore[arg-type]
    return keys  # type: ignore[return-value]


def run(new_files: Sequence[Path], history_files: Sequence[Path], opts: LintOptions, *,
        each_own_set: bool = False, modified: Iterable[Path] = (), root: Path | None = None,
        listed: Iterable[Path] = ()) -> LintResult:
    """Lint ``new_files`` against the schema built from ``history_files``.

    ``each_own_set``: every new file is judged against all files before it (``--all``),
    instead of the new files forming one set whose creations are exempt. ``listed``:
    paths ``up_files`` returned, already known to be regular files; any other is checked.
    """
    load_rules()
    severities = _severity_map(opts.severities)
    new_sorted = sorted(dict.fromkeys(new_files), key=version_key)
    new_set = {os.path.abspath(p) for p in new_sorted}
    hist_sorted = sorted((p for p in dict.fromkeys(history_files) if os.path.abspath(p) not in new_set),
                         key=version_key)
    bases = [os.path.abspath(b) for b in (root, Path.cwd()) if b is not None]
    paths = [*hist_sorted, *new_sorted]
    n_hist = len(hist_sorted)
    known = set(listed)
    cache = Cache(opts.cache_dir, enabled=opts.cache)
    try:
        inputs = [_Input(p, _shown(p, bases), p in known) for p in paths]
        for inp in inputs[n_hist:]:
            inp.data  # noqa: B018 - the new files are always read (and refused if unreadable) first
        keys = _keys(inputs, n_hist, opts.dialect, cache)
        hist_key = "schema-" + hashlib.sha256("\0".join([opts.dialect, *keys[:n_hist]]).encode()).hexdigest()
        replayed = cache.get(hist_key, tuple) if n_hist else None
        if replayed is not None and isinstance(replayed[0], Schema):
            analysed = iter_analysed([i.data for i in inputs[n_hist:]], opts, keys[n_hist:], cache)
        else:
            replayed = None
            analysed = iter_analysed([i.data for i in inputs], opts, keys, cache)
        with closing(analysed):
            if replayed is not None:
                schema, notes = replayed[0], list(replayed[1])
            else:
                schema, notes = _replay(inputs[:n_hist], islice(analysed, n_hist), opts.dialect)
                if n_hist:
                    cache.put(hist_key, (schema, notes))
            findings = _judge_new(inputs[n_hist:], analysed, schema, opts, each_own_set, severities)
            for _rest in analysed:  # exhausts the iterator, which writes the cache
                pass
    finally:
        cache.close()
    mod_resolved = {Path(os.path.abspath(p)) for p in modified}
    for p in sorted(mod_resolved, key=version_key):
        f = _engine_finding("VC209", _shown(p, bases), 1, 1, "an already-merged migration was edited: databases "
                            "that ran it will not see the change", severities)
        if f is not None:
            findings.append(f)
    bypassed = bool(opts.force and any(f.blocking for f in findings))
    result = LintResult([i.shown for i in inputs[n_hist:]], findings, bypassed, n_hist, notes, opts.dialect)
    if bypassed:
        log.warning("lint.bypassed", force_migrate=True, blocking=len(result.blocking),
                    codes=sorted({f.code for f in result.blocking}),
                    message="FORCE_MIGRATE=1: blocking migration findings IGNORED")
    return result


def _judge_new(inputs: Sequence[_Input], analysed: Iterator[AnalyzedFile], schema: Schema, opts: LintOptions,
               each_own_set: bool, severities: Mapping[str, str]) -> list[Finding]:
    """Judge each new file against the schema, applying it afterwards."""
    rules = _dispatch(opts.dialect)
    ctx = RuleContext(schema, opts.dialect)
    findings: list[Finding] = []
    schema.new = NewObjects()
    for inp, af in zip(inputs, analysed, strict=False):  # a shared iterator: pull no extra item
        if af.error is not None:
            line, _col, reason = af.error
            raise LintInputError(f"{inp.shown}:{line}: cannot parse SQL: {reason}")
        if each_own_set:
            schema.new = NewObjects()
        findings.extend(_judge_file(inp.shown, af, schema, ctx, rules, severities))
    return findings


def _replay(inputs: Sequence[_Input], analysed: Iterable[AnalyzedFile], dialect: str) -> tuple[Schema, list[str]]:
    """The schema model after every history file, in order; unparseable history files become notes."""
    schema = Schema(dialect)
    notes: list[str] = []
    for inp, af in zip(inputs, analysed, strict=False):  # a shared iterator: pull no extra item
        if af.error is not None:
            line, _col, reason = af.error
            notes.append(f"{inp.shown}:{line}: history file not understood ({reason}); the schema model "
                         "may be incomplete (judgements on what it touched fail closed)")
            continue
        for st in af.statements:
            for ch in expanded(st.changes, schema, dialect):
                schema.apply(ch)
    return schema, notes


def expanded(changes: Iterable[Change], schema: Schema, dialect: str, depth: int = 0) -> Iterator[Change]:
    """``changes`` with each call of a PL/pgSQL helper the history defines replaced by what its body does.

    ``SELECT create_index('t', 'ix', 'a')`` is judged as the statement the helper's
    ``EXECUTE`` builds from those arguments (``analyze.expand_call``); a call that cannot
    be expanded stays a call, which fails closed (VC001).
    """
    for ch in changes:
        fn = ch.function
        info = schema.function_info.get(fn) if ch.kind == "call_function" and fn is not None else None
        body = schema.functions.get(fn) if info is not None and fn is not None else None
        if info is None or body is None or not ch.extra.get("literal_args") or depth > 4 \
                or info.get("language") != "plpgsql":
            yield ch
            continue
        from veza_canary.migrations.analyze import expand_call

        subs = expand_call(body, tuple(info.get("params", ())), ch.values, dialect)
        if subs is None:
            yield ch
            continue
        for sub in subs:
            sub.line, sub.col = ch.line, ch.col
        yield from expanded(subs, schema, dialect, depth + 1)


def _shown(p: Path, bases: list[str]) -> str:
    """A path relative to the repo root (or the cwd) when it is under it."""
    ap = os.path.abspath(p)
    for base in bases:
        if ap.startswith(base.rstrip(os.sep) + os.sep):
            return ap[len(base.rstrip(os.sep)) + 1:]
    return str(p)


def _dispatch(dialect: str) -> dict[str, list[Rule]]:
    out: dict[str, list[Rule]] = {}
    for cls in rules_for(dialect):
        r = cls()
        for k in cls.kinds:
            out.setdefault(k, []).append(r)
    return out


def _severity_map(cfg: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, sev in cfg.items():
        code = resolve(str(key))
        if code is None:
            raise ConfigError("lint.severity", f"unknown rule {key!r}", hint="see veza-canary lint-migrations --list")
        s = str(sev).lower()
        if s not in SEVERITIES:
            raise ConfigError(f"lint.severity.{key}", f"must be one of {', '.join(SEVERITIES)}, not {sev!r}")
        if code in ("VC001", "VC002") and s != "block":
            raise ConfigError(f"lint.severity.{key}", f"{code} cannot be relaxed: the linter fails closed")
        out[code] = s
    return out


def _engine_finding(code: str, path: str, line: int, col: int, message: str, severities: Mapping[str, str],
                    snippet: str = "") -> Finding | None:
    rule = load_rules()[code]
    sev = severities.get(code, rule.severity)
    if sev == "off":
        return None
    return Finding(code, rule.name, sev, path, line, col, message, rule.why(), rule.fix(), snippet)


def _judge_file(path: str, af: AnalyzedFile, schema: Schema, ctx: RuleContext, rules: dict[str, list[Rule]],
                severities: Mapping[str, str]) -> list[Finding]:
    schema.begin_file()
    raw: list[tuple[Finding, Any]] = []  # (finding, statement directives)
    for st in af.statements:
        for ch in expanded(st.changes, schema, ctx.dialect):
            for rule in rules.get(ch.kind, ()):
                for hit in rule.check(ch, ctx):
                    h = hit if isinstance(hit, Hit) else Hit(hit)
                    sev = severities.get(rule.code, rule.severity)
                    if sev == "off":
                        continue
                    f = Finding(rule.code, rule.name, sev, path, ch.line or st.line, ch.col or st.col,
                                h.message, rule.why(), rule.fix(), st.snippet, cancel_if=h.cancel_if)
                    raw.append((f, st.directives))
            schema.apply(ch)
    out: list[Finding] = []
    for f, _dirs in raw:
        if f.cancel_if is not None and f.cancel_if(schema):
            continue
        f.cancel_if = None  # judged; keep results plain data (picklable)
        out.append(f)
    # Suppressions.
    file_allow: dict[str, str] = {}
    for d in af.file_directives:
        codes, bad = _directive_codes(d)
        out.extend(_bad_directive(path, d, bad, severities))
        if d.valid and not bad:
            for c in codes:
                file_allow[c] = d.reason
    for d in af.bad_directives:
        out.extend(_bad_directive(path, d, [], severities, unattached=bool(d.rules)))
    seen_dirs: set[int] = set()
    kept = {id(f) for f in out}
    for f, dirs in raw:
        if id(f) not in kept:
            continue
        for d in dirs:
            codes, bad = _directive_codes(d)
            if id(d) not in seen_dirs:
                seen_dirs.add(id(d))
                out.extend(_bad_directive(path, d, bad, severities))
            if d.valid and not bad and f.code in codes and f.code not in ("VC002",):
                f.suppressed = d.reason
        if f.suppressed is None and f.code in file_allow and f.code != "VC002":
            f.suppressed = file_allow[f.code]
    # Directives on statements without findings still need checking.
    for st in af.statements:
        for d in st.directives:
            if id(d) not in seen_dirs:
                seen_dirs.add(id(d))
                _codes, bad = _directive_codes(d)
                out.extend(_bad_directive(path, d, bad, severities))
    out.sort(key=lambda f: (f.line, f.col, f.code))
    return out


def _directive_codes(d: Any) -> tuple[list[str], list[str]]:
    codes, bad = [], []
    for r in d.rules:
        c = resolve(r)
        (codes.append(c) if c else bad.append(r))
    return codes, bad


def _bad_directive(path: str, d: Any, unknown: list[str], severities: Mapping[str, str], *,
                   unattached: bool = False) -> list[Finding]:
    problems = []
    if not d.rules:
        problems.append("names no rule")
    if unknown:
        problems.append(f"names unknown rule(s) {', '.join(unknown)}")
    if d.rules and not d.reason.strip():
        problems.append("has no reason ('because ...' or a quoted reason is required)")
    if unattached and not problems:
        problems.append("is not attached to any statement")
    if not problems:
        return []
    f = _engine_finding("VC002", path, d.line, d.col, f"suppression comment {' and '.join(problems)}: "
                        "it suppresses nothing", severities, d.text[:120])
    return [f] if f else []
