"""From SQL text to ``Change`` records (schema-independent, cacheable).

Routing of one statement, cheapest first:

1. transaction wrappers, ``SET``, maintenance commands: no change;
2. DML (``INSERT``/``UPDATE``/``DELETE``/``COPY``/...): not parsed at all -- data
   cannot break the old binary's view of the schema, and seed files are mostly DML;
   ``SELECT``/``CALL`` of a function that is not a known built-in is reported, since
   a function can run any DDL;
3. ``DO`` blocks: the PL/pgSQL body is split and each statement analysed; dynamic
   ``EXECUTE`` of anything but a constant string is unverifiable;
4. a few shapes sqlglot models poorly go to ``recognize`` first (triggers, policies);
5. everything else is parsed by sqlglot; each node type and each ALTER action is
   handled explicitly, and anything not handled -- including sqlglot's opaque
   ``Command`` and actions with missing parts such as ``DROP COLUMN`` without a
   name -- becomes an ``unverifiable`` change (fail closed).

SQL that sqlglot cannot parse and no recognizer matches raises ``StatementError``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from veza_canary.migrations.changes import (
    AnalyzedFile,
    AnalyzedStatement,
    Change,
    ColumnSpec,
    ConstraintSpec,
    QName,
    TypeInfo,
)
from veza_canary.migrations.parse import (
    LexError,
    lex,
    lex_file,
    line_starts_of,
    normalize_text,
    position,
    position_in,
    split_top_level,
    tokens,
    word_spans,
)
from veza_canary.migrations.recognize import recognize
from veza_canary.migrations.shapes import Shapes
from veza_canary.migrations.tablebody import BodyParser, Head, Item

# sqlglot warns on every statement it turns into a Command; we report those ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

from veza_canary.migrations.changes import ANALYZER_VERSION  # noqa: E402,F401 - re-exported

_NOOP_FIRST = frozenset({
    "BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "SET", "RESET", "VACUUM",
    "ANALYZE", "ANALYSE", "REINDEX", "CLUSTER", "REFRESH", "CHECKPOINT", "LOCK", "UNLOCK", "NOTIFY",
    "LISTEN", "UNLISTEN", "DISCARD", "LOAD", "DEALLOCATE", "SHOW", "EXPLAIN", "COMMENT", "SECURITY",
    "GRANT", "OPTIMIZE", "FLUSH", "CHECKSUM",
})
_DATA_FIRST = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "VALUES", "TABLE", "WITH",
                         "TRUNCATE", "REPLACE", "UPSERT"})
_DYNAMIC_FIRST = frozenset({"EXECUTE", "PREPARE", "DELIMITER", "USE", "HANDLER", "SOURCE", "IMPORT"})
#: Objects whose creation cannot affect the old binary.
_CREATE_OTHER = frozenset({"EXTENSION", "COLLATION", "CAST", "OPERATOR", "TEXT", "STATISTICS", "ROLE", "USER",
                           "GROUP", "CONVERSION", "PUBLICATION", "SUBSCRIPTION", "SERVER", "FOREIGN",
                           "TABLESPACE", "ACCESS", "LANGUAGE", "TRANSFORM", "DATABASE", "EVENT"})

#: Functions a migration may call at top level without it being unverifiable.
SAFE_FUNCTIONS = frozenset({
    "set_config", "pg_catalog.set_config", "nextval", "setval", "currval", "pg_advisory_lock",
    "pg_advisory_xact_lock", "pg_advisory_unlock", "pg_try_advisory_lock", "pg_try_advisory_xact_lock",
    "count", "max", "min", "sum", "avg", "now", "current_setting", "coalesce", "lower", "upper", "length",
    "format", "concat", "exists", "pg_sleep", "version", "current_database", "current_schema", "to_regclass",
    "cast", "greatest", "least", "nullif", "abs", "round", "array_agg", "string_agg", "jsonb_build_object",
    "json_build_object", "gen_random_uuid", "uuid_generate_v4", "md5", "random", "trim", "substring",
    "replace", "date_trunc", "extract", "interval", "pg_get_serial_sequence", "row_number", "in", "any",
    "generate_series", "to_char", "to_timestamp", "char_length", "bool_or", "bool_and", "if", "ifnull",
    "last_insert_id", "database", "schema", "unnest", "array", "values", "not", "and", "or", "over",
    "filter", "within", "partition", "left", "right", "split_part", "regexp_replace", "position",
})

_VOLATILE_RE = re.compile(
    r"\b(RANDOM|RAND|GEN_RANDOM_UUID|UUID_GENERATE_V[1-7]|UUID|UUIDV7|CLOCK_TIMESTAMP|NEXTVAL|TIMEOFDAY|"
    r"STATEMENT_TIMESTAMP|TXID_CURRENT|GEN_RANDOM_BYTES)\s*\(",
    re.IGNORECASE,
)
_FUNC_CALL_RE = re.compile(r"((?:[A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*)\s*\(")

_SERIAL = {"SERIAL": "INT", "BIGSERIAL": "BIGINT", "SMALLSERIAL": "SMALLINT"}
_USER_SERIAL = {"serial4": "INT", "serial8": "BIGINT", "serial2": "SMALLINT"}


class StatementError(Exception):
    """A statement sqlglot cannot parse (and no recognizer knows)."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


_DIALECTS: dict[str, Any] = {}
_BODIES: dict[str, BodyParser] = {}
_SHAPES: dict[str, Shapes] = {}


def _dialect(name: str) -> Any:
    d = _DIALECTS.get(name)
    if d is None:
        d = _DIALECTS[name] = sqlglot.Dialect.get_or_raise(name)
    return d


def _bodies(ctx: Ctx) -> BodyParser:
    b = _BODIES.get(ctx.dialect)
    if b is None:
        b = _BODIES[ctx.dialect] = BodyParser(ctx.glot)
    return b


def _shapes(ctx: Ctx) -> Shapes:
    sh = _SHAPES.get(ctx.dialect)
    if sh is None:
        sh = _SHAPES[ctx.dialect] = Shapes(ctx.mysql, ctx.default_schema, _bodies(ctx).keywords)
    return sh


def _add_column_fast(code: str, skel: str, ctx: Ctx) -> Change | None:
    """A plain ``ALTER TABLE t ADD COLUMN <definition>`` through the column memo (see ``shapes``)."""
    found = _shapes(ctx).add_column(skel)
    if found is None:
        return None
    table, off = found
    item = _bodies(ctx).item(code[off:].strip(), skel[off:])
    if item is None or item.name is None or not isinstance(item.node, exp.ColumnDef):
        return None
    try:
        spec = _item_column(item, ctx, table)
    except Exception:  # noqa: BLE001 - the whole-statement path decides
        return None
    return Change("add_column", obj_kind="table", name=table, column=spec.name, column_spec=spec)


