"""Token-level recognizers for statements sqlglot does not model.

sqlglot turns many Postgres DDL statements into an opaque ``Command`` (``ALTER TYPE
... ADD VALUE``, ``ALTER TABLE ... SET SCHEMA``, ``ENABLE ROW LEVEL SECURITY``,
``CREATE POLICY``...) or rejects valid ones (``DROP FUNCTION f(int), g``). Each
recognizer here matches one exact shape and returns the changes; a statement that
matches no shape stays unverifiable. A recognizer must consume the whole statement:
a trailing clause it does not know makes it give up (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from veza_canary.migrations.changes import Change, ConstraintSpec, QName
from veza_canary.migrations.parse import split_top_level, tokens


class Tok:
    __slots__ = ("kind", "text", "up", "pos")

    def __init__(self, kind: str, text: str, pos: int) -> None:
        self.kind = kind
        self.text = text
        self.up = text.upper() if kind == "word" else text
        self.pos = pos

    def __repr__(self) -> str:
        return f"Tok({self.kind},{self.text!r})"


def tokenize(code: str, skel: str) -> list[Tok]:
    """The statement's tokens, from the scanner (``parse.tokens``)."""
    return [Tok(kind, text, pos) for kind, text, pos in tokens(code, skel)]


class NoMatch(Exception):
    pass


class Cursor:
    """A cursor over tokens with the few moves a recognizer needs."""

    def __init__(self, toks: list[Tok], dialect: str, default_schema: str) -> None:
        self.toks = toks
        self.i = 0
        self.dialect = dialect
        self.default_schema = default_schema

    @property
    def done(self) -> bool:
        return self.i >= len(self.toks)

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at(self, *words: str) -> bool:
        for k, w in enumerate(words):
            t = self.peek(k)
            if t is None or t.up != w or t.kind not in ("word", "op"):
                return False
        return True

    def accept(self, *words: str) -> bool:
        if self.at(*words):
            self.i += len(words)
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            raise NoMatch(" ".join(words))

    def ident(self) -> str:
        t = self.peek()
        if t is None:
            raise NoMatch("identifier")
        self.i += 1
        if t.kind == "word":
            return t.text.lower()
        if t.kind == "qid":
            name = t.text[1:-1].replace('""', '"')
            return name.lower() if self.dialect == "mysql" else name
        if t.kind == "bq":
            return t.text[1:-1].replace("``", "`").lower()
        raise NoMatch("identifier")

    def qname(self) -> QName:
        parts = [self.ident()]
        while self.at(".") and self.peek(1) is not None:
            self.i += 1
            parts.append(self.ident())
        if len(parts) == 1:
            return (self.default_schema, parts[0])
        return (parts[-2], parts[-1])

    def string(self) -> str:
        t = self.peek()
        if t is None or t.kind != "str":
            raise NoMatch("string")
        self.i += 1
        body = t.text[1:-1] if t.text[0] == "'" else t.text[2:-1]
        return body.replace("''", "'")

    def skip_parens(self) -> str:
        """Skip a balanced ``( ... )`` group; return its raw inside."""
        t = self.peek()
        if t is None or t.text != "(":
            raise NoMatch("(")
        depth = 0
        start = self.i
        while not self.done:
            t = self.toks[self.i]
            self.i += 1
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
                if depth == 0:
                    return " ".join(x.text for x in self.toks[start + 1:self.i - 1])
        raise NoMatch(")")

    def rest_words(self) -> list[str]:
        return [t.up for t in self.toks[self.i:]]

    def end(self) -> None:
        if not self.done:
            raise NoMatch(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]


Recognizer = Callable[[Cursor], list[Change]]

_OBJ_WORDS: list[tuple[tuple[str, ...], str]] = [
    (("MATERIALIZED", "VIEW"), "materialized view"),
    (("FOREIGN", "TABLE"), "table"),
    (("TABLE",), "table"),
    (("VIEW",), "view"),
    (("SEQUENCE",), "sequence"),
    (("INDEX",), "index"),
    (("SCHEMA",), "schema"),
    (("FUNCTION",), "function"),
    (("PROCEDURE",), "function"),
    (("ROUTINE",), "function"),
    (("AGGREGATE",), "function"),
    (("TYPE",), "type"),
    (("DOMAIN",), "type"),
    (("EXTENSION",), "extension"),
]


