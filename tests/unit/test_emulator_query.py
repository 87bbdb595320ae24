"""The QBO SQL subset parser (no server)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from infra.qbo_emulator.query import parse
from infra.qbo_emulator.util import QboError


def test_full_statement() -> None:
    q = parse(
        "SELECT * FROM Invoice WHERE CustomerRef = '58' AND TotalAmt >= 10.5 AND Id IN ('1', '2') "
        "AND DocNumber LIKE 'BK-%' ORDERBY TxnDate DESC, Id STARTPOSITION 11 MAXRESULTS 1000"
    )
    assert q.entity == "Invoice" and q.start == 11 and q.max_results == 1000
    assert [(c.field, c.op) for c in q.conds] == [
        ("CustomerRef", "="),
        ("TotalAmt", ">="),
        ("Id", "in"),
        ("DocNumber", "like"),
    ]
    assert q.conds[1].value == Decimal("10.5") and q.conds[2].value == ["1", "2"]
    assert q.order == [("TxnDate", True), ("Id", False)]


def test_escaped_quote_count_and_projection() -> None:
    assert parse("select * from Customer where DisplayName = 'O\\'Brien'").conds[0].value == "O'Brien"
    assert parse("select count(*) from Customer").count
    assert parse("SELECT *, Sku FROM Item ORDER BY Name").order == [("Name", False)]
    assert parse("select * from Customer where Active = false").conds[0].value is False


@pytest.mark.parametrize(
    "bad",
    [
        "select * from Customer where DisplayName = 'O'Brien'",
        "select * from Customer where A = '1' or B = '2'",
        "select * from Unknown",
        "select * from Customer maxresults 1001",
        "select * Customer",
        "select * from Customer where DisplayName = 'unterminated",
    ],
)
def test_parse_errors_are_4000(bad: str) -> None:
    with pytest.raises(QboError) as exc:
        parse(bad)
    assert exc.value.code == "4000"