class Ctx:
    """Per-file analysis context."""

    def __init__(self, dialect: str, text: str) -> None:
        self.dialect = dialect
        self.mysql = dialect == "mysql"
        self.default_schema = "" if self.mysql else "public"
        self._line_starts: list[int] | None = None  # built on the first ``pos``: most files never need it
        self.text = text
        self.glot = _dialect(dialect)
        #: Values of a function's parameters while its body is expanded for one call (``expand_call``).
        self.env: dict[str, str] | None = None

    # -- names ---------------------------------------------------------------
    def ident(self, node: Any) -> str:
        if type(node) is exp.Identifier:  # the common case first
            name = node.this
            return name if (node.args.get("quoted") and not self.mysql) else name.lower()
        if node is None:
            return ""
        if isinstance(node, str):
            return node.lower()
        if isinstance(node, exp.Identifier):
            name = node.this
            return name if (node.args.get("quoted") and not self.mysql) else name.lower()
        if isinstance(node, exp.Column | exp.Table | exp.ColumnDef):
            return self.ident(node.this)
        if isinstance(node, exp.Ordered | exp.Paren):
            return self.ident(node.this)
        if isinstance(node, exp.Dot):
            return self.ident(node.expression)
        return "(expr)"

    def qname(self, table: Any) -> QName:
        if isinstance(table, exp.Schema):
            table = table.this
        if isinstance(table, exp.Table):
            db = table.args.get("db")
            return (self.ident(db) if db is not None else self.default_schema, self.ident(table.this))
        if isinstance(table, exp.Dot):
            return (self.ident(table.this), self.ident(table.expression))
        return (self.default_schema, self.ident(table))

    def names(self, nodes: Any) -> tuple[str, ...]:
        if nodes is None:
            return ()
        if isinstance(nodes, exp.Schema):
            nodes = nodes.expressions
        return tuple(self.ident(n) for n in nodes)

    def pos(self, offset: int) -> tuple[int, int]:
        if self._line_starts is None:
            self._line_starts = line_starts_of(self.text)
        return position(self._line_starts, offset)


# --- entry points -------------------------------------------------------------


def analyze_text(raw: str, dialect: str) -> AnalyzedFile:
    """Analyse one file's text. Never raises for bad SQL: the error is in ``.error``."""
    text = normalize_text(raw)
    try:
        lf = lex_file(text, dialect)
    except LexError as exc:
        line, col = position_in(text, exc.offset)
        return AnalyzedFile([], [], [], error=(line, col, str(exc)))
    ctx = Ctx(dialect, text)
    out: list[AnalyzedStatement] = []
    for st in lf.statements:
        try:
            changes = analyze_code(st.code, st.skeleton, st.start, ctx)
        except StatementError as exc:
            line, col = ctx.pos(exc.offset)
            return AnalyzedFile([], [], [], error=(line, col, exc.reason))
        for ch in changes:
            if not ch.line:
                ch.line, ch.col = st.line, st.col
        out.append(AnalyzedStatement(st.line, st.col, _snippet(st.code), changes, st.directives))
    return AnalyzedFile(out, lf.file_directives, lf.bad_directives)


