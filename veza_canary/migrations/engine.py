"""The lint run: read, analyse (cached, in parallel), replay the history, judge the new files.

::

    read files --> analyse each (content-hash cache; process pool when many)
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
import pickle  # noqa: S403 - between our own processes and our own cache
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from veza_canary.errors import ConfigError, LintInputError
from veza_canary.log import get_logger
from veza_canary.migrations.cache import Cache, cache_key
from veza_canary.migrations.changes import ANALYZER_VERSION, AnalyzedFile
from veza_canary.migrations.forked import (
    PARALLEL_THRESHOLD,
    Pool,
    default_jobs,
    gc_tuned,
    keep,
    parsed,
    read_path,
    take_prefork,
)
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
    jobs: int | None = None


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
            "notes": list(self.notes),
        }


# --- reading ---------------------------------------------------------------------


def version_key(path: Path) -> tuple[int, int, str]:
    """golang-migrate order: the numeric version prefix, then the name."""
    m = re.match(r"^(\d+)", path.name)
    return (0, int(m.group(1)), path.name) if m else (1, 0, path.name)


def read_sql(path: Path) -> bytes:
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
    if not directory.is_dir():
        raise LintInputError(f"{directory}: migrations directory does not exist")
    return sorted((p for p in directory.iterdir() if p.name.endswith(".up.sql") and p.is_file()), key=version_key)


# --- analysis (cached, parallel) ------------------------------------------------------


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
                  cache: Cache | None = None, pool: Pool | None = None) -> Iterator[AnalyzedFile]:
    """Analysed files in input order; each distinct content analysed once, from the cache when it can.

    With many files to parse and several CPUs, ``jobs - 1`` forked workers
    (``forked.Pool``) and this process share the parsing, chunk by chunk, while this
    process also hands each result to the caller, who replays and judges files as
    they arrive. ``pool`` may be given already started on every file of ``datas``
    (its position ``i`` is ``datas[i]``, duplicates included): ``run`` starts one
    before the files are even read. Either way it is closed when the iterator ends;
    the cache is written when the iterator is exhausted.
    """
    cache = cache or Cache(opts.cache_dir, enabled=opts.cache)
    keys = list(keys) if keys is not None else content_keys(datas, opts.dialect)
    cached: list[AnalyzedFile | None] = cache.get_many(keys)
    owner: dict[str, int] = {}  # content key -> index of its first file to parse
    todo: list[int] = []
    for i, k in enumerate(keys):
        if cached[i] is None and k not in owner:
            owner[k] = i
            todo.append(i)
    jobs = opts.jobs if opts.jobs is not None else default_jobs()
    positions = list(range(len(datas)))  # a given pool's: every file
    if pool is None and len(todo) >= PARALLEL_THRESHOLD and jobs >= 2:
        pool = fork_pool(jobs, datas.__getitem__)
        if pool is not None:
            pool.start(todo, opts.dialect)
            positions = todo
    parsing = _Parsing(datas, keys, positions, opts.dialect, pool, pickled=cache.enabled)
    try:
        for i, k in enumerate(keys):
            af = cached[i]
            if af is None:
                af = parsing.get(owner[k])
            yield af
    finally:
        if pool is not None:
            pool.close()
            for failure in pool.failures:
                log.warning("lint.worker_failed", error=failure, outcome="its files were parsed here")
    if cache.enabled and parsing.done:
        cache.put_many((keys[j], parsing.blobs.get(j) or parsing.done[j]) for j in todo if j in parsing.done)
    log.debug("lint.analysed", files=len(datas), cache_hits=cache.hits, parsed=len(todo),
              in_workers=parsing.from_workers, jobs=jobs)
    keep(parsing)


class _Parsing:
    """The files to parse, shared with a pool's workers (if any); results by index into ``datas``."""

    def __init__(self, datas: Sequence[bytes], keys: Sequence[str], positions: list[int], dialect: str,
                 pool: Pool | None, *, pickled: bool = False) -> None:
        self.datas, self.keys, self.dialect, self.pool = datas, keys, dialect, pool
        self.positions = positions  # the pool's position p is datas[positions[p]]
        self.pickled = pickled and pool is not None
        self.done: dict[int, AnalyzedFile] = {}
        self.blobs: dict[int, bytes] = {}  # pickles for the cache: the workers', and ours if ``pickled``
        self.from_workers = 0
        self.received: dict[int, tuple[str, bytes]] = {}
        self._analyze: Callable[[str, str], AnalyzedFile] | None = None

    def get(self, j: int) -> AnalyzedFile:
        """File ``j``'s analysis: already here, from a worker, or parsed here (claiming more work meanwhile)."""
        done, pool = self.done, self.pool
        while j not in done:
            got = self.received.pop(j, None)
            if got is not None:
                wkey, blob = got
                if wkey == self.keys[j] and blob:  # else: changed on disk since, or failed there
                    self.blobs[j] = blob
                    self.from_workers += 1
                    done[j] = pickle.loads(blob)  # noqa: S301 - from our own worker process
                else:
                    done[j] = self._local(j)
                break
            if pool is None:
                done[j] = self._local(j)
                break
            if pool.alive:
                self._take(pool.poll(0))
                if j in self.received:
                    continue
            claimed = pool.claim()
            if claimed is not None:  # parse a chunk here while the worker that has file j finishes it
                for pos in claimed:
                    x = self.positions[pos]
                    done[x] = af = self._local(x)
                    if self.pickled:  # now, while a worker still runs, rather than at the end
                        self.blobs[x] = pickle.dumps(af, protocol=pickle.HIGHEST_PROTOCOL)
            elif pool.alive:
                self._take(pool.poll(None))
            else:  # nobody else will send it: a worker died with it, or failed on it
                done[j] = self._local(j)
        return done[j]

    def _take(self, results: list[tuple[int, str, bytes]]) -> None:
        for pos, wkey, blob in results:
            x = self.positions[pos]
            if x not in self.done:
                self.received[x] = (wkey, blob)

    def _local(self, j: int) -> AnalyzedFile:
        if self._analyze is None:
            from veza_canary.migrations.analyze import analyze_text

            self._analyze = analyze_text
        parsed()
        return self._analyze(self.datas[j].decode("utf-8"), self.dialect)