def _obj_kind(c: Cursor) -> tuple[str, str]:
    for words, kind in _OBJ_WORDS:
        if c.accept(*words):
            return kind, " ".join(words)
    raise NoMatch("object kind")


def _names_with_args(c: Cursor) -> list[QName]:
    names = [c.qname()]
    if c.at("("):
        c.skip_parens()
    while c.accept(","):
        names.append(c.qname())
        if c.at("("):
            c.skip_parens()
    return names


def rec_drop(c: Cursor) -> list[Change]:
    """DROP <object> [CONCURRENTLY] [IF EXISTS] name[(args)][, ...] [CASCADE|RESTRICT]."""
    c.expect("DROP")
    if c.at("TRIGGER") or c.at("POLICY") or c.at("RULE"):
        what = c.peek().up.lower()  # type: ignore[union-attr]
        c.i += 1
        c.accept("IF", "EXISTS")
        name = c.ident()
        c.expect("ON")
        table = c.qname()
        c.accept("CASCADE") or c.accept("RESTRICT")
        c.end()
        return [Change(f"drop_{what}", obj_kind=what, name=(table[0], name), table=table)]
    if c.at("ROLE") or c.at("USER") or c.at("GROUP") or c.at("OWNED"):
        return [Change("revoke", obj_kind="role", reason="drops a role or what it owns")]
    if c.at("CAST") or c.at("OPERATOR"):
        kind = c.peek().up.lower()  # type: ignore[union-attr]
        return [Change("drop", obj_kind=kind, names=())]
    kind, _ = _obj_kind(c)
    concurrently = c.accept("CONCURRENTLY")
    c.accept("IF", "EXISTS")
    names = _names_with_args(c)
    c.accept("CASCADE") or c.accept("RESTRICT")
    c.end()
    return [Change("drop", obj_kind=kind, names=tuple(names), concurrently=concurrently)]


def rec_alter_object(c: Cursor) -> list[Change]:
    """ALTER <object> [IF EXISTS] [ONLY] name[(args)] <RENAME TO | SET SCHEMA | OWNER TO | ...>."""
    c.expect("ALTER")
    kind, _ = _obj_kind(c)
    c.accept("IF", "EXISTS")
    c.accept("ONLY")
    name = c.qname()
    if kind == "function" and c.at("("):
        c.skip_parens()
    c.accept("*")
    if c.accept("RENAME", "TO"):
        new = c.ident()
        c.end()
        return [Change("rename", obj_kind=kind, name=name, new_name=new)]
    if c.accept("SET", "SCHEMA"):
        s = c.ident()
        c.end()
        return [Change("set_schema", obj_kind=kind, name=name, new_schema=s)]
    if c.accept("OWNER", "TO"):
        c.ident()
        c.end()
        return [Change("owner", obj_kind=kind, name=name)]
    if kind == "type":
        return _alter_type_rest(c, name)
    if kind == "table":
        return _alter_table_rest(c, name)
    if kind == "sequence":
        words = c.rest_words()
        if words in (["AS", "BIGINT"], ["AS", "INT8"]):
            return [Change("noop", reason="widens the sequence")]
        if words and words[0] in ("RESTART", "OWNED", "CACHE", "INCREMENT", "START", "NO", "CYCLE", "SET"):
            if not {"MAXVALUE", "MINVALUE", "AS"} & set(words):
                return [Change("noop")]
        raise NoMatch("ALTER SEQUENCE")
    if kind == "view" or kind == "materialized view":
        if c.accept("RENAME"):
            c.accept("COLUMN")
            old = c.ident()
            c.expect("TO")
            new = c.ident()
            c.end()
            return [Change("rename_column", obj_kind=kind, name=name, column=old, new_name=new)]
        words = c.rest_words()
        if words[:2] in (["ALTER", "COLUMN"],) or words[:1] in (["SET"], ["RESET"], ["CLUSTER"]):
            return [Change("noop")]
        raise NoMatch("ALTER VIEW")
    if kind == "function":
        words = c.rest_words()
        if words and words[0] in ("SECURITY", "STABLE", "IMMUTABLE", "VOLATILE", "SET", "RESET", "COST", "ROWS",
                                  "PARALLEL", "LEAKPROOF", "NOT", "STRICT", "CALLED", "RETURNS", "EXTERNAL"):
            return [Change("noop")]
        raise NoMatch("ALTER FUNCTION")
    if kind == "index":
        words = c.rest_words()
        if words and words[0] in ("SET", "RESET", "ATTACH", "ALTER"):
            return [Change("noop")]
        raise NoMatch("ALTER INDEX")
    raise NoMatch("ALTER")