def _snippet(code: str, limit: int = 120) -> str:
    s = " ".join(code[: limit * 4].split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _first_words(skel: str, n: int = 6) -> list[str]:
    words = _WORD.findall(skel, 0, 80)
    if len(words) <= n:  # the n-th word may be cut at the window's end unless another follows
        words = _WORD.findall(skel, 0, 400)
    return [w.upper() for w in words[:n]]


def analyze_code(code: str, skel: str, base: int, ctx: Ctx, *, in_body: bool = False) -> list[Change]:
    """Changes of one statement whose text starts at file offset ``base``."""
    words = _first_words(skel)
    if not words:
        return [Change("noop")] if skel.strip() in ("", "(", ")") else _unverifiable(
            base, ctx, "statement does not start with a keyword")
    first = words[0]
    if first == "START" and words[1:2] == ["TRANSACTION"]:
        return [Change("noop")]
    if first in _NOOP_FIRST and not (first == "BEGIN" and ctx.mysql and len(words) > 1 and words[1] != "WORK"):
        return [Change("noop")]
    if first in _DATA_FIRST:
        return [Change("noop", reason="data")]
    if first in ("SELECT", "PERFORM", "CALL"):
        return _calls(code, skel, base, ctx, call=first == "CALL")
    if first == "DO" and not ctx.mysql:
        return _do_block(code, skel, base, ctx)
    if first in _DYNAMIC_FIRST:
        what = "dynamic SQL (EXECUTE/PREPARE)" if first in ("EXECUTE", "PREPARE") else f"{first} statement"
        return _unverifiable(base, ctx, f"{what}: its effect on the schema cannot be known statically")
    if first == "CREATE" and any(w in ("TRIGGER", "POLICY", "FUNCTION", "PROCEDURE") for w in words[1:4]) or \
            words[:2] == ["ALTER", "POLICY"]:
        rec = recognize(code, skel, words, ctx.dialect, ctx.default_schema)
        if rec is not None:
            return rec
    if first == "CREATE" and words[1:2] and words[1] in _CREATE_OTHER and words[1:3] != ["TEXT", "SEARCH"] \
            or words[:3] == ["CREATE", "TEXT", "SEARCH"]:
        return [Change("create_other")]
    if first == "CREATE" and words[1:2] == ["DOMAIN"]:
        return _create_domain(code, ctx)
    if words[:3] == ["ALTER", "DEFAULT", "PRIVILEGES"]:
        return [Change("noop", reason="affects objects created later only")]
    if words[:2] == ["CREATE", "SCHEMA"]:
        m = re.match(r"\s*CREATE\s+SCHEMA\s+(?:IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|[\w$]+)", code, re.IGNORECASE)
        if m:
            name = m.group(1)[1:-1] if m.group(1).startswith('"') else m.group(1).lower()
            return [Change("create_schema", obj_kind="schema", name=(name, ""))]
    if first == "CREATE" and "RULE" in words[1:4]:
        return _unverifiable(base, ctx, "a rewrite RULE can change what the old binary's queries do")
    if first == "CREATE" and "INDEX" in words[1:3]:
        fields = _shapes(ctx).create_index(skel)
        if fields is not None:
            return [Change("create_index", obj_kind="index", **fields)]
    if words[:2] == ["ALTER", "TABLE"] and "ADD" in words:
        added = _add_column_fast(code, skel, ctx)
        if added is not None:
            return [added]
    if words[:2] == ["CREATE", "TABLE"]:
        fast = _bodies(ctx).parse(code, skel, _shapes(ctx))
        if fast is not None:
            try:
                return [_create_table(fast[0], ctx, fast[1])]
            except Exception:  # noqa: BLE001, S110 - the whole-statement path below decides
                pass
    try:
        parsed = ctx.glot.parse(code)
    except (ParseError, TokenError) as exc:
        rec = _fallback(code, skel, words, base, ctx)
        if rec is not None:
            return rec
        reason, off = _parse_error_reason(exc, code)
        raise StatementError(reason, base + off) from None
    exprs = [e for e in parsed if e is not None]
    if len(exprs) != 1:
        return _unverifiable(base, ctx, "it reads as several statements")
    e = exprs[0]
    if isinstance(e, exp.Command):
        rec = _fallback(code, skel, words, base, ctx)
        if rec is not None:
            return rec
        shown = " ".join(code.split()[:4])
        return _unverifiable(base, ctx, f"the linter does not understand '{shown} ...'")
    try:
        changes = _from_expression(e, code, base, ctx)
    except _Unhandled as u:
        rec = _fallback(code, skel, words, base, ctx)
        if rec is not None:
            return rec
        return _unverifiable(base, ctx, str(u))
    except Exception as exc:  # noqa: BLE001 - a bug here must fail closed, not crash the gate
        return _unverifiable(base, ctx, f"internal error while analysing ({type(exc).__name__}: {exc})")
    return changes


_ALTER_TABLE_HEAD = re.compile(
    r"\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?"
    r"(?:\"(?:[^\"]|\"\")*\"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:\"(?:[^\"]|\"\")*\"|[A-Za-z_][\w$]*))?\s*\*?\s+",
    re.IGNORECASE)
#: Constraint timing at the end of an ADD CONSTRAINT: irrelevant to the old binary, unknown to the parser.
_DEFERRABLE_TAIL = re.compile(r"\s+(?:(?:NOT\s+)?DEFERRABLE\b)?\s*(?:INITIALLY\s+(?:DEFERRED|IMMEDIATE)\b)?\s*\Z",
                              re.IGNORECASE)
_ADD_CHECK = re.compile(r"ADD\s+(?=CHECK\b)", re.IGNORECASE)


def _fallback(code: str, skel: str, words: list[str], base: int, ctx: Ctx) -> list[Change] | None:
    """Changes of a statement the parser could not model: a recognizer, or an ALTER TABLE taken apart.

    An ALTER TABLE with several actions is analysed one action at a time (each as
    ``ALTER TABLE t <action>``, other actions blanked so offsets stay right), so one
    action the parser does not know does not hide the others. A trailing constraint
    timing clause is blanked, and an unnamed ``ADD CHECK`` is read as a named one.
    """
    rec = recognize(code, skel, words, ctx.dialect, ctx.default_schema)
    if rec is not None or words[:2] != ["ALTER", "TABLE"]:
        return rec
    head = _ALTER_TABLE_HEAD.match(skel)
    if head is None:
        return None
    h = head.end()
    parts = [(h + a, h + b) for a, b in split_top_level(skel[h:]) if skel[h + a:h + b].strip()]
    if len(parts) > 1:
        out: list[Change] = []
        for a, b in parts:
            pcode = code[:h] + _blank_keep_lines(code[h:a]) + code[a:b]
            pskel = skel[:h] + _blank_keep_lines(skel[h:a]) + skel[a:b]
            try:
                out.extend(analyze_code(pcode, pskel, base, ctx))
            except StatementError as exc:
                out.extend(_unverifiable(exc.offset, ctx, f"one action not understood: {exc.reason}"))
        return out
    tail = _DEFERRABLE_TAIL.search(skel)
    if tail is not None and tail.end() > tail.start() and tail.group(0).strip() and "ADD" in words:
        a = tail.start()
        try:
            return analyze_code(code[:a], skel[:a], base, ctx)
        except StatementError:
            return None
    m = _ADD_CHECK.match(skel, h)
    if m is not None:
        ins = "CONSTRAINT veza_unnamed_check "
        try:
            parsed = ctx.glot.parse(code[:m.end()] + ins + code[m.end():])
            changes = _from_expression(parsed[0], code, base, ctx) if len(parsed) == 1 else None
        except (ParseError, TokenError, _Unhandled):
            return None
        for ch in changes or ():
            if ch.constraint is not None and ch.constraint.name == "veza_unnamed_check":
                cols = ch.constraint.columns
                ch.constraint = replace(ch.constraint, name=_cname(ctx, ch.name or ("", ""), "check", cols[:1]))
        return changes
    return None


def _blank_keep_lines(s: str) -> str:
    return "".join("\n" if c == "\n" else " " for c in s)


class _Unhandled(Exception):
    pass


def _unverifiable(base: int, ctx: Ctx, reason: str) -> list[Change]:
    line, col = ctx.pos(base)
    return [Change("unverifiable", line=line, col=col, reason=reason)]


def _parse_error_reason(exc: Exception, code: str) -> tuple[str, int]:
    errors = getattr(exc, "errors", None) or []
    if errors:
        e0 = errors[0]
        desc = str(e0.get("description") or "syntax error")
        line, col = e0.get("line"), e0.get("col")
        hl = e0.get("highlight")
        off = 0
        if isinstance(line, int) and isinstance(col, int) and line >= 1:
            starts = [0] + [i + 1 for i, ch in enumerate(code) if ch == "\n"]
            off = starts[min(line, len(starts)) - 1] + max(col - 1, 0)
        near = f" near {hl!r}" if hl else ""
        return f"{desc}{near}", min(off, max(len(code) - 1, 0))
    msg = str(exc).splitlines()[0] if str(exc) else "syntax error"
    return re.sub(r"\x1b\[[0-9;]*m", "", msg), 0


# --- SELECT / CALL ------------------------------------------------------------


def _calls(code: str, skel: str, base: int, ctx: Ctx, *, call: bool) -> list[Change]:
    line, col = ctx.pos(base)
    lit = literal_call(code, skel)
    if lit is not None:  # ``SELECT f('a', 'b')``: expanded at judgement time when the history defines f
        (fn_schema, fn), args = lit
        if call or not (fn in SAFE_FUNCTIONS or f"{fn_schema}.{fn}" in SAFE_FUNCTIONS):
            return [Change("call_function", line=line, col=col, function=(fn_schema or ctx.default_schema, fn),
                           values=args, extra={"literal_args": True},
                           reason=("CALL" if call else "SELECT") + f" {fn}(...)")]
    out: list[Change] = []
    for m in _FUNC_CALL_RE.finditer(skel):
        name = m.group(1).lower()
        short = name.split(".")[-1]
        if not call and (name in SAFE_FUNCTIONS or short in SAFE_FUNCTIONS or short.upper() in _SQL_WORDS):
            continue
        schema, _, fn = name.rpartition(".")
        out.append(Change("call_function", line=line, col=col, function=(schema or ctx.default_schema, fn),
                          reason=("CALL" if call else "SELECT") + f" {name}(...)"))
        if call:
            break
    return out or [Change("noop", reason="data")]


def literal_call(code: str, skel: str) -> tuple[tuple[str, str], tuple[str, ...]] | None:
    """``((schema, name), args)`` of ``SELECT|PERFORM|CALL [schema.]f(literal, ...)`` and nothing else, or None."""
    toks = tokens(code, skel)
    if len(toks) < 4 or toks[0][0] != "word" or toks[0][1].upper() not in ("SELECT", "PERFORM", "CALL"):
        return None
    i = 1
    names = []
    while i < len(toks) and toks[i][0] in ("word", "qid"):
        names.append(toks[i][1][1:-1] if toks[i][0] == "qid" else toks[i][1].lower())
        if i + 1 < len(toks) and toks[i + 1][1] == ".":
            i += 2
            continue
        i += 1
        break
    if not names or len(names) > 2 or i >= len(toks) or toks[i][1] != "(":
        return None
    i += 1
    args: list[str] = []
    while i < len(toks) and toks[i][1] != ")":
        kind, text, _ = toks[i]
        if kind == "str" and text.startswith("'"):
            args.append(text[1:-1].replace("''", "'"))
        elif kind == "num":
            args.append(text)
        else:
            return None
        i += 1
        if i < len(toks) and toks[i][1] == ",":
            i += 1
    if i >= len(toks) or toks[i][1] != ")" or any(t[1] != ";" for t in toks[i + 1:]):
        return None
    return ((names[0] if len(names) == 2 else ""), names[-1]), tuple(args)


def expand_call(body: str, params: tuple[str, ...], args: tuple[str, ...], dialect: str) -> list[Change] | None:
    """The changes of a PL/pgSQL function's body run with literal arguments, or None if not knowable.

    ``EXECUTE`` of a string built from literals and parameters (``'create index ' || name``)
    is evaluated with the arguments and analysed like any statement; conditions are taken
    as true (the worst case). Used for helper functions a history defines and calls.
    """
    if len(params) < len(args):
        return None
    ctx = Ctx(dialect, body)
    ctx.env = {p: a for p, a in zip(params, args, strict=False)}
    try:
        return analyze_plpgsql(body, 0, ctx)
    except Exception:  # noqa: BLE001 - an expansion that fails is no expansion: the call stays unverifiable
        return None


_SQL_WORDS = frozenset({"FROM", "WHERE", "AND", "OR", "NOT", "IN", "EXISTS", "SELECT", "VALUES", "AS", "ON",
                        "JOIN", "USING", "CASE", "WHEN", "THEN", "ELSE", "OVER", "FILTER", "ANY", "ALL",
                        "INTO", "LIMIT", "COUNT", "IS", "LIKE"})


# --- DO blocks ------------------------------------------------------------------

_PL_NOOP = frozenset({"NULL", "RETURN", "RAISE", "EXIT", "CONTINUE", "GET", "OPEN", "FETCH", "CLOSE", "MOVE",
                      "ASSERT", "COMMIT", "ROLLBACK"})


def _do_block(code: str, skel: str, base: int, ctx: Ctx) -> list[Change]:
    from veza_canary.migrations.parse import dollar_bodies

    words = _first_words(skel, 8)
    bodies = dollar_bodies(code)
    lang = "PLPGSQL"
    if "LANGUAGE" in words:
        i = words.index("LANGUAGE")
        lang = words[i + 1] if i + 1 < len(words) else lang
    if len(bodies) != 1:
        if re.search(r"^\s*DO\s*'", code, re.IGNORECASE):
            return _unverifiable(base, ctx, "DO block with a quoted body; use a dollar-quoted body")
        return _unverifiable(base, ctx, "DO block without a single dollar-quoted body")
    m = re.search(r"\bLANGUAGE\s+([A-Za-z_]+)", skel, re.IGNORECASE)
    if m:
        lang = m.group(1).upper()
    if lang != "PLPGSQL":
        return _unverifiable(base, ctx, f"DO block in language {lang.lower()}")
    bs, be = bodies[0]
    return analyze_plpgsql(code[bs:be], base + bs, ctx)


def analyze_plpgsql(body: str, base: int, ctx: Ctx) -> list[Change]:
    """Analyse the statements of a PL/pgSQL block body at file offset ``base``."""
    try:
        pieces, _comments = lex(body, "postgres")
    except LexError as exc:
        return _unverifiable(base + exc.offset, ctx, f"PL/pgSQL body: {exc}")
    out: list[Change] = []
    in_declare = False
    for s, _e, pcode, pskel in pieces:
        spans = word_spans(pskel)
        core_at, in_declare = _plpgsql_core(pskel, spans, in_declare)
        if core_at is None:
            continue
        ccode, cskel = pcode[core_at:], pskel[core_at:]
        cwords = _first_words(cskel, 3)
        off = base + s + core_at
        if not cwords:
            continue
        w0 = cwords[0]
        if w0 in _PL_NOOP:
            continue
        if len(cwords) >= 1 and re.match(r"^\s*[A-Za-z_][\w.]*(\[[^\]]*\])?\s*(:=|=)", cskel):
            continue  # assignment
        if w0 == "EXECUTE":
            out.extend(_execute(ccode, cskel, off, ctx))
            continue
        if w0 == "PERFORM":
            out.extend(_calls(ccode, cskel, off, ctx, call=False))
            continue
        try:
            changes = analyze_code(ccode, cskel, off, ctx, in_body=True)
        except StatementError as exc:
            changes = _unverifiable(exc.offset, ctx, f"PL/pgSQL statement not understood: {exc.reason}")
        for ch in changes:
            if not ch.line:
                ch.line, ch.col = ctx.pos(off)
        out.extend(changes)
    return out or [Change("noop")]


def _plpgsql_core(skel: str, spans: list[tuple[str, int, int]], in_declare: bool) -> tuple[int | None, bool]:
    """Offset of the real statement inside a PL/pgSQL piece, past control-flow words."""
    i = 0
    n = len(spans)
    if in_declare:
        j = _find_word(spans, 0, "BEGIN")
        if j is None:
            return None, True
        i = j + 1
    while i < n:
        w, ws, we = spans[i]
        if skel[max(0, ws - 2):ws] == "<<" and skel[we:we + 2] == ">>":
            i += 1  # a <<label>> before a block or loop
            continue
        if w == "DECLARE":
            j = _find_word(spans, i + 1, "BEGIN")
            if j is None:
                return None, True
            i = j + 1
            continue
        if w in ("BEGIN", "ELSE", "LOOP", "EXCEPTION"):
            i += 1
            continue
        if w == "END":
            return None, False
        if w in ("IF", "ELSIF", "ELSEIF", "WHEN", "CASE"):
            j = _find_word(spans, i + 1, "THEN")
            if j is None:
                return None, False
            i = j + 1
            continue
        if w in ("FOR", "FOREACH", "WHILE"):
            j = _find_word(spans, i + 1, "LOOP")
            if j is None:
                return None, False
            i = j + 1
            continue
        break
    if i >= n:
        return None, False
    return spans[i][1], False


def _find_word(spans: list[tuple[str, int, int]], start: int, word: str) -> int | None:
    for k in range(start, len(spans)):
        if spans[k][0] == word:
            return k
    return None


def _execute(code: str, skel: str, off: int, ctx: Ctx) -> list[Change]:
    """PL/pgSQL EXECUTE: a single constant string is analysed; anything else is dynamic.

    While a function is expanded for a call (``ctx.env``), a string concatenated from
    literals and the function's parameters is a constant too.
    """
    m = re.match(r"\s*EXECUTE\s+('(?:[^']|'')*'|\$([A-Za-z_]\w*)?\$.*?\$\2\$)\s*$", code, re.IGNORECASE | re.DOTALL)
    if not m and ctx.env is not None:
        head = re.match(r"\s*EXECUTE\s+", code, re.IGNORECASE)
        value = _evaluate(code[head.end():], skel[head.end():], ctx.env) if head else None
        if isinstance(value, str):
            return _analyze_sql_string(value, off, off, ctx)
        if isinstance(value, tuple):  # EXECUTE helper(...): the helper's own body, expanded later
            fn, args = value
            line, col = ctx.pos(off)
            return [Change("call_function", line=line, col=col, function=fn, values=args,
                           extra={"literal_args": True}, reason=f"SELECT {fn[1]}(...)")]
    if not m:
        return _unverifiable(off, ctx, "dynamic SQL: EXECUTE of a string built at run time")
    lit = m.group(1)
    if lit.startswith("'"):
        inner = lit[1:-1].replace("''", "'")
        start = off + m.start(1) + 1
    else:
        tag_len = lit.index("$", 1) + 1
        inner = lit[tag_len:-tag_len]
        start = off + m.start(1) + tag_len
    return _analyze_sql_string(inner, start, off, ctx)


def _analyze_sql_string(inner: str, start: int, off: int, ctx: Ctx) -> list[Change]:
    try:
        pieces, _ = lex(inner, "postgres")
    except LexError:
        return _unverifiable(off, ctx, "EXECUTE of a string that is not valid SQL")
    out: list[Change] = []
    for s, _e, pcode, pskel in pieces:
        try:
            changes = analyze_code(pcode, pskel, start + s, ctx, in_body=True)
        except StatementError as exc:
            changes = _unverifiable(off, ctx, f"EXECUTE of SQL that cannot be parsed: {exc.reason}")
        for ch in changes:
            if not ch.line or ctx.env is not None:
                ch.line, ch.col = ctx.pos(off)
        out.extend(changes)
    return out


def _evaluate(code: str, skel: str, env: dict[str, str]) -> str | tuple[QName, tuple[str, ...]] | None:
    """The value of ``'lit' || param || f(...)`` with ``env``, a call of a helper with such arguments, or None."""
    toks = [t for t in tokens(code, skel) if t[1] != ";"]
    pos = 0

    def operand() -> Any:
        nonlocal pos
        if pos >= len(toks):
            return None
        kind, text, _ = toks[pos]
        pos += 1
        if kind == "str" and text.startswith("'"):
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return text
        if kind == "op" and text == "(":
            v = concat()
            if pos < len(toks) and toks[pos][1] == ")":
                pos += 1
                return v
            return None
        if kind == "word":
            name = text.lower()
            if pos < len(toks) and toks[pos][1] == "(":
                pos += 1
                args = []
                while pos < len(toks) and toks[pos][1] != ")":
                    args.append(concat())
                    if pos < len(toks) and toks[pos][1] == ",":
                        pos += 1
                    elif pos < len(toks) and toks[pos][1] != ")":
                        return None
                pos += 1
                return _builtin(name, args)
            return env.get(name)
        return None

    def concat() -> Any:
        nonlocal pos
        v = operand()
        while v is not None and pos < len(toks) and toks[pos][1] == "||":
            pos += 1
            w = operand()
            if not isinstance(v, str) or not isinstance(w, str):
                return None
            v = v + w
        return v

    value = concat()
    if pos != len(toks) or value is None:
        return None
    if isinstance(value, _Call):
        return value.fn, value.args
    return value if isinstance(value, str) else None


class _Call:
    """A call of a function the evaluator does not know (a helper of the history), with known arguments."""

    def __init__(self, fn: QName, args: tuple[str, ...]) -> None:
        self.fn, self.args = fn, args


def _builtin(name: str, args: list[Any]) -> Any:
    if any(a is None or isinstance(a, _Call) for a in args):
        return None
    if name in ("lower", "upper") and len(args) == 1 and isinstance(args[0], str):
        return args[0].lower() if name == "lower" else args[0].upper()
    if name == "quote_ident" and len(args) == 1 and isinstance(args[0], str):
        a = args[0]
        return a if re.fullmatch(r"[a-z_][a-z0-9_$]*", a) else '"' + a.replace('"', '""') + '"'
    if name == "concat" and all(isinstance(a, str) for a in args):
        return "".join(args)
    if name == "string_to_array" and len(args) == 2 and all(isinstance(a, str) for a in args):
        return args[0].split(args[1]) if args[1] else list(args[0])
    if name == "array_to_string" and len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], str):
        return args[1].join(args[0])
    if name not in SAFE_FUNCTIONS and all(isinstance(a, str) for a in args):
        return _Call(("public", name), tuple(args))
    return None


