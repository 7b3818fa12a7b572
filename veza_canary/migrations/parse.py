"""The one statement scanner: statements, comments, strings, suppression directives, DO bodies.

sqlglot parses one statement at a time; this module decides where statements start
and end, with the quoting rules of each dialect, so that a ``;`` or a scary word
inside a comment, a string or a dollar-quoted body never splits or triggers
anything. Every statement keeps its offsets in the file (for ``file:line:col``) and
two views of its text:

* ``code``: comments blanked (same length, newlines kept) -- what sqlglot parses;
* ``skeleton``: comments *and* string/dollar-quoted contents blanked -- what the
  keyword recognizers look at, so ``COMMENT ON t IS 'drop table'`` has no DROP.

Only ``lex`` knows the quoting rules. Everything else that needs structure works on
the skeleton through the helpers at the end of this module: ``tokens`` (the
recognizers' tokens), ``top_level_items`` and ``has_top_level_comma`` (brackets and
commas, quoted identifiers skipped whole). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

#: A suppression directive: ``-- veza-canary: allow <rule>[, <rule>] because <reason>``
#: (``allow-file`` for the whole file).
_DIRECTIVE_RE = re.compile(
    r"veza-canary\s*:\s*(?P<scope>allow-file|allow)\b\s*(?P<rules>[A-Za-z0-9_,\s-]*?)"
    r"(?:\s+because\b\s*(?P<reason>.*?))?\s*(?:\*/)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_DIRECTIVE_HINT_RE = re.compile(r"veza-canary\s*:|squawk-ignore", re.IGNORECASE)
#: ``-- veza-canary: accept VC101[, VC102] "reason"`` (one statement; the reason in double or single quotes).
_ACCEPT_RE = re.compile(
    r"veza-canary\s*:\s*accept\b\s*(?P<rules>[A-Za-z0-9_,\s-]*?)\s*(?:\"(?P<r1>[^\"]*)\"|'(?P<r2>[^']*)')?"
    r"\s*(?:\*/)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
#: squawk's own comments, honoured because real histories carry them: ``-- squawk-ignore rule[, rule]``.
_SQUAWK_RE = re.compile(r"^\s*squawk-ignore(?P<file>-file)?\s+(?P<rules>[a-z0-9_,\s-]+?)\s*(?:\*/)?\s*$",
                        re.IGNORECASE)
#: squawk rule -> the rule of ours that judges the same thing (squawk rules without one are not ours to waive).
SQUAWK_RULES = {
    "ban-drop-column": "VC101", "ban-drop-table": "VC102", "renaming-column": "VC110", "renaming-table": "VC111",
    "changing-column-type": "VC120", "adding-required-field": "VC121", "adding-not-nullable-field": "VC122",
    "disallowed-unique-constraint": "VC130", "adding-primary-key-constraint": "VC131",
    "adding-foreign-key-constraint": "VC133", "constraint-missing-not-valid": "VC132",
    "require-concurrent-index-creation": "VC201", "adding-field-with-default": "VC202",
    "ban-drop-not-null": "VC205",
}

_PG_SPECIAL = re.compile(r"--|/\*|'|\"|\$|;")
_MY_SPECIAL = re.compile(r"--|#|/\*|'|\"|`|;")
#: A statement that only moves data; its body is skipped in one regex match, strings included.
_DML_START = re.compile(r"\s*(?:INSERT|UPDATE|DELETE|COPY|MERGE|VALUES|TRUNCATE|REPLACE)\b", re.IGNORECASE)
#: Stops before anything that needs the careful loop: ; comments, E'' strings, $ quotes, backticks, #.
_DML_FAST = {
    "postgres": re.compile(r"""(?:[^;'"\-/$eE]++|[eE](?!')|'[^']*+(?:''[^']*+)*+'(?!')|"[^"]*+(?:""[^"]*+)*+"(?!")"""
                           r"""|-(?!-)|/(?!\*))*+"""),
    "mysql": re.compile(r"""(?:[^;'"\-/#`\\]++|'[^'\\]*+(?:(?:''|\\.)[^'\\]*+)*+'(?!')"""
                        r"""|"[^"\\]*+(?:(?:""|\\.)[^"\\]*+)*+"(?!")|-(?!-)|/(?!\*))*+""", re.DOTALL),
}
# Non-ASCII is written [^\x00-\x7f], not \x80-\U0010ffff: the same set, much cheaper to compile.
_DOLLAR_TAG = re.compile(r"\$((?:[A-Za-z_]|[^\x00-\x7f])(?:[A-Za-z0-9_]|[^\x00-\x7f])*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$]|[^\x00-\x7f]")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class LexError(ValueError):
    """The file cannot be split into statements (unterminated string, comment or body)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(slots=True)
class Directive:
    """One suppression comment."""

    line: int
    col: int
    file_level: bool
    rules: tuple[str, ...]
    reason: str
    text: str

    @property
    def valid(self) -> bool:
        return bool(self.rules) and bool(self.reason.strip())


@dataclass(slots=True)
class Statement:
    """One statement of a file, with its position and two masked views of its text."""

    start: int
    end: int
    line: int
    col: int
    code: str
    skeleton: str
    directives: list[Directive] = field(default_factory=list)

    def words(self, n: int = 8) -> list[str]:
        """The first ``n`` bare words of the skeleton, upper-cased."""
        out: list[str] = []
        for m in _WORD_RE.finditer(self.skeleton):
            out.append(m.group(0).upper())
            if len(out) >= n:
                break
        return out


@dataclass(slots=True)
class LexedFile:
    text: str
    statements: list[Statement]
    file_directives: list[Directive]
    bad_directives: list[Directive]

    def position(self, offset: int) -> tuple[int, int]:
        return position_in(self.text, offset)


def normalize_text(text: str) -> str:
    """Drop a BOM and turn CRLF/CR line ends into LF (columns stay right)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def line_starts_of(text: str) -> list[int]:
    starts = [0]
    find = text.find
    i = find("\n")
    while i != -1:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return starts


def position(line_starts: list[int], offset: int) -> tuple[int, int]:
    """1-based (line, column) of an offset."""
    i = bisect_right(line_starts, offset) - 1
    return i + 1, offset - line_starts[i] + 1


def position_in(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of one offset, without a table of line starts."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _blank(s: str) -> str:
    """Same length, newlines kept, everything else a space."""
    if "\n" not in s:
        return " " * len(s)
    return "".join("\n" if c == "\n" else " " for c in s)


def lex(text: str, dialect: str = "postgres", *, base: int = 0, plpgsql: bool = False) -> tuple[
        list[tuple[int, int, str, str]], list[tuple[int, int, str]]]:
    """Split ``text`` at top-level semicolons.

    Returns ``(statements, comments)``: statements as ``(start, end, code, skeleton)``
    with offsets relative to ``text`` plus ``base``; comments as ``(start, end, body)``.
    Empty statements are dropped. Raises LexError on an unterminated construct.
    """
    mysql = dialect == "mysql"
    special = _MY_SPECIAL if mysql else _PG_SPECIAL
    n = len(text)
    code_parts: list[str] = []
    skel_parts: list[str] = []
    stmts: list[tuple[int, int, str, str]] = []
    comments: list[tuple[int, int, str]] = []
    stmt_start = 0
    pos = 0
    search = special.search
    fast = _DML_FAST["mysql" if mysql else "postgres"]
    fresh = True  # at a point where a statement may start: try the DML fast path
    seen_code = False  # the current statement has code (not just whitespace and comments)

    def flush(end: int) -> None:
        code = "".join(code_parts)
        skel = "".join(skel_parts)
        code_parts.clear()
        skel_parts.clear()
        if skel.strip():
            # Trim leading whitespace so the statement's position is its first real character.
            lead = len(skel) - len(skel.lstrip())
            stmts.append((base + stmt_start + lead, base + end, code[lead:], skel[lead:]))

    while True:
        if fresh:
            dm0 = _DML_START.match(text, pos)
            if dm0 is not None:
                j = fast.match(text, dm0.end()).end()
                chunk = text[pos:j]
                code_parts.append(chunk)
                skel_parts.append(chunk)
                pos = j
                seen_code = True
            fresh = False
        m = search(text, pos)
        if m is None:
            chunk = text[pos:]
            code_parts.append(chunk)
            skel_parts.append(chunk)
            flush(n)
            break
        i = m.start()
        tok = m.group(0)
        if i > pos:
            chunk = text[pos:i]
            code_parts.append(chunk)
            skel_parts.append(chunk)
            if not seen_code and not chunk.isspace():
                seen_code = True
        if tok == ";":
            flush(i)
            code_parts.clear()
            skel_parts.clear()
            stmt_start = i + 1
            pos = i + 1
            fresh = True
            seen_code = False
            continue
        if tok == "--" or tok == "#":
            if mysql and tok == "--" and i + 2 < n and text[i + 2] not in " \t\n":
                # MySQL needs whitespace after "--" for a comment; "--x" is two minus signs.
                code_parts.append("-")
                skel_parts.append("-")
                pos = i + 1
                continue
            j = text.find("\n", i)
            j = n if j == -1 else j
            comments.append((base + i, base + j, text[i + len(tok):j]))
            blank = " " * (j - i)
            code_parts.append(blank)
            skel_parts.append(blank)
            pos = j
            fresh = not seen_code
            continue
        if tok == "/*":
            if mysql and text.startswith("/*!", i):
                # MySQL executable comment: its body is code. Keep it, blank the markers.
                k = i + 3
                while k < n and text[k].isdigit():
                    k += 1
                j = text.find("*/", k)
                if j == -1:
                    raise LexError("unterminated /*! comment", base + i)
                marker = " " * (k - i)
                code_parts.append(marker)
                skel_parts.append(marker)
                # Re-lex the inside as part of the statement by splicing: simplest is to
                # treat it as plain code (MySQL versioned comments hold single statements).
                inner = text[k:j]
                code_parts.append(inner)
                skel_parts.append(inner)
                code_parts.append("  ")
                skel_parts.append("  ")
                pos = j + 2
                continue
            j = _block_comment_end(text, i, nested=not mysql)
            if j == -1:
                raise LexError("unterminated /* comment", base + i)
            comments.append((base + i, base + j, text[i + 2:j - 2]))
            blank = _blank(text[i:j])
            code_parts.append(blank)
            skel_parts.append(blank)
            pos = j
            fresh = not seen_code
            continue
        if tok == "'":
            backslash = mysql or (i > 0 and text[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR.match(text[i - 2])))
            j = _string_end(text, i, "'", backslash)
            if j == -1:
                raise LexError("unterminated string literal", base + i)
            code_parts.append(text[i:j])
            skel_parts.append("'" + _blank(text[i + 1:j - 1]) + "'")
            pos = j
            seen_code = True
            continue
        if tok == '"':
            j = _string_end(text, i, '"', mysql)
            if j == -1:
                raise LexError("unterminated quoted identifier", base + i)
            chunk = text[i:j]
            code_parts.append(chunk)
            # A MySQL "string" is a string; a Postgres "identifier" stays visible.
            skel_parts.append('"' + _blank(chunk[1:-1]) + '"' if mysql else chunk)
            pos = j
            seen_code = True
            continue
        if tok == "`":
            j = _string_end(text, i, "`", False)
            if j == -1:
                raise LexError("unterminated quoted identifier", base + i)
            chunk = text[i:j]
            code_parts.append(chunk)
            skel_parts.append(chunk)
            pos = j
            continue
        # "$": a dollar-quote opener, unless part of an identifier or a $1 parameter.
        dm = _DOLLAR_TAG.match(text, i)
        if dm is None or (i > 0 and _IDENT_CHAR.match(text[i - 1])):
            code_parts.append("$")
            skel_parts.append("$")
            pos = i + 1
            continue
        tag = dm.group(0)
        j = text.find(tag, dm.end())
        if j == -1:
            raise LexError(f"unterminated dollar-quoted string {tag}", base + i)
        j += len(tag)
        code_parts.append(text[i:j])
        skel_parts.append(tag + _blank(text[dm.end():j - len(tag)]) + tag)
        pos = j
    return stmts, comments


def _block_comment_end(text: str, i: int, *, nested: bool) -> int:
    """Offset just past the comment opened at ``i`` (Postgres comments nest), or -1."""
    if not nested:
        j = text.find("*/", i + 2)
        return -1 if j == -1 else j + 2
    depth = 0
    k = i
    n = len(text)
    while k < n:
        if text.startswith("/*", k):
            depth += 1
            k += 2
        elif text.startswith("*/", k):
            depth -= 1
            k += 2
            if depth == 0:
                return k
        else:
            nxt = min((x for x in (text.find("/*", k), text.find("*/", k)) if x != -1), default=-1)
            if nxt == -1:
                return -1
            k = nxt
    return -1


_QUOTED = {
    ("'", False): re.compile(r"'[^']*+(?:''[^']*+)*+'(?!')"),
    ("'", True): re.compile(r"'[^'\\]*+(?:(?:''|\\.)[^'\\]*+)*+'(?!')", re.DOTALL),
    ('"', False): re.compile(r'"[^"]*+(?:""[^"]*+)*+"(?!")'),
    ('"', True): re.compile(r'"[^"\\]*+(?:(?:""|\\.)[^"\\]*+)*+"(?!")', re.DOTALL),
    ("`", False): re.compile(r"`[^`]*+(?:``[^`]*+)*+`(?!`)"),
}


def _string_end(text: str, i: int, q: str, backslash: bool) -> int:
    """Offset just past the quoted token opened at ``i`` (doubled quotes escape), or -1."""
    m = _QUOTED[(q, backslash)].match(text, i)
    return m.end() if m else -1


def _string_end_slow(text: str, i: int, q: str, backslash: bool) -> int:
    """Reference implementation of ``_string_end`` (kept for the property test)."""
    k = i + 1
    n = len(text)
    while True:
        j = text.find(q, k)
        if j == -1:
            return -1
        if backslash:
            # Count the backslashes right before the quote.
            b = j - 1
            while b >= k and text[b] == "\\":
                b -= 1
            if (j - 1 - b) % 2 == 1:
                k = j + 1
                continue
        if j + 1 < n and text[j + 1] == q:
            k = j + 2
            continue
        return j + 1


def parse_directive(body: str) -> tuple[bool, tuple[str, ...], str] | None:
    """``(file_level, rules, reason)`` of a suppression comment body, or None if it is not one.

    Three spellings: ``veza-canary: allow <rules> because <reason>`` (``allow-file`` for the
    whole file), ``veza-canary: accept <rules> "<reason>"``, and squawk's
    ``squawk-ignore[-file] <squawk rules>`` (mapped through ``SQUAWK_RULES``; its reason
    is the comment itself, since squawk asks for none).
    """
    if not _DIRECTIVE_HINT_RE.search(body):
        return None
    text = body.strip()
    sq = _SQUAWK_RE.match(text)
    if sq is not None:
        names = [r.strip().lower() for r in re.split(r"[,\s]+", sq.group("rules")) if r.strip()]
        codes = tuple(dict.fromkeys(SQUAWK_RULES[n].lower() for n in names if n in SQUAWK_RULES))
        if not codes:
            return None  # only squawk rules we have no counterpart for
        return (bool(sq.group("file")), codes, f"squawk-ignore {', '.join(names)}")
    if not re.search(r"veza-canary\s*:", text, re.IGNORECASE):
        return None
    acc = _ACCEPT_RE.search(text)
    if acc is not None:
        rules = tuple(r.strip().lower() for r in re.split(r"[,\s]+", acc.group("rules") or "") if r.strip())
        return (False, rules, (acc.group("r1") or acc.group("r2") or "").strip())
    m = _DIRECTIVE_RE.search(text)
    if m is None:
        return (False, (), "")
    rules = tuple(r.strip().lower() for r in re.split(r"[,\s]+", m.group("rules") or "") if r.strip())
    reason = (m.group("reason") or "").strip()
    return (m.group("scope").lower() == "allow-file", rules, reason)


def lex_file(text: str, dialect: str = "postgres") -> LexedFile:
    """Split a normalized file into statements and attach suppression directives."""
    raw, comments = lex(text, dialect)
    statements = []
    line, at = 1, 0  # the line of offset ``at``: counted onwards, statement by statement
    count, rfind = text.count, text.rfind
    for s, e, code, skel in raw:
        line += count("\n", at, s)
        at = s
        statements.append(Statement(s, e, line, s - rfind("\n", 0, s), code, skel))
    file_dirs: list[Directive] = []
    bad: list[Directive] = []
    for cs, _ce, body in comments:
        parsed = parse_directive(body)
        if parsed is None:
            continue
        file_level, rules, reason = parsed
        line, col = position_in(text, cs)
        d = Directive(line, col, file_level, rules, reason, body.strip())
        if not rules:
            bad.append(d)
            continue
        if file_level:
            file_dirs.append(d)
            continue
        target = _attach(statements, cs, text)
        if target is None:
            bad.append(d)
        else:
            target.directives.append(d)
    return LexedFile(text, statements, file_dirs, bad)


def _attach(statements: list[Statement], offset: int, text: str) -> Statement | None:
    """The statement a comment at ``offset`` belongs to.

    Inside a statement: that one. On the same line right after a statement's ``;``:
    that one. Otherwise: the next statement.
    """
    prev = None
    for st in statements:
        if st.start <= offset < st.end:
            return st
        if offset < st.start:
            if prev is not None:
                tail = text[prev.end:offset]
                if "\n" not in tail:
                    return prev
            return st
        prev = st
    if prev is not None and "\n" not in text[prev.end:offset]:
        return prev
    return None


def word_spans(skeleton: str) -> list[tuple[str, int, int]]:
    """Bare words of a skeleton with their offsets (upper-cased)."""
    return [(m.group(0).upper(), m.start(), m.end()) for m in _WORD_RE.finditer(skeleton)]


def dollar_bodies(code: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the inside of each dollar-quoted string in ``code``."""
    out = []
    pos = 0
    while True:
        i = code.find("$", pos)
        if i == -1:
            return out
        dm = _DOLLAR_TAG.match(code, i)
        if dm is None or (i > 0 and _IDENT_CHAR.match(code[i - 1])):
            pos = i + 1
            continue
        tag = dm.group(0)
        j = code.find(tag, dm.end())
        if j == -1:
            return out
        out.append((dm.end(), j))
        pos = j + len(tag)


# --- structure of a skeleton (shared by recognize, shapes and tablebody) ----------------------

#: Brackets and commas of a skeleton; quoted identifiers (visible there) are skipped whole.
_STRUCT_RE = re.compile(r"\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|[(),]")


def top_level_items(skel: str, open_at: int, end: int | None = None) -> tuple[int, list[tuple[int, int]]] | None:
    """``(close, items)`` of the bracket opened at ``open_at``: its closing offset and the
    ``(start, end)`` of each comma-separated item inside; None if it is not closed."""
    depth = 0
    start = open_at + 1
    items: list[tuple[int, int]] = []
    for t in _STRUCT_RE.finditer(skel, open_at, len(skel) if end is None else end):
        c = t.group(0)
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                items.append((start, t.start()))
                return t.start(), items
        elif c == "," and depth == 1:
            items.append((start, t.start()))
            start = t.end()
    return None


def has_top_level_comma(skel: str, start: int = 0) -> bool:
    """A comma outside every bracket from ``start`` on (several items or actions)."""
    depth = 0
    for t in _STRUCT_RE.finditer(skel, start):
        c = t.group(0)
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == ",":
            if depth == 0:
                return True
    return False


def split_top_level(skel: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each comma-separated part of ``skel`` outside every bracket."""
    depth = 0
    start = 0
    out: list[tuple[int, int]] = []
    for t in _STRUCT_RE.finditer(skel):
        c = t.group(0)
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            out.append((start, t.start()))
            start = t.end()
    out.append((start, len(skel)))
    return out


#: Tokens of a skeleton. Strings and dollar-quoted bodies are blanked there, so their
#: extent is read from the skeleton and their text from the code at the same offsets.
_TOKEN_RE = re.compile(
    r"""\s+
    |(?P<qid>"(?:[^"]|"")*")
    |(?P<bq>`(?:[^`]|``)*`)
    |(?P<str>[eE]?'[ \n]*')
    |(?P<dol>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$[^$]*?\$(?P=tag)\$)
    |(?P<word>(?:[A-Za-z_]|[^\x00-\x7f])(?:[A-Za-z0-9_$]|[^\x00-\x7f])*)
    |(?P<num>[0-9]+(?:\.[0-9]*)?)
    |(?P<op>::|:=|<>|!=|<=|>=|=>|\|\||.)""",
    re.VERBOSE | re.DOTALL,
)


def tokens(code: str, skel: str) -> list[tuple[str, str, int]]:
    """``(kind, text, offset)`` of each token of a statement (``skel`` is its skeleton).

    Kinds: qid (double-quoted), bq (backquoted), str, dol (dollar-quoted), word, num, op.
    """
    out = []
    for m in _TOKEN_RE.finditer(skel):
        kind = m.lastgroup
        if kind is None:
            continue
        if kind == "tag":
            kind = "dol"
        s, e = m.span(kind)
        out.append((kind, code[s:e], s))
    return out
