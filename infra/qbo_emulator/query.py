"""QBO's SQL subset: SELECT * | COUNT(*) FROM Entity [WHERE ...] [ORDERBY ...] [STARTPOSITION n]
[MAXRESULTS m]."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .store import BY_LOWER, NAME_LIST, Realm, id_sort_key
from .util import QboError, parse_datetime

TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>'(?:\\.|[^'\\])*')
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),*])
  | (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<word>[A-Za-z_][\w.]*)
""",
    re.VERBOSE,
)
KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "orderby",
    "order",
    "by",
    "asc",
    "desc",
    "startposition",
    "maxresults",
    "in",
    "like",
    "count",
    "or",
    "true",
    "false",
}


def parse_error(detail: str) -> QboError:
    return QboError("4000", "Error parsing query", f"QueryParserError: {detail}")


@dataclass
class Cond:
    field: str
    op: str
    value: Any  # str | Decimal | bool | list


@dataclass
class Query:
    entity: str
    count: bool = False
    conds: list[Cond] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    start: int = 1
    max_results: int = 100


def tokenize(text: str) -> list[tuple[str, str]]:
    """Raises: QboError 4000 on an unexpected character or an unterminated string."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m:
            raise parse_error(f'Encountered "{text[pos : pos + 10]}" at line 1, column {pos + 1}.')
        kind = m.lastgroup or ""
        if kind != "ws":
            val = m.group(kind)
            if kind == "str":
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            out.append((kind, val))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def kw(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].lower() == word:
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.kw(word):
            tok = self.peek()
            raise parse_error(f"Expected {word.upper()} but found {tok[1] if tok else 'end of statement'}")

    def take(self, kind: str) -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind:
            raise parse_error(f"Unexpected {tok[1] if tok else 'end of statement'}")
        self.i += 1
        return tok[1]

    def punct(self, ch: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "punct" and tok[1] == ch:
            self.i += 1
            return True
        return False

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise parse_error("Missing value")
        self.i += 1
        if tok[0] == "str":
            return tok[1]
        if tok[0] == "num":
            return Decimal(tok[1])
        if tok[0] == "word" and tok[1].lower() in ("true", "false"):
            return tok[1].lower() == "true"
        raise parse_error(f"Invalid value {tok[1]}")


def parse(text: str, max_allowed: int = 1000) -> Query:
    """Parse a statement.

    Raises:
        QboError: 4000 on a syntax error, an unknown entity, OR, or MAXRESULTS above the limit.
    """
    p = _Parser(tokenize(text.strip().rstrip(";")))
    p.expect_kw("select")
    count = False
    if p.kw("count"):
        if not (p.punct("(") and p.punct("*") and p.punct(")")):
            raise parse_error("Expected COUNT(*)")
        count = True
    else:
        # Projections are accepted (SELECT *, Sku / SELECT Id, Name) but full objects are returned.
        while True:
            if not p.punct("*"):
                p.take("word")
            if not p.punct(","):
                break
    p.expect_kw("from")
    name = p.take("word")
    entity = BY_LOWER.get(name.lower())
    if entity is None:
        raise QboError("4000", "Error parsing query", f"QueryValidationError: Invalid entity name: {name}")
    q = Query(entity=entity, count=count)
    if p.kw("where"):
        while True:
            fld = p.take("word")
            if fld.lower() in KEYWORDS:
                raise parse_error(f"Unexpected keyword {fld}")
            tok = p.peek()
            if tok and tok[0] == "op":
                p.i += 1
                op = tok[1]
                if op in ("!=", "<>"):
                    raise parse_error(f"Operator {op} is not supported")
                q.conds.append(Cond(fld, op, p.value()))
            elif p.kw("in"):
                if not p.punct("("):
                    raise parse_error("Expected ( after IN")
                vals = [p.value()]
                while p.punct(","):
                    vals.append(p.value())
                if not p.punct(")"):
                    raise parse_error("Expected ) to close IN list")
                q.conds.append(Cond(fld, "in", vals))
            elif p.kw("like"):
                val = p.value()
                if not isinstance(val, str):
                    raise parse_error("LIKE needs a quoted string")
                q.conds.append(Cond(fld, "like", val))
            else:
                raise parse_error(f"Expected an operator after {fld}")
            if p.kw("or"):
                raise parse_error("OR is not supported")
            if not p.kw("and"):
                break
    if p.kw("orderby") or (p.kw("order") and (p.expect_kw("by") or True)):
        while True:
            fld = p.take("word")
            desc = False
            if p.kw("desc"):
                desc = True
            else:
                p.kw("asc")
            q.order.append((fld, desc))
            if not p.punct(","):
                break
    if p.kw("startposition"):
        q.start = int(Decimal(p.take("num")))
    if p.kw("maxresults"):
        q.max_results = int(Decimal(p.take("num")))
    if p.peek() is not None:
        raise parse_error(f'Encountered "{p.peek()[1]}" after the end of the statement')  # type: ignore[index]
    if q.max_results > max_allowed:
        raise QboError(
            "4000",
            "Error parsing query",
            f"QueryValidationError: MAXRESULTS value {q.max_results} exceeds the maximum of {max_allowed}",
        )
    if q.start < 1 or q.max_results < 1:
        raise parse_error("STARTPOSITION and MAXRESULTS must be positive")
    return q


def _lookup(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        match = next((k for k in cur if k.lower() == part.lower()), None)
        if match is None:
            return None
        cur = cur[match]
    # A reference compares by its value (CustomerRef = '58'); an e-mail object by its address.
    if isinstance(cur, dict):
        if "value" in cur:
            return cur["value"]
        if "Address" in cur:
            return cur["Address"]
    return cur


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Make two values comparable: numbers, datetimes, booleans, else case-sensitive strings."""
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower(), str(b).lower()
    try:
        return Decimal(str(a)), Decimal(str(b))
    except InvalidOperation:
        pass
    sa, sb = str(a), str(b)
    if len(sa) >= 10 and len(sb) >= 10 and sa[4:5] == "-" and sb[4:5] == "-":
        da, db = parse_datetime(sa), parse_datetime(sb)
        if da and db:
            return da, db
    return sa, sb