# --- parsed statements -------------------------------------------------------------


def _from_expression(e: exp.Expression, code: str, base: int, ctx: Ctx) -> list[Change]:
    if isinstance(e, exp.Create):
        return _create(e, code, base, ctx)
    if isinstance(e, exp.Drop):
        return _drop(e, ctx)
    if isinstance(e, exp.Alter):
        return _alter(e, ctx, code)
    if isinstance(e, exp.Revoke):
        sec = e.args.get("securable")
        kind = (e.args.get("kind") or "table").lower()
        names = (ctx.qname(sec),) if isinstance(sec, exp.Table) else ()
        return [Change("revoke", obj_kind=kind, names=names)]
    if isinstance(e, exp.Grant | exp.Comment | exp.Set | exp.Transaction | exp.Commit | exp.Rollback |
                  exp.Analyze | exp.TruncateTable | exp.Use):
        if isinstance(e, exp.Use):
            return _unverifiable(base, ctx, "USE switches the default database for later statements")
        return [Change("noop")]
    if isinstance(e, exp.Query | exp.Insert | exp.Update | exp.Delete | exp.Merge):
        return [Change("noop", reason="data")]
    raise _Unhandled(f"statement type {type(e).__name__} is not modelled")


_TYPES: dict[TypeInfo, TypeInfo] = {}


