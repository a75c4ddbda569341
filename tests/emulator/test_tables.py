"""The local stack's DynamoDB tables are the template's: the same keys, attribute types, indexes,
streams and TTL. `local-gateway setup` creates them by hand (local-gateway/src/setup.rs), so this
is what notices when one of the two changes without the other."""
from __future__ import annotations

import sys
from typing import Any

import boto3
import pytest
from stack import ENV, ROOT

sys.path.insert(0, str(ROOT / "tests" / "template"))
import wiring  # noqa: E402


def _table_env_names() -> dict[str, str]:
    """Each table's logical id → the environment variable the functions read its name from."""
    tables = wiring.resources("AWS::DynamoDB::Table")
    names: dict[str, str] = {}
    for function in wiring.resources("AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            if isinstance(value, dict) and value.get("Ref") in tables:
                names[value["Ref"]] = name
    return names


def _keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def _shape(props: dict[str, Any]) -> dict[str, Any]:
    """What both sides must agree on, from CloudFormation's properties or DescribeTable's answer."""
    stream = props.get("StreamSpecification") or {}
    return {
        "keys": _keys(props["KeySchema"]),
        "attributes": sorted((a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]),
        "indexes": sorted(
            (i["IndexName"], _keys(i["KeySchema"]), i["Projection"]["ProjectionType"])
            for i in props.get("GlobalSecondaryIndexes") or []
        ),
        "local_indexes": sorted(i["IndexName"] for i in props.get("LocalSecondaryIndexes") or []),
        # CloudFormation's StreamSpecification has only the view type; DescribeTable adds
        # StreamEnabled, false when the stream is off.
        "stream": stream.get("StreamViewType") if stream.get("StreamEnabled", True) else None,
        "billing": props.get("BillingMode") or props.get("BillingModeSummary", {}).get("BillingMode"),
    }


TABLES = sorted(_table_env_names().items())


def test_every_table_of_the_template_is_named_to_the_functions() -> None:
    declared = set(wiring.resources("AWS::DynamoDB::Table"))
    assert declared == {logical for logical, _ in TABLES}, "a table no function is told the name of"


@pytest.mark.parametrize(("logical", "env_name"), TABLES, ids=[logical for logical, _ in TABLES])
def test_the_local_table_is_the_templates(logical: str, env_name: str) -> None:
    declared = wiring.resources("AWS::DynamoDB::Table")[logical]["Properties"]
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=ENV["AWS_ENDPOINT_URL_DYNAMODB"],
        region_name=ENV["AWS_REGION"],
        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
    )
    name = ENV[env_name]
    local = ddb.describe_table(TableName=name)["Table"]
    assert _shape(local) == _shape(declared), f"table {name} ({logical}) differs from template.yaml"

    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    local_ttl = ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") else None
    declared_ttl = declared.get("TimeToLiveSpecification") or {}
    assert local_ttl == (declared_ttl.get("AttributeName") if declared_ttl.get("Enabled") else None)