def _matches(obj: dict[str, Any], cond: Cond) -> bool:
    actual = _lookup(obj, cond.field)
    if actual is None:
        return False
    if cond.op == "in":
        return any(_compare(actual, "=", v) for v in cond.value)
    if cond.op == "like":
        pattern = "^" + ".*".join(re.escape(part) for part in cond.value.split("%")) + "$"
        return re.match(pattern, str(actual), re.IGNORECASE | re.DOTALL) is not None
    return _compare(actual, cond.op, cond.value)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    a, b = _coerce(actual, expected)
    if op == "=":
        return bool(a == b)
    if op == "<":
        return bool(a < b)
    if op == ">":
        return bool(a > b)
    if op == "<=":
        return bool(a <= b)
    return bool(a >= b)


def execute(realm: Realm, q: Query) -> dict[str, Any]:
    """Run a parsed query against the realm's books; returns the QueryResponse object."""
    from .entities import present

    rows = list(realm.objects[q.entity].values())
    if q.entity in NAME_LIST and not any(c.field.lower() == "active" for c in q.conds):
        rows = [r for r in rows if r.get("Active") is not False]
    rows = [r for r in rows if all(_matches(r, c) for c in q.conds)]
    if q.count:
        return {"totalCount": len(rows)}
    rows.sort(key=id_sort_key)
    for fld, desc in reversed(q.order):
        present_rows = [r for r in rows if _lookup(r, fld) is not None]
        missing = [r for r in rows if _lookup(r, fld) is None]
        present_rows.sort(key=lambda r, f=fld: _sort_key(_lookup(r, f)), reverse=desc)
        rows = present_rows + missing
    page = rows[q.start - 1 : q.start - 1 + q.max_results]
    if not page:
        return {}
    return {q.entity: [present(q.entity, r) for r in page], "startPosition": q.start, "maxResults": len(page)}


def _sort_key(value: Any) -> tuple[int, Any]:
    try:
        return (0, Decimal(str(value)))
    except InvalidOperation:
        dt = parse_datetime(str(value)) if len(str(value)) >= 10 else None
        if dt:
            return (1, dt.timestamp())
        return (2, str(value).lower())