def type_info(dt: Any, ctx: Ctx) -> TypeInfo | None:
    """The column type of a sqlglot DataType, interned (a schema has few distinct types)."""
    t = _type_info(dt, ctx)
    if t is None:
        return None
    return _TYPES.setdefault(t, t)


_DT_NAMES: dict[Any, str] = {t: t.name for t in exp.DataType.Type}


def _type_info(dt: Any, ctx: Ctx) -> TypeInfo | None:
    if not isinstance(dt, exp.DataType):
        return None
    base = _DT_NAMES.get(dt.this) or str(dt.this)
    if base == "USERDEFINED":
        kind = str(dt.args.get("kind") or "").lower()
        short = kind.split(".")[-1].strip('"')
        if short in _USER_SERIAL:
            return TypeInfo(_USER_SERIAL[short], (), sql=_USER_SERIAL[short])
        return TypeInfo("USER:" + short, (), sql=kind)
    if base in _SERIAL:
        return TypeInfo(_SERIAL[base], (), sql=_SERIAL[base])
    if base in ("ENUM", "SET") and ctx.mysql:
        vals = tuple(str(x.this) for x in dt.expressions if isinstance(x, exp.Literal))
        return TypeInfo(base, (), values=vals, sql=f"{base}({', '.join(repr(v) for v in vals)})")
    if base == "ARRAY":
        inner = type_info(dt.expressions[0], ctx) if dt.expressions else None
        return TypeInfo("ARRAY", (), inner=inner, sql=f"{inner}[]" if inner else "ARRAY")
    params = tuple(_param_text(p, ctx) for p in dt.expressions)
    name = _dialect_name(base, bool(dt.args.get("unsigned")), ctx)
    return TypeInfo(base, params, sql=f"{name}({', '.join(params)})" if params else name)


_DIALECT_NAMES: dict[tuple[str, str, bool], str] = {}


def _dialect_name(base: str, unsigned: bool, ctx: Ctx) -> str:
    """A type's name as the user's dialect spells it (``BYTEA``, not the parser's ``VARBINARY``), memoized."""
    key = (ctx.dialect, base, unsigned)
    name = _DIALECT_NAMES.get(key)
    if name is None:
        try:
            name = exp.DataType.build(base, unsigned=unsigned or None).sql(ctx.glot)
        except Exception:  # noqa: BLE001 - a type the generator cannot spell keeps the parser's name
            name = base + (" UNSIGNED" if unsigned else "")
        name = name.upper()
        if ctx.dialect == "postgres":
            name = {"DECIMAL": "NUMERIC"}.get(name, name)
        _DIALECT_NAMES[key] = name
    return name


def _param_text(p: Any, ctx: Ctx) -> str:
    # DataTypeParam(Literal) is by far the common case; avoid the generator for it.
    inner = p.this if isinstance(p, exp.DataTypeParam) else p
    if isinstance(inner, exp.Literal):
        return str(inner.this)
    return p.sql(ctx.glot)


def _default_text(d: Any, ctx: Ctx) -> str:
    if isinstance(d, exp.Literal):
        return f"'{d.this}'" if d.is_string else str(d.this)
    if isinstance(d, exp.Boolean):
        return "TRUE" if d.this else "FALSE"
    return ctx.glot.generate(d, copy=False) if isinstance(d, exp.Expression) else str(d)


def column_spec(cd: exp.ColumnDef, ctx: Ctx, table: QName, name: str | None = None) -> ColumnSpec:
    """A column definition; ``name`` replaces the parsed one (a memoized definition's placeholder)."""
    name = name if name is not None else ctx.ident(cd.this)
    kind = cd.args.get("kind")
    t = type_info(kind, ctx)
    spec = ColumnSpec(name=name, type=t)
    kname = _DT_NAMES.get(kind.this) if isinstance(kind, exp.DataType) else None
    if kname in _SERIAL or (t is not None and kname == "USERDEFINED"
                            and str(kind.args.get("kind") or "").lower() in _USER_SERIAL):
        spec.identity = "serial"
        spec.not_null = True
    cons: list[ConstraintSpec] = []
    for c in cd.constraints:
        k = c.args.get("kind")
        if isinstance(k, exp.NotNullColumnConstraint):
            spec.not_null = not k.args.get("allow_null")
        elif isinstance(k, exp.DefaultColumnConstraint):
            d = k.this
            if isinstance(d, exp.Null):
                continue
            dsql = _default_text(d, ctx)
            spec.default = dsql
            spec.default_volatile = bool(_VOLATILE_RE.search(dsql) or isinstance(d, exp.Rand | exp.Uuid) or
                                         any(isinstance(x, exp.Rand | exp.Uuid) for x in d.walk()))
        elif isinstance(k, exp.GeneratedAsIdentityColumnConstraint):
            spec.identity = "always" if k.this else "default"
            spec.not_null = True
        elif isinstance(k, exp.AutoIncrementColumnConstraint):
            spec.identity = "auto_increment"
        elif isinstance(k, exp.ComputedColumnConstraint | exp.GeneratedAsRowColumnConstraint):
            spec.generated = True
        elif isinstance(k, exp.PrimaryKeyColumnConstraint):
            spec.not_null = True
            cons.append(ConstraintSpec("pk", _cname(ctx, table, "pk", (name,)), (name,)))
        elif isinstance(k, exp.UniqueColumnConstraint):
            cons.append(ConstraintSpec("unique", _cname(ctx, table, "unique", (name,)), (name,)))
        elif isinstance(k, exp.CheckColumnConstraint):
            cons.append(_check_spec(k, None, ctx, table, default_cols=(name,)))
        elif isinstance(k, exp.Reference):
            ref = k.this
            cons.append(ConstraintSpec("fk", _cname(ctx, table, "fk", (name,)), (name,),
                                       ref_table=ctx.qname(ref)))
    spec.constraints = tuple(cons)
    return spec


