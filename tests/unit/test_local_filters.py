"""The Lambda filter-pattern language used by the local event source mappings."""

import pytest

from infra.local.filters import matches, matches_any, sqs_filter_view


def ddb(event_name: str = "INSERT", **image: dict) -> dict:
    return {"eventName": event_name, "dynamodb": {"NewImage": image}}


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"eventName": ["INSERT"]}, ddb("INSERT"), True),
        ({"eventName": ["INSERT"]}, ddb("MODIFY"), False),
        ({"dynamodb": {"NewImage": {"rtype": {"S": ["event"]}}}}, ddb(rtype={"S": "event"}), True),
        ({"dynamodb": {"NewImage": {"rtype": {"S": ["event"]}}}}, ddb(rtype={"S": "object"}), False),
        ({"dynamodb": {"NewImage": {"dirty": {"BOOL": [True]}}}}, ddb(dirty={"BOOL": True}), True),
        ({"dynamodb": {"NewImage": {"dirty": {"BOOL": [True]}}}}, ddb(dirty={"BOOL": False}), False),
        ({"dynamodb": {"NewImage": {"dirty": {"BOOL": [True]}}}}, ddb(), False),
        ({"a": [{"prefix": "inv-"}]}, {"a": "inv-1"}, True),
        ({"a": [{"prefix": "inv-"}]}, {"a": "pay-1"}, False),
        ({"a": [{"suffix": ".pdf"}]}, {"a": "x.pdf"}, True),
        ({"a": [{"equals-ignore-case": "PAID"}]}, {"a": "paid"}, True),
        ({"a": [{"anything-but": ["void", "deleted"]}]}, {"a": "open"}, True),
        ({"a": [{"anything-but": ["void", "deleted"]}]}, {"a": "void"}, False),
        ({"a": [{"anything-but": "void"}]}, {}, False),
        ({"a": [{"anything-but": {"prefix": "tmp"}}]}, {"a": "tmp-1"}, False),
        ({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 5}, True),
        ({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 0}, False),
        ({"n": [{"numeric": ["=", 3]}]}, {"n": 3.0}, True),
        ({"n": [{"numeric": [">", 1]}]}, {"n": "5"}, False),
        ({"a": [{"exists": True}]}, {"a": None}, True),
        ({"a": [{"exists": True}]}, {}, False),
        ({"a": [{"exists": False}]}, {}, True),
        ({"a": [{"exists": False}]}, {"a": 1}, False),
        # DynamoDB attributes nest their value under the type: a missing attribute matches absence only.
        ({"a": {"N": [{"exists": False}]}}, {}, True),
        ({"a": {"N": [{"exists": False}]}}, {"a": {"N": "5"}}, False),
        ({"a": {"N": ["5"]}}, {}, False),
        ({"a": {"N": [{"exists": True}]}}, {}, False),
        ({"a": [None]}, {"a": None}, True),
        ({"a": [1]}, {"a": True}, False),
        ({"a": ["x", "y"]}, {"a": "y"}, True),
        ({"tags": ["b"]}, {"tags": ["a", "b"]}, True),
        ({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "2"}, True),
        ({"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"b": "3"}, False),
        ({"a": [{"wildcard": "inv-*-2024"}]}, {"a": "inv-9-2024"}, True),
    ],
)
def test_pattern(pattern: dict, event: dict, expected: bool) -> None:
    assert matches(pattern, event) is expected


def test_filters_are_ored_and_no_filters_keep_everything() -> None:
    filters = [{"eventName": ["REMOVE"]}, {"dynamodb": {"NewImage": {"rtype": {"S": ["notice"]}}}}]
    assert matches_any(filters, ddb("INSERT", rtype={"S": "notice"}))
    assert matches_any(filters, ddb("REMOVE"))
    assert not matches_any(filters, ddb("INSERT", rtype={"S": "event"}))
    assert matches_any([], ddb("INSERT"))


def test_sqs_filters_see_a_json_body_parsed_and_other_bodies_as_text() -> None:
    assert matches({"body": {"kind": ["invoice"]}}, sqs_filter_view({"body": '{"kind": "invoice"}'}))
    assert not matches({"body": {"kind": ["invoice"]}}, sqs_filter_view({"body": "kind=invoice"}))
    assert matches({"body": [{"prefix": "kind="}]}, sqs_filter_view({"body": "kind=invoice"}))