def _alter_type_rest(c: Cursor, name: QName) -> list[Change]:
    if c.accept("ADD", "VALUE"):
        c.accept("IF", "NOT", "EXISTS")
        v = c.string()
        if c.accept("BEFORE") or c.accept("AFTER"):
            c.string()
        c.end()
        return [Change("enum_add_value", obj_kind="type", name=name, value=v)]
    if c.accept("RENAME", "VALUE"):
        old = c.string()
        c.expect("TO")
        new = c.string()
        c.end()
        return [Change("enum_rename_value", obj_kind="type", name=name, value=old, new_value=new)]
    # Domains.
    if c.accept("SET", "NOT", "NULL"):
        c.end()
        return [Change("set_not_null", obj_kind="type", name=name)]
    if c.accept("DROP", "NOT", "NULL"):
        c.end()
        return [Change("drop_not_null", obj_kind="type", name=name)]
    if c.accept("DROP", "DEFAULT"):
        c.end()
        return [Change("drop_default", obj_kind="type", name=name)]
    if c.accept("SET", "DEFAULT"):
        return [Change("set_default", obj_kind="type", name=name)]
    if c.accept("ADD", "CONSTRAINT"):
        cname = c.ident()
        c.expect("CHECK")
        c.skip_parens()
        not_valid = c.accept("NOT", "VALID")
        c.end()
        return [Change("add_constraint", obj_kind="type", name=name,
                       constraint=ConstraintSpec("check", cname, not_valid=not_valid))]
    if c.accept("DROP", "CONSTRAINT"):
        return [Change("noop")]
    if c.accept("VALIDATE", "CONSTRAINT"):
        cname = c.ident()
        c.end()
        return [Change("validate_constraint", obj_kind="type", name=name, value=cname)]
    raise NoMatch("ALTER TYPE")