def _cname(ctx: Ctx, table: QName, kind: str, cols: tuple[str, ...]) -> str:
    """The name the database gives an unnamed constraint."""
    t = table[1]
    if ctx.mysql:
        return {"pk": "primary", "unique": cols[0] if cols else t, "fk": f"{t}_ibfk",
                "check": f"{t}_chk"}.get(kind, t)
    joined = "_".join(cols)
    return {"pk": f"{t}_pkey", "unique": f"{t}_{joined}_key", "fk": f"{t}_{joined}_fkey",
            "check": f"{t}_{joined}_check" if joined else f"{t}_check",
            "exclude": f"{t}_{joined}_excl"}.get(kind, f"{t}_{joined}")


def _check_spec(k: exp.CheckColumnConstraint, name: str | None, ctx: Ctx, table: QName,
                default_cols: tuple[str, ...] = (), not_valid: bool = False) -> ConstraintSpec:
    expr = k.this
    cols = tuple(sorted({ctx.ident(c) for c in expr.find_all(exp.Column)})) if expr is not None else default_cols
    return ConstraintSpec("check", name or _cname(ctx, table, "check", default_cols or cols[:1]), cols,
                          not_valid=not_valid, null_propagating=null_propagating(expr))


_STRICT = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.In, exp.Between,
           exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Paren, exp.Not, exp.And, exp.Or, exp.Neg,
           exp.Length, exp.Lower, exp.Upper, exp.Trim, exp.Abs, exp.Cast, exp.RegexpLike, exp.SimilarTo,
           exp.Column, exp.Literal, exp.Identifier, exp.DataType, exp.Tuple, exp.DPipe, exp.Boolean)


#: Functions sqlglot leaves anonymous that return NULL for a NULL argument (Postgres' STRICT built-ins).
_STRICT_NAMES = frozenset({"octet_length", "bit_length", "char_length", "character_length", "btrim", "ltrim",
                           "rtrim", "substr", "left", "right", "sign", "floor", "ceil", "ceiling", "trunc",
                           "md5", "array_length", "cardinality", "jsonb_typeof", "json_typeof", "date_part"})


def null_propagating(expr: Any) -> bool:
    """True when the expression is NULL whenever its columns are NULL (so a CHECK passes)."""
    if expr is None:
        return False
    for node in expr.walk():
        if isinstance(node, exp.Anonymous) and str(node.name).lower() in _STRICT_NAMES:
            continue
        if not isinstance(node, _STRICT):
            return False
    return True


def _table_constraint(node: Any, ctx: Ctx, table: QName, name: str | None, not_valid: bool) -> ConstraintSpec | None:
    if isinstance(node, exp.Constraint):
        cname = ctx.ident(node.this)
        specs = [_table_constraint(x, ctx, table, cname, not_valid) for x in node.expressions]
        specs = [s for s in specs if s is not None]
        return specs[0] if len(specs) == 1 else None
    if isinstance(node, exp.PrimaryKey | exp.PrimaryKeyColumnConstraint):
        cols = ctx.names(node.expressions)
        return ConstraintSpec("pk", name or _cname(ctx, table, "pk", cols), cols, not_valid=not_valid)
    if isinstance(node, exp.UniqueColumnConstraint):
        this = node.this
        cols = ctx.names(this.expressions if isinstance(this, exp.Schema) else node.expressions)
        if ctx.mysql and isinstance(this, exp.Schema) and this.this is not None and not name:
            name = ctx.ident(this.this)
        return ConstraintSpec("unique", name or _cname(ctx, table, "unique", cols), cols, not_valid=not_valid)
    if isinstance(node, exp.ForeignKey):
        cols = ctx.names(node.expressions)
        ref = node.args.get("reference")
        ref_t = ctx.qname(ref.this) if ref is not None else None
        return ConstraintSpec("fk", name or _cname(ctx, table, "fk", cols), cols, not_valid=not_valid,
                              ref_table=ref_t)
    if isinstance(node, exp.CheckColumnConstraint):
        return _check_spec(node, name, ctx, table, not_valid=not_valid)
    if isinstance(node, exp.ExcludeColumnConstraint):
        params = node.this
        cols = ()
        if isinstance(params, exp.IndexParameters):
            cols = tuple(ctx.ident(c.this if isinstance(c, exp.WithOperator) else c)
                         for c in params.args.get("columns") or [])
        return ConstraintSpec("exclude", name or _cname(ctx, table, "exclude", cols), cols, not_valid=not_valid)
    return None


def _create(e: exp.Create, code: str, base: int, ctx: Ctx) -> list[Change]:
    kind = str(e.args.get("kind") or "").upper()
    replace = bool(e.args.get("replace"))
    this = e.this
    if kind == "TABLE":
        return [_create_table(e, ctx)]
    if kind == "INDEX":
        idx = this
        if not isinstance(idx, exp.Index):
            raise _Unhandled("CREATE INDEX without an index")
        table = ctx.qname(idx.args.get("table"))
        params = idx.args.get("params")
        cols: tuple[str, ...] = ()
        if isinstance(params, exp.IndexParameters):
            cols = tuple(ctx.ident(c) for c in params.args.get("columns") or [])
        name = ctx.ident(idx.this) if idx.this is not None else ""
        return [Change("create_index", obj_kind="index", name=(table[0], name), table=table,
                       unique=bool(e.args.get("unique")), concurrently=bool(e.args.get("concurrently")),
                       index_columns=cols)]
    if kind == "VIEW":
        name = ctx.qname(this)
        query = e.expression
        cols, star = view_columns(query, ctx)
        if isinstance(this, exp.Schema) and this.expressions:
            cols = ctx.names(this.expressions)
            star = ()
        mat = any(isinstance(p, exp.MaterializedProperty) for p in (e.args.get("properties") or exp.Properties()).expressions) \
            if e.args.get("properties") else False
        return [Change("create_view", obj_kind="materialized view" if mat else "view", name=name,
                       view_columns=cols, view_star_from=star, or_replace=replace, materialized=mat)]
    if kind == "SCHEMA":
        node = (this.args.get("db") or this.this) if isinstance(this, exp.Table) else this
        return [Change("create_schema", obj_kind="schema", name=(ctx.ident(node), ""))]
    if kind == "SEQUENCE":
        return [Change("create_sequence", obj_kind="sequence", name=ctx.qname(this))]
    if kind == "TYPE":
        dt = e.expression
        vals: tuple[str, ...] = ()
        if isinstance(dt, exp.DataType) and dt.this.name == "ENUM":
            vals = tuple(str(x.this) for x in dt.expressions if isinstance(x, exp.Literal))
        return [Change("create_type", obj_kind="type", name=ctx.qname(this), values=vals,
                       extra={"enum": isinstance(dt, exp.DataType) and dt.this.name == "ENUM"})]
    if kind in ("FUNCTION", "PROCEDURE"):
        fn = this.this if isinstance(this, exp.UserDefinedFunction) else this
        body = None
        from veza_canary.migrations.parse import dollar_bodies

        b = dollar_bodies(code)
        if b:
            body = code[b[0][0]:b[0][1]]
        return [Change("create_function", obj_kind="function", name=ctx.qname(fn), body=body, or_replace=replace)]
    if kind in ("TRIGGER",):
        raise _Unhandled("CREATE TRIGGER")
    if kind in ("DATABASE", "ROLE", "USER", "EXTENSION", "STAGE", "TAG", "WAREHOUSE", "CATALOG"):
        return [Change("create_other")]
    raise _Unhandled(f"CREATE {kind} is not modelled")


