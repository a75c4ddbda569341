"""The expanded template deployed into moto's CloudFormation (a moto server of this test's own,
offline), and the wiring asserted again on what was created. moto creates the tables, queues,
log groups, roles, functions, stream mappings and schedules; it skips, with a warning, the types
it does not implement (SKIPPED below: the alarms, the budget, the HTTP API, the secret and the
policies of the topic and queue), and it creates the bucket without its notification,
versioning or lifecycle. Those are asserted on the expansion only (test_wiring.py)."""
from __future__ import annotations

import ast
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from wiring import command_error, command_shapes, expanded

# The types moto's CloudFormation does not create (it warns and goes on).
SKIPPED = {
    "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", "AWS::Budgets::Budget", "AWS::CloudWatch::Alarm",
    "AWS::Lambda::EventInvokeConfig", "AWS::SNS::Subscription", "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy", "AWS::SecretsManager::Secret",
}
STACK = "wiring"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Deployed:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        cfn = self.client("cloudformation")
        template = expanded()
        s3 = self.client("s3")
        s3.create_bucket(Bucket="packaged")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as z:
            z.writestr("bootstrap", "#!/bin/sh\n")
        for name, resource in template["Resources"].items():
            if resource["Type"] == "AWS::Lambda::Function":
                s3.put_object(Bucket="packaged", Key=f"{name}.zip", Body=code.getvalue())
        cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"], Parameters=[
            {"ParameterKey": "AlarmEmail", "ParameterValue": "ops@example.org"},
            {"ParameterKey": "DatabaseSecretArn",
             "ParameterValue": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"}])
        for _ in range(120):
            self.stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
            if not self.stack["StackStatus"].endswith("IN_PROGRESS"):
                break
            time.sleep(0.5)
        self.physical: dict[str, str] = {}
        self.types: dict[str, str] = {}
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=STACK):
            for r in page["StackResourceSummaries"]:
                self.physical[r["LogicalResourceId"]] = r["PhysicalResourceId"]
                self.types[r["LogicalResourceId"]] = r["ResourceType"]

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",  # type: ignore[call-overload]
                            aws_access_key_id="test", aws_secret_access_key="test")

    def function_arn(self, logical_id: str) -> str:
        arn: str = self.client("lambda").get_function(FunctionName=self.physical[logical_id])["Configuration"]["FunctionArn"]
        return arn

    def queue_arn(self, logical_id: str) -> str:
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=self.physical[logical_id], AttributeNames=["QueueArn"])
        arn: str = attrs["Attributes"]["QueueArn"]
        return arn

    def table(self, logical_id: str) -> dict[str, Any]:
        table: dict[str, Any] = self.client("dynamodb").describe_table(TableName=self.physical[logical_id])["Table"]
        return table


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield Deployed(endpoint)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_stack_deploys_with_everything_moto_implements(deployed: Deployed) -> None:
    assert deployed.stack["StackStatus"] == "CREATE_COMPLETE", deployed.stack.get("StackStatusReason")
    # Everything the template creates by default (CloudFront is off) except the types moto skips.
    template = expanded()["Resources"]
    wanted = {k for k, v in template.items() if v.get("Condition") != "Cdn"}
    created = set(deployed.physical)
    not_created = {template[k]["Type"] for k in wanted - created}
    assert not_created == SKIPPED, "moto now creates more (or less): update SKIPPED and assert on it"


def test_each_stream_mapping_reads_its_tables_stream_into_sync_postgres(deployed: Deployed) -> None:
    mappings = deployed.client("lambda").list_event_source_mappings(
        FunctionName=deployed.physical["SyncPostgresFunction"])["EventSourceMappings"]
    streams = {deployed.table(t)["LatestStreamArn"]: t for t in ("MediaTable", "DeckFilesTable")}
    assert sorted(streams[m["EventSourceArn"]] for m in mappings) == ["DeckFilesTable", "MediaTable"]
    failures = deployed.queue_arn("SyncPostgresFailures")
    for m in mappings:
        assert m["FunctionArn"] == deployed.function_arn("SyncPostgresFunction")
        assert (m["BatchSize"], m["BisectBatchOnFunctionError"], m["MaximumRetryAttempts"]) == (100, True, 10)
        assert m["StartingPosition"] == "TRIM_HORIZON" and m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["DestinationConfig"]["OnFailure"]["Destination"] == failures
        assert not m.get("FilterCriteria"), "the mirror needs every record"
        assert m["State"] == "Enabled"


def test_each_schedule_hands_its_function_a_command_it_parses(deployed: Deployed) -> None:
    events = deployed.client("events")
    dead_letters = deployed.queue_arn("ScheduleFailures")
    enums = {"SweepOrphansFunction": ("shared/src/lifecycle.rs", "SweepCommand"),
             "SyncPostgresFunction": ("shared/src/sync.rs", "MirrorCommand")}
    arns = {deployed.function_arn(f): f for f in enums}
    seen = []
    for logical_id, kind in deployed.types.items():
        if kind != "AWS::Events::Rule":
            continue
        (t,) = events.list_targets_by_rule(Rule=deployed.physical[logical_id])["Targets"]
        function = arns[t["Arn"]]
        command = json.loads(t["Input"])
        assert command_error(command_shapes(*enums[function]), command) is None, (logical_id, command)
        assert t["DeadLetterConfig"]["Arn"] == dead_letters
        seen.append((function, command.get("mode")))
    assert sorted(seen) == [("SweepOrphansFunction", "reconcile"), ("SweepOrphansFunction", "sweep"),
                            ("SyncPostgresFunction", "reconcile")]


def test_tables_refuse_deletion_and_stream_both_images(deployed: Deployed) -> None:
    for logical_id in ("MediaTable", "DeckFilesTable", "RefsTable", "QuotasTable"):
        assert deployed.table(logical_id)["DeletionProtectionEnabled"] is True, logical_id
    for logical_id in ("MediaTable", "DeckFilesTable"):
        assert deployed.table(logical_id)["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"


def test_logs_expire_and_no_concurrency_is_reserved(deployed: Deployed) -> None:
    groups = deployed.client("logs").describe_log_groups(logGroupNamePrefix="/aws/")["logGroups"]
    assert len(groups) == 7 and {g.get("retentionInDays") for g in groups} == {30}
    lam = deployed.client("lambda")
    for logical_id, kind in deployed.types.items():
        if kind == "AWS::Lambda::Function":
            answer = lam.get_function_concurrency(FunctionName=deployed.physical[logical_id])
            assert "ReservedConcurrentExecutions" not in answer, logical_id


def test_sync_postgres_role_reads_only_the_two_streams(deployed: Deployed) -> None:
    iam = deployed.client("iam")
    role = deployed.physical["SyncPostgresRole"]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    document = iam.get_role_policy(RoleName=role, PolicyName="sync-postgres")["PolicyDocument"]
    if isinstance(document, str):
        # moto keeps a policy CloudFormation gave it as the Python repr of the document.
        document = ast.literal_eval(document)
    (reader,) = [s for s in document["Statement"] if "dynamodb:GetRecords" in s["Action"]]
    tables = sorted(deployed.table(t)["TableArn"] + "/stream/*" for t in ("MediaTable", "DeckFilesTable"))
    assert sorted(reader["Resource"]) == tables