def _alter_table_rest(c: Cursor, table: QName) -> list[Change]:
    if c.accept("ENABLE", "ROW", "LEVEL", "SECURITY") or c.accept("FORCE", "ROW", "LEVEL", "SECURITY"):
        c.end()
        return [Change("enable_rls", obj_kind="table", name=table)]
    if c.accept("DISABLE", "ROW", "LEVEL", "SECURITY") or c.accept("NO", "FORCE", "ROW", "LEVEL", "SECURITY"):
        c.end()
        return [Change("noop")]
    if c.accept("VALIDATE", "CONSTRAINT"):
        cname = c.ident()
        c.end()
        return [Change("validate_constraint", obj_kind="table", name=table, value=cname)]
    if c.at("ENABLE") or c.at("DISABLE"):
        enable = c.accept("ENABLE")
        if not enable:
            c.expect("DISABLE")
        if enable:
            c.accept("ALWAYS") or c.accept("REPLICA")
        if c.accept("TRIGGER"):
            trigger = "ALL" if c.accept("ALL") else "USER" if c.accept("USER") else c.ident()
            c.end()
            return [Change("enable_trigger" if enable else "disable_trigger", obj_kind="trigger", name=table,
                           table=table, value=trigger)]
        if c.accept("RULE"):
            c.ident()
            c.end()
            return [Change("noop")]
        raise NoMatch("ENABLE/DISABLE")
    if c.accept("ALTER", "CONSTRAINT"):
        c.ident()
        while not c.done:  # [NOT] DEFERRABLE, INITIALLY DEFERRED|IMMEDIATE, [NO] INHERIT, ENFORCED
            if not (c.accept("NOT") or c.accept("DEFERRABLE") or c.accept("INITIALLY") or c.accept("DEFERRED")
                    or c.accept("IMMEDIATE")):
                raise NoMatch("ALTER CONSTRAINT")
        return [Change("noop", reason="constraint timing only")]
    if c.at("RENAME") and not c.at("RENAME", "TO") and not c.at("RENAME", "CONSTRAINT"):
        c.expect("RENAME")
        c.accept("COLUMN")
        old = c.ident()
        c.expect("TO")
        new = c.ident()
        c.end()
        return [Change("rename_column", obj_kind="table", name=table, column=old, new_name=new)]
    if c.accept("RENAME", "CONSTRAINT"):
        old = c.ident()
        c.expect("TO")
        new = c.ident()
        c.end()
        return [Change("rename_constraint", obj_kind="table", name=table, value=old, new_value=new)]
    if c.accept("ADD"):
        cname = None
        if c.accept("CONSTRAINT"):
            cname = c.ident()
        if c.accept("PRIMARY", "KEY"):
            kind = "pk"
        elif c.accept("UNIQUE"):
            kind = "unique"
        else:
            raise NoMatch("ADD CONSTRAINT")
        c.expect("USING", "INDEX")
        idx = c.ident()
        _deferrable(c)
        c.end()
        return [Change("add_constraint", obj_kind="table", name=table,
                       constraint=ConstraintSpec(kind, cname, using_index=idx))]
    if c.accept("ALTER"):
        c.accept("COLUMN")
        col = c.ident()
        if c.accept("SET", "STATISTICS") or c.accept("SET", "STORAGE") or c.accept("SET", "COMPRESSION") \
                or c.at("SET", "(") or c.at("RESET", "("):
            return [Change("noop")]
        if c.accept("ADD", "GENERATED"):
            always = c.accept("ALWAYS")
            if not always:
                c.expect("BY", "DEFAULT")
            c.expect("AS", "IDENTITY")
            if c.at("("):
                c.skip_parens()
            c.end()
            return [Change("add_identity", obj_kind="table", name=table, column=col,
                           value="always" if always else "default")]
        if c.accept("SET", "GENERATED"):
            always = c.accept("ALWAYS")
            if not always:
                c.expect("BY", "DEFAULT")
            c.end()
            return [Change("add_identity", obj_kind="table", name=table, column=col,
                           value="always" if always else "default")]
        if c.accept("DROP", "IDENTITY"):
            c.accept("IF", "EXISTS")
            c.end()
            return [Change("drop_identity", obj_kind="table", name=table, column=col)]
        raise NoMatch("ALTER COLUMN")
    words = c.rest_words()
    if words[:2] in (["CLUSTER", "ON"], ["SET", "WITHOUT"], ["SET", "TABLESPACE"], ["SET", "LOGGED"],
                     ["SET", "UNLOGGED"], ["REPLICA", "IDENTITY"], ["SET", "ACCESS"], ["ATTACH", "PARTITION"],
                     ["SET", "("], ["RESET", "("]):
        return [Change("noop")]
    raise NoMatch("ALTER TABLE")


def _deferrable(c: Cursor) -> None:
    c.accept("NOT")
    c.accept("DEFERRABLE")
    if c.accept("INITIALLY"):
        c.accept("DEFERRED") or c.accept("IMMEDIATE")


def rec_create_function(c: Cursor) -> list[Change]:
    """CREATE [OR REPLACE] FUNCTION|PROCEDURE|AGGREGATE name (params) ...: name, body, parameters, language, volatility."""
    c.expect("CREATE")
    replace = c.accept("OR", "REPLACE")
    if not (c.accept("FUNCTION") or c.accept("PROCEDURE") or c.accept("AGGREGATE")):
        raise NoMatch("FUNCTION")
    name = c.qname()
    params: list[str] = []
    if c.at("("):
        start = c.i
        c.skip_parens()
        params = _param_names(c.toks[start + 1:c.i - 1])
    body = None
    language = volatility = returns = ""
    rest = c.toks[c.i:]
    for k, t in enumerate(rest):
        if t.kind == "dol" and body is None:
            inner = t.text[t.text.index("$", 1) + 1:]
            body = inner[: inner.rindex("$", 0, len(inner) - 1)]
        elif t.kind == "str" and body is None and k > 0 and rest[k - 1].up == "AS":
            body = t.text[1:-1].replace("''", "'")
        elif t.kind == "word" and t.up == "LANGUAGE" and k + 1 < len(rest):
            language = rest[k + 1].text.strip("'\"").lower()
        elif t.kind == "word" and t.up in ("IMMUTABLE", "STABLE", "VOLATILE"):
            volatility = t.up
        elif t.kind == "word" and t.up == "RETURNS" and k + 1 < len(rest) and not returns:
            returns = rest[k + 1].text.lower()
    return [Change("create_function", obj_kind="function", name=name, body=body, or_replace=replace,
                   extra={"params": tuple(params), "language": language, "returns": returns,
                          "volatility": volatility or "VOLATILE"})]  # Postgres' default