def view_columns(query: Any, ctx: Ctx, ctes: dict[str, Any] | None = None,
                 depth: int = 0) -> tuple[tuple[str, ...] | None, tuple[QName, ...]]:
    """Output column names of a view query; '*' entries expand (later) from the returned relations.

    A star over a CTE or a subquery (``ac.*`` with ``WITH ac AS (...)``) is resolved here,
    through that query's own columns; a star over a table or view is left for the schema.
    """
    ctes = dict(ctes or {})
    while True:  # a WITH may hang on a UNION, a subquery or the SELECT itself
        with_ = query.args.get("with_") or query.args.get("with") if isinstance(query, exp.Expression) else None
        if with_ is not None:
            for cte in with_.expressions:
                ctes[ctx.ident(cte.args.get("alias").this if cte.args.get("alias") else "")] = cte.this
        if isinstance(query, exp.SetOperation | exp.Subquery):
            query = query.this
            continue
        break
    if not isinstance(query, exp.Select) or depth > 8:
        return None, ()
    sources: list[Any] = []
    from_ = query.args.get("from_") or query.args.get("from")
    if from_ is not None:
        sources.append(from_.this)
    sources.extend(j.this for j in query.args.get("joins") or ())
    cols: list[str] = []
    star: list[QName] = []
    for proj in query.expressions:
        if isinstance(proj, exp.Star) or (isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star)):
            qual = ctx.ident(proj.args.get("table")) if isinstance(proj, exp.Column) else ""
            for src in sources:
                alias = ctx.ident(src.args["alias"].this) if src.args.get("alias") is not None else ""
                name = ctx.ident(src.this) if isinstance(src, exp.Table) else ""
                if qual and qual not in (alias, name):
                    continue
                inner = src if isinstance(src, exp.Subquery) else (
                    ctes.get(name) if isinstance(src, exp.Table) and not src.args.get("db") else None)
                if inner is not None:
                    sub_cols, sub_star = view_columns(inner, ctx, ctes if isinstance(src, exp.Subquery) else
                                                      {k: v for k, v in ctes.items() if k != name}, depth + 1)
                    if sub_cols is None:
                        return None, ()
                    cols.extend(sub_cols)
                    star.extend(sub_star)
                elif isinstance(src, exp.Table):
                    cols.append("*")
                    star.append(ctx.qname(src))
                else:
                    return None, ()  # a function or VALUES: columns unknown
            continue
        alias = proj.alias_or_name
        if isinstance(proj, exp.Alias):
            cols.append(ctx.ident(proj.args.get("alias")))
        elif isinstance(proj, exp.Column):
            cols.append(ctx.ident(proj.this))
        elif not ctx.mysql:
            cols.append(_pg_colname(proj, ctx))
        elif not alias:
            return None, ()
        else:
            cols.append(alias.lower())
    return tuple(cols), tuple(star)


def _pg_colname(node: Any, ctx: Ctx) -> str:
    """The name Postgres gives an unaliased output column (its FigureColname rules)."""
    if isinstance(node, exp.Alias):
        return ctx.ident(node.args.get("alias"))
    if isinstance(node, exp.Column):
        return ctx.ident(node.this)
    if isinstance(node, exp.Cast):
        inner = _pg_colname(node.this, ctx)
        return inner if inner != "?column?" else str(node.to.this.name if node.to is not None else inner).lower()
    if isinstance(node, exp.Subquery | exp.Paren):
        q = node.this
        while isinstance(q, exp.SetOperation):
            q = q.this
        if isinstance(q, exp.Select) and q.expressions:
            return _pg_colname(q.expressions[0], ctx)
        return _pg_colname(q, ctx) if isinstance(node, exp.Paren) else "?column?"
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return "?column?"  # the i-th '*' of cols expands from star[i]


def _create_table(e: exp.Create | Head, ctx: Ctx, items: list[Item] | None = None) -> Change:
    """A CREATE TABLE; ``items`` (from ``tablebody``) replace the body of a header parsed (or read) alone."""
    cols: list[ColumnSpec] = []
    cons: list[ConstraintSpec] = []
    extra: dict[str, Any] = {}
    if isinstance(e, Head):
        table = e.table
        this: Any = None
    else:
        this = e.this
        table = ctx.qname(this)
    if isinstance(e, Head) or isinstance(this, exp.Schema):
        for item in items if items is not None else [Item(n) for n in this.expressions]:
            node = item.node
            if isinstance(node, exp.ColumnDef):
                spec = _item_column(item, ctx, table)
                cols.append(spec)
                cons.extend(spec.constraints)
            elif isinstance(node, exp.LikeProperty):
                extra["like"] = ctx.qname(node.this)
            elif isinstance(node, exp.IndexColumnConstraint):
                icols = ctx.names(node.expressions)
                iname = ctx.ident(node.this) if node.this is not None else (icols[0] if icols else "")
                extra.setdefault("indexes", []).append((iname, icols))
            else:
                c = _table_constraint(node, ctx, table, None, False)
                if c is not None:
                    if c.kind == "pk":
                        for col in cols:
                            if col.name in c.columns:
                                col.not_null = True
                    cons.append(c)
    elif isinstance(e.expression, exp.Query):
        names, star = view_columns(e.expression, ctx)
        extra["as_query"] = True
        extra["as_columns"], extra["as_star"] = names, star  # expanded by the schema, like a view's
        for n in names or ():
            if n != "*":
                cols.append(ColumnSpec(n))
    if not isinstance(e, Head):
        props = e.args.get("properties")
        if props is not None and any(isinstance(p, exp.PartitionedOfProperty) for p in props.expressions):
            extra["partition_of"] = True
    if e.if_not_exists if isinstance(e, Head) else e.args.get("exists"):
        extra["if_not_exists"] = True
    return Change("create_table", obj_kind="table", name=table, extra={"columns": cols, "constraints": cons, **extra})


_TEMPLATE_TABLE = ("", "veza_t")
_NO_TEMPLATE = ColumnSpec("")


def _item_column(item: Item, ctx: Ctx, table: QName) -> ColumnSpec:
    """A column of a table body; a memoized definition without constraints is converted once."""
    memo = item.memo
    if memo is None or item.name is None:
        return column_spec(item.node, ctx, table, item.name)
    t = memo.converted
    if t is None:
        t = column_spec(item.node, ctx, _TEMPLATE_TABLE, "")
        t = memo.converted = _NO_TEMPLATE if t.constraints else t
    if t is _NO_TEMPLATE:  # constraint names depend on the table and column
        return column_spec(item.node, ctx, table, item.name)
    return ColumnSpec(item.name, t.type, t.not_null, t.default, t.default_volatile, t.identity, t.generated)


def _create_domain(code: str, ctx: Ctx) -> list[Change]:
    m = re.match(r"\s*CREATE\s+DOMAIN\s+((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)", code, re.IGNORECASE)
    if not m:
        return [Change("create_other")]
    parts = [p.strip('"') if p.startswith('"') else p.lower() for p in m.group(1).split(".")]
    name = (parts[0], parts[1]) if len(parts) == 2 else (ctx.default_schema, parts[0])
    return [Change("create_type", obj_kind="type", name=name, extra={"domain": True})]


