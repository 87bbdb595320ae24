"""The cost benchmark's meter bills DynamoDB transactions as AWS does, not as the local emulator reports them."""

from __future__ import annotations

from typing import Any

import boto3

from bench.cost import AwsMeter, item_size


def test_item_size_counts_names_and_values_as_dynamodb_does() -> None:
    # "Item sizes and formats": names and values; a number costs 1 byte per 2 significant digits plus 1.
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"n": {"N": "-0.500"}}) == 1 + 2
    assert item_size({"b": {"B": b"\x00\x01"}, "t": {"BOOL": True}}) == (1 + 2) + (1 + 1)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}, "l": {"L": [{"S": "xy"}]}}) == (1 + 3 + 1 + 1 + 1) + (
        1 + 3 + 1 + 2
    )


def _item(pk: str, body: str, **extra: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "X"}, "body": {"S": body}, **{k: {"S": v} for k, v in extra.items()}}


def test_a_transaction_costs_two_units_per_kb_of_each_item_plus_its_index_writes(moto_aws: dict[str, str]) -> None:
    ddb = boto3.client("dynamodb")
    ddb.put_item(TableName="LedgerTable", Item=_item("U", "x" * 100, gsi1pk="S#a", gsi1sk="1"))
    meter = AwsMeter()
    with meter.active():
        ddb.transact_write_items(
            TransactItems=[
                # 2.5 KB put in no index: 3 KB -> 6 units
                {"Put": {"TableName": "LedgerTable", "Item": _item("P", "x" * 2500)}},
                # an update that grows the item to 1.5 KB, in gsi1: 2 KB -> 4 units, plus 1 index write
                {
                    "Update": {
                        "TableName": "LedgerTable",
                        "Key": {"pk": {"S": "U"}, "sk": {"S": "X"}},
                        "UpdateExpression": "SET body = :b",
                        "ExpressionAttributeValues": {":b": {"S": "y" * 1500}},
                    }
                },
                # a delete: 1 KB at least -> 2 units
                {"Delete": {"TableName": "LedgerTable", "Key": {"pk": {"S": "gone"}, "sk": {"S": "X"}}}},
            ]
        )
        ddb.put_item(TableName="LedgerTable", Item=_item("Q", "z"))  # not a transaction: the service's figure
    single = meter.write_units - (6 + 4 + 1 + 2)
    assert meter.calls["dynamodb:TransactWriteItems"] == 1
    assert single == 1.0
    # the meter's own reads (the updated item, the table's indexes) are not billed
    assert meter.read_units == 0
    assert set(meter.calls) == {"dynamodb:TransactWriteItems", "dynamodb:PutItem"}