def _param_names(toks: list[Tok]) -> list[str]:
    """Names of the input parameters (positional order) of a function's parameter list; "" when unnamed."""
    groups: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        if t.text == "," and depth == 0:
            groups.append([])
        else:
            groups[-1].append(t)
    out = []
    for g in groups:
        if not g:
            continue
        mode = g[0].up if g[0].kind == "word" and g[0].up in ("IN", "OUT", "INOUT", "VARIADIC") else ""
        if mode:
            g = g[1:]
        if mode == "OUT":
            continue
        cut = next((k for k, t in enumerate(g) if t.up in ("DEFAULT", "=")), len(g))
        g = g[:cut]
        named = len(g) >= 2 and g[0].kind in ("word", "qid") and g[1].kind in ("word", "qid")
        out.append((g[0].text.strip('"') if g[0].kind == "qid" else g[0].text.lower()) if named else "")
    return out


def rec_create_matview(c: Cursor) -> list[Change]:
    c.expect("CREATE")
    c.expect("MATERIALIZED", "VIEW")
    c.accept("IF", "NOT", "EXISTS")
    name = c.qname()
    cols = None
    if c.at("("):
        cols = tuple(x.strip().strip('"') for x in c.skip_parens().split(","))
    if c.accept("USING"):
        c.ident()
    if c.accept("WITH") and c.at("("):
        c.skip_parens()
    if c.accept("TABLESPACE"):
        c.ident()
    c.expect("AS")
    # The query is parsed by the caller (analyze) from this offset.
    t = c.peek()
    if t is None:
        raise NoMatch("query")
    return [Change("create_view", obj_kind="materialized view", name=name, materialized=True,
                   view_columns=cols, extra={"query_pos": t.pos})]


def rec_create_policy(c: Cursor) -> list[Change]:
    c.expect("CREATE", "POLICY")
    name = c.ident()
    c.expect("ON")
    table = c.qname()
    restrictive = False
    if c.accept("AS"):
        restrictive = c.accept("RESTRICTIVE")
        if not restrictive:
            c.expect("PERMISSIVE")
    return [Change("create_policy", obj_kind="policy", name=(table[0], name), table=table,
                   restrictive=restrictive)]


def rec_alter_trigger(c: Cursor) -> list[Change]:
    """ALTER TRIGGER name ON table RENAME TO new (a name only: the trigger does the same)."""
    c.expect("ALTER", "TRIGGER")
    name = c.ident()
    c.expect("ON")
    table = c.qname()
    c.expect("RENAME", "TO")
    new = c.ident()
    c.end()
    return [Change("rename_trigger", obj_kind="trigger", name=(table[0], name), table=table, new_name=new)]


def rec_alter_policy(c: Cursor) -> list[Change]:
    c.expect("ALTER", "POLICY")
    name = c.ident()
    c.expect("ON")
    table = c.qname()
    if c.accept("RENAME", "TO"):
        c.ident()
        c.end()
        return [Change("noop")]
    return [Change("alter_policy", obj_kind="policy", name=(table[0], name), table=table)]


def rec_create_trigger(c: Cursor) -> list[Change]:
    c.expect("CREATE")
    c.accept("OR", "REPLACE")
    c.accept("CONSTRAINT")
    c.expect("TRIGGER")
    name = c.ident()
    timing = ""
    while not c.done and not c.at("ON"):
        t = c.peek()
        if t is not None and t.kind == "word" and t.up in ("BEFORE", "AFTER", "INSTEAD") and not timing:
            timing = t.up
        c.i += 1
    c.expect("ON")
    table = c.qname()
    fn: QName | None = None
    row_level = False
    while not c.done:
        if c.at("FOR", "EACH", "ROW") or c.at("FOR", "ROW"):
            row_level = True
        if c.accept("EXECUTE"):
            if not (c.accept("FUNCTION") or c.accept("PROCEDURE")):
                raise NoMatch("EXECUTE FUNCTION")
            fn = c.qname()
            break
        c.i += 1
    if fn is None:
        raise NoMatch("EXECUTE FUNCTION")
    return [Change("create_trigger", obj_kind="trigger", name=(table[0], name), table=table, function=fn,
                   extra={"timing": timing, "row_level": row_level})]