_DROP_KINDS = {"TABLE": "table", "VIEW": "view", "INDEX": "index", "SEQUENCE": "sequence", "TYPE": "type",
               "SCHEMA": "schema", "FUNCTION": "function", "PROCEDURE": "function", "DOMAIN": "type",
               "EXTENSION": "extension", "MATERIALIZED VIEW": "materialized view"}


def _drop(e: exp.Drop, ctx: Ctx) -> list[Change]:
    kind = str(e.args.get("kind") or "").upper()
    if kind not in _DROP_KINDS:
        raise _Unhandled(f"DROP {kind} is not modelled")
    okind = _DROP_KINDS[kind]
    if okind == "view" and e.args.get("materialized"):
        okind = "materialized view"
    tables = e.args.get("tables") or ([e.this] if e.this is not None else [])
    if not tables:
        raise _Unhandled(f"DROP {kind} without a name")
    if okind == "schema":
        # sqlglot puts a schema's name in the Table's db slot.
        names = tuple((ctx.ident((t.args.get("db") or t.this) if isinstance(t, exp.Table) else t), "")
                      for t in tables)
    else:
        names = tuple(ctx.qname(t) for t in tables)
    return [Change("drop", obj_kind=okind, names=names, concurrently=bool(e.args.get("concurrently")))]


def _alter(e: exp.Alter, ctx: Ctx, skel: str = "") -> list[Change]:
    kind = str(e.args.get("kind") or "").upper()
    target = ctx.qname(e.this)
    actions = e.args.get("actions") or []
    if kind not in ("TABLE", "VIEW", "INDEX"):
        raise _Unhandled(f"ALTER {kind} is not modelled")
    okind = kind.lower()
    if not actions:
        if ctx.mysql and e.args.get("options"):
            return [Change("noop")]
        raise _Unhandled(f"ALTER {kind} without a recognised action")
    not_valid = bool(e.args.get("not_valid"))
    out: list[Change] = []
    for a in actions:
        out.extend(_alter_action(a, okind, target, ctx, not_valid, len(actions), skel))
    return out


_RENAME_TO_RE = re.compile(r"\bRENAME\s+TO\b", re.IGNORECASE)


def _alter_action(a: Any, okind: str, t: QName, ctx: Ctx, not_valid: bool, n_actions: int = 1,
                  skel: str = "") -> list[Change]:
    if isinstance(a, exp.ColumnDef):
        if okind != "table":
            raise _Unhandled("ADD COLUMN on a non-table")
        spec = column_spec(a, ctx, t)
        return [Change("add_column", obj_kind="table", name=t, column=spec.name, column_spec=spec)]
    if isinstance(a, exp.Drop):
        kind = str(a.args.get("kind") or "").upper()
        targets = a.args.get("tables") or ([a.this] if a.this is not None else [])
        if not targets:
            raise _Unhandled(f"DROP {kind or 'COLUMN'} without a name")
        out = []
        for x in targets:
            n = ctx.ident(x)
            if n == "(expr)" or not n:
                raise _Unhandled(f"DROP {kind} target not understood")
            if kind in ("COLUMN", ""):
                out.append(Change("drop_column", obj_kind="table", name=t, column=n))
            elif kind in ("CONSTRAINT", "CHECK", "FOREIGN KEY"):
                out.append(Change("drop_constraint", obj_kind="table", name=t, value=n))
            elif kind in ("INDEX", "KEY"):
                out.append(Change("drop_constraint", obj_kind="index", name=t, value=n))
            else:
                raise _Unhandled(f"DROP {kind} in ALTER TABLE is not modelled")
        return out
    if isinstance(a, exp.DropPrimaryKey):
        return [Change("drop_constraint", obj_kind="table", name=t, value=_cname(ctx, t, "pk", ()),
                       extra={"pk": True})]
    if isinstance(a, exp.RenameColumn):
        old = ctx.ident(a.this)
        new = ctx.ident(a.args.get("to"))
        if not old or not new or "(expr)" in (old, new):
            raise _Unhandled("RENAME COLUMN not understood")
        return [Change("rename_column", obj_kind=okind, name=t, column=old, new_name=new)]
    if isinstance(a, exp.AlterRename):
        # sqlglot reads Postgres' "RENAME c TO d" (COLUMN omitted) as two table renames; only a
        # lone "RENAME TO" is a rename of the table itself.
        if n_actions != 1 or not _RENAME_TO_RE.search(skel):
            raise _Unhandled("RENAME not understood")
        new = ctx.qname(a.this)
        return [Change("rename", obj_kind=okind, name=t, new_name=new[1])]
    if isinstance(a, exp.AlterColumn):
        return _alter_column(a, t, ctx)
    if isinstance(a, exp.AddConstraint):
        out = []
        for node in a.expressions:
            if isinstance(node, exp.IndexColumnConstraint):
                cols = ctx.names(node.expressions)
                idx_name = ctx.ident(node.this) if node.this is not None else (cols[0] if cols else "")
                out.append(Change("create_index", obj_kind="index", name=(t[0], idx_name), table=t,
                                  unique=False, concurrently=True, index_columns=cols))
                continue
            spec = _table_constraint(node, ctx, t, None, not_valid)
            if spec is None:
                raise _Unhandled(f"constraint {type(node).__name__} is not modelled")
            out.append(Change("add_constraint", obj_kind="table", name=t, constraint=spec))
        if not out:
            raise _Unhandled("ADD CONSTRAINT without a constraint")
        return out
    if isinstance(a, exp.ModifyColumn):
        cd = a.this
        if not isinstance(cd, exp.ColumnDef) or cd.args.get("kind") is None:
            raise _Unhandled("MODIFY/CHANGE COLUMN without a full column definition")
        spec = column_spec(cd, ctx, t)
        old = ctx.ident(a.args.get("rename_from")) if a.args.get("rename_from") is not None else spec.name
        return [Change("modify_column", obj_kind="table", name=t, column=old, new_name=spec.name, column_spec=spec)]
    if isinstance(a, exp.AlterSet) or (ctx.mysql and type(a).__name__ == "AlterIndex"):
        return [Change("noop")]
    if isinstance(a, exp.RenameIndex):
        return [Change("rename_constraint", obj_kind="index", name=t, value=ctx.ident(a.this),
                       new_value=ctx.ident(a.args.get("to")))]
    raise _Unhandled(f"ALTER action {type(a).__name__} is not modelled")


def _alter_column(a: exp.AlterColumn, t: QName, ctx: Ctx) -> list[Change]:
    col = ctx.ident(a.this)
    if not col or col == "(expr)":
        raise _Unhandled("ALTER COLUMN without a column")
    args = a.args
    if args.get("dtype") is not None:
        return [Change("alter_type", obj_kind="table", name=t, column=col, type=type_info(args["dtype"], ctx),
                       extra={"using": args.get("using") is not None})]
    if args.get("allow_null") is not None and args.get("allow_null") is not False:
        return [Change("drop_not_null", obj_kind="table", name=t, column=col)]
    if args.get("allow_null") is False:
        return [Change("set_not_null", obj_kind="table", name=t, column=col)]
    if args.get("drop"):
        return [Change("drop_default", obj_kind="table", name=t, column=col)]
    if args.get("default") is not None:
        d = args["default"]
        dsql = _default_text(d, ctx)
        return [Change("set_default", obj_kind="table", name=t, column=col, value=dsql,
                       extra={"volatile": bool(_VOLATILE_RE.search(dsql))})]
    if args.get("comment") is not None or args.get("visible") is not None:
        return [Change("noop")]
    raise _Unhandled("ALTER COLUMN action is not modelled")