def fork_pool(jobs: int, load: Callable[[Any], bytes] = read_path) -> Pool | None:
    """``jobs - 1`` forked workers to share with this process the analysis of what ``load`` reads (None if jobs < 2)."""
    if jobs < 2 or not hasattr(os, "fork"):
        return None
    try:
        return Pool(jobs - 1, load)
    except OSError as exc:  # cannot fork now (EAGAIN, EMFILE): parse everything here
        log.warning("lint.no_workers", error=str(exc), outcome="parsing in this process only")
        return None


# --- judgement ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Input:
    path: Path
    shown: str
    data: bytes


def run(new_files: Sequence[Path], history_files: Sequence[Path], opts: LintOptions, *,
        each_own_set: bool = False, modified: Iterable[Path] = (), root: Path | None = None) -> LintResult:
    """Lint ``new_files`` against the schema built from ``history_files``.

    ``each_own_set``: every new file is judged against all files before it (``--all``),
    instead of the new files forming one set whose creations are exempt.
    """
    with gc_tuned():
        return _run(new_files, history_files, opts, each_own_set=each_own_set, modified=modified, root=root)


def _run(new_files: Sequence[Path], history_files: Sequence[Path], opts: LintOptions, *,
         each_own_set: bool, modified: Iterable[Path], root: Path | None) -> LintResult:
    load_rules()
    severities = _severity_map(opts.severities)
    new_sorted = sorted(dict.fromkeys(new_files), key=version_key)
    new_set = {os.path.abspath(p) for p in new_sorted}
    hist_sorted = sorted((p for p in dict.fromkeys(history_files) if os.path.abspath(p) not in new_set),
                         key=version_key)
    bases = [os.path.abspath(b) for b in (root, Path.cwd()) if b is not None]
    paths = [*hist_sorted, *new_sorted]
    n_hist = len(hist_sorted)
    cache = Cache(opts.cache_dir, enabled=opts.cache)
    pool = _early_pool(paths, opts, cache)
    if pool is not None:  # a cold run parses everything: the workers need not wait for the reading
        pool.start([os.fspath(p) for p in paths], opts.dialect)
    try:
        inputs = [_Input(p, _shown(p, bases), read_sql(p)) for p in paths]
        keys = content_keys([i.data for i in inputs], opts.dialect)
        hist_key = "schema-" + hashlib.sha256("\0".join([opts.dialect, *keys[:n_hist]]).encode()).hexdigest()
        replayed = cache.get(hist_key, tuple) if n_hist else None
        if replayed is not None and isinstance(replayed[0], Schema) and pool is None:
            analysed = iter_analysed([i.data for i in inputs[n_hist:]], opts, keys[n_hist:], cache)
        else:  # (a started pool has every file: its history is parsed, not read from the cache)
            replayed = None
            analysed = iter_analysed([i.data for i in inputs], opts, keys, cache, pool)
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
            keep((inputs, schema))
    finally:
        if pool is not None:
            pool.close()
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


def _early_pool(paths: Sequence[Path], opts: LintOptions, cache: Cache) -> Pool | None:
    """Workers forked before the files are read, when the run will likely parse many of them.

    Likely: no cache, or no cache file yet (a fresh CI runner). With a cache in place
    most files are usually hits, and ``iter_analysed`` forks later if enough are not.
    The command line may have forked them already, before parsing its options
    (``forked.prefork``); they are taken, or closed when this run does not want them.
    """
    pool = take_prefork()
    jobs = opts.jobs if opts.jobs is not None else default_jobs()
    if jobs < 2 or len(paths) < PARALLEL_THRESHOLD or (opts.cache and cache.path.exists()):
        if pool is not None:
            pool.close()
        return None
    return pool or fork_pool(jobs)


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
            for ch in st.changes:
                schema.apply(ch)
    return schema, notes


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
        for ch in st.changes:
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
        problems.append("has no reason ('because ...' is required)")
    if unattached and not problems:
        problems.append("is not attached to any statement")
    if not problems:
        return []
    f = _engine_finding("VC002", path, d.line, d.col, f"suppression comment {' and '.join(problems)}: "
                        "it suppresses nothing", severities, d.text[:120])
    return [f] if f else []