def rec_create_index(c: Cursor) -> list[Change]:
    """CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] table [USING m] (cols) ..."""
    c.expect("CREATE")
    unique = c.accept("UNIQUE")
    c.expect("INDEX")
    conc = c.accept("CONCURRENTLY")
    c.accept("IF", "NOT", "EXISTS")
    name = None
    if not c.at("ON"):
        name = c.ident()
    c.expect("ON")
    c.accept("ONLY")
    table = c.qname()
    if c.accept("USING"):
        c.ident()
    inside = c.skip_parens()
    cols = tuple(_index_col(inside[s:e]) for s, e in split_top_level(inside) if inside[s:e].strip())
    return [Change("create_index", obj_kind="index", name=(table[0], name or ""), table=table, unique=unique,
                   concurrently=conc, index_columns=cols)]


def _index_col(s: str) -> str:
    m = re.fullmatch(r'\s*("(?:[^"]|"")*"|`[^`]*`|[A-Za-z_][A-Za-z0-9_$]*)\s*(?:ASC|DESC)?\s*', s, re.IGNORECASE)
    if not m:
        return "(expr)"
    w = m.group(1)
    if w[0] in '"`':
        return w[1:-1]
    return w.lower()


def rec_rename_table(c: Cursor) -> list[Change]:
    """MySQL: RENAME TABLE a TO b[, c TO d]."""
    c.expect("RENAME", "TABLE")
    out = []
    while True:
        old = c.qname()
        c.expect("TO")
        new = c.qname()
        out.append(Change("rename", obj_kind="table", name=old, new_name=new[1]))
        if not c.accept(","):
            break
    c.end()
    return out


def rec_revoke(c: Cursor) -> list[Change]:
    c.expect("REVOKE")
    while not c.done and not c.at("ON") and not c.at("FROM"):
        c.i += 1
    names: list[QName] = []
    kind = "table"
    if c.accept("ON"):
        if c.accept("ALL"):
            return [Change("revoke", obj_kind="all", reason="revokes on ALL objects of a schema")]
        for words, k in _OBJ_WORDS:
            if c.accept(*words):
                kind = k
                break
        else:
            c.accept("LARGE", "OBJECT")
        names = _names_with_args(c)
        c.expect("FROM")
    elif c.accept("FROM"):
        return [Change("revoke", obj_kind="role", reason="revokes role membership")]
    return [Change("revoke", obj_kind=kind, names=tuple(names))]


RECOGNIZERS: list[tuple[tuple[str, ...], Recognizer]] = [
    (("DROP",), rec_drop),
    (("ALTER", "POLICY"), rec_alter_policy),
    (("ALTER", "TRIGGER"), rec_alter_trigger),
    (("ALTER",), rec_alter_object),
    (("CREATE", "MATERIALIZED", "VIEW"), rec_create_matview),
    (("CREATE", "POLICY"), rec_create_policy),
    (("CREATE", "TRIGGER"), rec_create_trigger),
    (("CREATE", "CONSTRAINT", "TRIGGER"), rec_create_trigger),
    (("CREATE", "OR", "REPLACE", "TRIGGER"), rec_create_trigger),
    (("CREATE", "FUNCTION"), rec_create_function),
    (("CREATE", "PROCEDURE"), rec_create_function),
    (("CREATE", "AGGREGATE"), rec_create_function),
    (("CREATE", "OR", "REPLACE", "FUNCTION"), rec_create_function),
    (("CREATE", "OR", "REPLACE", "PROCEDURE"), rec_create_function),
    (("CREATE", "OR", "REPLACE", "AGGREGATE"), rec_create_function),
    (("CREATE", "INDEX"), rec_create_index),
    (("CREATE", "UNIQUE", "INDEX"), rec_create_index),
    (("RENAME", "TABLE"), rec_rename_table),
    (("REVOKE",), rec_revoke),
]


def recognize(code: str, skel: str, words: list[str], dialect: str, default_schema: str) -> list[Change] | None:
    """Changes of a statement (``code`` and its skeleton) matched by one of the recognizers, or None."""
    toks: list[Tok] | None = None
    for prefix, fn in RECOGNIZERS:
        if tuple(words[: len(prefix)]) != prefix:
            continue
        if toks is None:
            toks = tokenize(code, skel)
        try:
            return fn(Cursor(toks, dialect, default_schema))
        except NoMatch:
            continue
    return None
