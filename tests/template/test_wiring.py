"""The wiring the code relies on, asserted on template.yaml as SAM's own translator expands it
(offline: no stack, no credentials). `scripts/test` runs it as the stage "template wiring"."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from wiring import (
    REPO,
    RUNBOOK,
    anchors,
    attribute,
    command_error,
    command_shapes,
    expanded,
    kind_of,
    resources,
    target,
)

FUNCTIONS = {
    "PresignUploadFunction", "PresignDownloadFunction", "ProcessUploadFunction",
    "ReferencesFunction", "SweepOrphansFunction", "SyncPostgresFunction",
}
# The commands each scheduled function parses, and where (the enum its main.rs hands events to).
COMMANDS = {
    "SweepOrphansFunction": ("functions/sweep-orphans/src/main.rs", "shared/src/lifecycle.rs", "SweepCommand"),
    "SyncPostgresFunction": ("functions/sync-postgres/src/main.rs", "shared/src/sync.rs", "MirrorCommand"),
}


def rust_prefix(field: str) -> str:
    """A key prefix as shared::model::Keys has it by default (uploads/, media/, thumbs/)."""
    src = (REPO / "shared/src/model.rs").read_text()
    m = re.search(field + r': "([^"]+)"\.into\(\)', src)
    assert m, f"no default {field} in shared/src/model.rs"
    return m.group(1)


def props(logical_id: str) -> dict[str, Any]:
    result: dict[str, Any] = expanded()["Resources"][logical_id]["Properties"]
    return result


# --- S3 → process-upload -------------------------------------------------------------------------


def test_the_bucket_notifies_process_upload_of_uploads_only() -> None:
    configs = props("MediaBucket")["NotificationConfiguration"]["LambdaConfigurations"]
    assert len(configs) == 1, "one notification: writing media/ or thumbs/ must never trigger it"
    (config,) = configs
    assert config["Event"] == "s3:ObjectCreated:*"
    assert target(config["Function"]) == "ProcessUploadFunction"
    rules = config["Filter"]["S3Key"]["Rules"]
    assert rules == [{"Name": "prefix", "Value": rust_prefix("upload_prefix")}]
    permissions = [p for p in resources("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "s3.amazonaws.com"]
    assert [target(p["Properties"]["FunctionName"]) for p in permissions] == ["ProcessUploadFunction"]


def test_process_upload_failures_reach_their_queue() -> None:
    config = next(r["Properties"] for r in resources("AWS::Lambda::EventInvokeConfig").values()
                  if target(r["Properties"]["FunctionName"]) == "ProcessUploadFunction")
    assert target(config["DestinationConfig"]["OnFailure"]["Destination"]) == "ProcessUploadFailures"
    assert config["MaximumRetryAttempts"] == 2


# --- Streams → sync-postgres ---------------------------------------------------------------------


def test_each_mirrored_table_streams_to_sync_postgres_as_the_code_expects() -> None:
    mappings = resources("AWS::Lambda::EventSourceMapping")
    by_table = {target(m["Properties"]["EventSourceArn"]): m["Properties"] for m in mappings.values()}
    assert set(by_table) == {"MediaTable", "DeckFilesTable"}
    for table, m in by_table.items():
        assert attribute(m["EventSourceArn"]) == "StreamArn"
        # REMOVE records are applied from their old image (shared::sync).
        assert props(table)["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
        assert target(m["FunctionName"]) == "SyncPostgresFunction"
        assert m["BatchSize"] == 100
        assert m["BisectBatchOnFunctionError"] is True
        assert m["MaximumRetryAttempts"] == 10
        assert m["MaximumRecordAgeInSeconds"] == 86400
        assert m["StartingPosition"] == "TRIM_HORIZON"
        # The function answers batchItemFailures; without this Lambda would ignore them.
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert target(m["DestinationConfig"]["OnFailure"]["Destination"]) == "SyncPostgresFailures"
        # Every insert, change and removal: the mirror must see them all.
        assert "FilterCriteria" not in m, f"{table}'s mapping filters records: the mirror would miss them"


def test_sync_postgres_reads_only_its_two_streams() -> None:
    role_id = target(props("SyncPostgresFunction")["Role"])
    role = props(role_id)
    assert "AWSLambdaDynamoDBExecutionRole" not in json.dumps(role)
    managed = role.get("ManagedPolicyArns")
    assert managed is None or list(managed) == ["Fn::If"], "only the VPC policy, and only in a VPC"
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    stream_actions = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                      "dynamodb:ListStreams"}
    readers = [s for s in statements if stream_actions & set(s["Action"])]
    assert len(readers) == 1 and set(readers[0]["Action"]) == stream_actions
    assert readers[0]["Resource"] == [{"Fn::Sub": "${MediaTable.Arn}/stream/*"},
                                      {"Fn::Sub": "${DeckFilesTable.Arn}/stream/*"}]
    for s in statements:
        if s["Resource"] == "*":
            assert all(a.startswith("xray:") for a in s["Action"]), f"{s['Action']} on every resource"


# --- Schedules -----------------------------------------------------------------------------------


def schedules() -> list[tuple[str, str, dict[str, Any]]]:
    """(rule, function, target) for every scheduled invocation."""
    out = []
    for rule_id, rule in resources("AWS::Events::Rule").items():
        assert "ScheduleExpression" in rule["Properties"], f"{rule_id} is not a schedule"
        for t in rule["Properties"]["Targets"]:
            out.append((rule_id, target(t["Arn"]), t))
    return out


def test_the_schedules_are_the_ones_the_functions_expect() -> None:
    found = {(fn, json.dumps(json.loads(t["Input"]), sort_keys=True)) for _, fn, t in schedules()}
    assert found == {
        ("SweepOrphansFunction", '{"mode": "sweep"}'),
        ("SweepOrphansFunction", '{"fix": false, "mode": "reconcile"}'),
        ("SyncPostgresFunction", '{"fix": true, "mode": "reconcile"}'),
    }


@pytest.mark.parametrize("function", sorted(COMMANDS))
def test_each_schedule_input_is_a_command_its_function_parses(function: str) -> None:
    main, source, enum = COMMANDS[function]
    assert enum in (REPO / main).read_text() or "shared::sync::handle" in (REPO / main).read_text(), \
        f"{main} no longer hands events to {enum}: update COMMANDS"
    shapes = command_shapes(source, enum)
    inputs = [json.loads(t["Input"]) for _, fn, t in schedules() if fn == function]
    assert inputs, f"{function} has no schedule"
    for command in inputs:
        # sync-postgres reads an event with Records as a stream batch, anything else as a command.
        assert "Records" not in command
        assert command_error(shapes, command) is None, f"{function}: {command}: {command_error(shapes, command)}"


def test_the_command_reader_refuses_what_serde_refuses() -> None:
    shapes = command_shapes("shared/src/lifecycle.rs", "SweepCommand")
    assert command_error(shapes, {"mode": "sweep", "grace_seconds": 0}) is None
    for bad in ({"mode": "sweeep"}, {"mode": "reconcile", "fix": "true"}, {"mode": "reconcile", "fixx": True},
                {"mode": "sweep", "grace_seconds": 1.5}, {}, ["sweep"]):
        assert command_error(shapes, bad) is not None, bad
    mirror = command_shapes("shared/src/sync.rs", "MirrorCommand")
    assert command_error(mirror, {"mode": "migrate"}) is None
    assert command_error(mirror, {"mode": "sweep"}) is not None


def test_scheduled_runs_that_fail_land_in_a_queue() -> None:
    invoke_configs = {target(r["Properties"]["FunctionName"]): r["Properties"]
                      for r in resources("AWS::Lambda::EventInvokeConfig").values()}
    for rule_id, fn, t in schedules():
        assert target(t["DeadLetterConfig"]["Arn"]) == "ScheduleFailures", f"{rule_id} has no dead letters"
        destination = invoke_configs[fn]["DestinationConfig"]["OnFailure"]["Destination"]
        assert target(destination) == "ScheduleFailures", f"{fn}'s failed runs go nowhere"
    policy = next(iter(resources("AWS::SQS::QueuePolicy").values()))["Properties"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert [target(q) for q in policy["Queues"]] == ["ScheduleFailures"]


# --- Alarms, topic and budget --------------------------------------------------------------------

# The metrics alarms may watch, and the dimension each must carry (None: account-wide).
KNOWN_METRICS = {
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): ("QueueName", "AWS::SQS::Queue", "QueueName"),
    ("AWS/Lambda", "Errors"): ("FunctionName", "AWS::Lambda::Function", None),
    ("AWS/Lambda", "Invocations"): ("FunctionName", "AWS::Lambda::Function", None),
    ("AWS/Lambda", "IteratorAge"): ("FunctionName", "AWS::Lambda::Function", None),
    # HTTP APIs publish 4xx/5xx/Count by ApiId (5XXError is REST APIs' name, by ApiName).
    ("AWS/ApiGateway", "5xx"): ("ApiId", "AWS::ApiGatewayV2::Api", None),
    ("AWS/Lambda", "Throttles"): None,
}


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    if "MetricName" in alarm:
        return [{"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"],
                 "Dimensions": alarm.get("Dimensions", [])}]
    metrics = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    return [{**m, "Dimensions": m.get("Dimensions", [])} for m in metrics]


def test_each_alarm_watches_a_metric_of_a_resource_that_exists() -> None:
    alarms = resources("AWS::CloudWatch::Alarm")
    assert len(alarms) >= 9
    for alarm_id, alarm in alarms.items():
        for metric in alarm_metrics(alarm["Properties"]):
            key = (metric["Namespace"], metric["MetricName"])
            assert key in KNOWN_METRICS, f"{alarm_id}: {key} is not a metric this test knows"
            expected = KNOWN_METRICS[key]
            if expected is None:
                assert metric["Dimensions"] == [], f"{alarm_id}: an account-wide metric has no dimension"
                continue
            name, kind, attr = expected
            (dimension,) = metric["Dimensions"]
            assert dimension["Name"] == name, alarm_id
            assert kind_of(target(dimension["Value"])) == kind, f"{alarm_id}: {dimension} is not a {kind}"
            assert attribute(dimension["Value"]) == attr, f"{alarm_id}: {dimension}"


def test_alarms_stay_within_the_free_ten_metrics_and_reach_the_topic() -> None:
    alarms = resources("AWS::CloudWatch::Alarm").values()
    assert sum(len(alarm_metrics(a["Properties"])) for a in alarms) <= 10
    for a in alarms:
        assert [target(x) for x in a["Properties"]["AlarmActions"]] == ["AlarmTopic"]
    (subscription,) = resources("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_each_alarm_points_at_a_runbook_section_that_exists() -> None:
    sections = anchors(RUNBOOK.read_text())
    for alarm_id, alarm in resources("AWS::CloudWatch::Alarm").items():
        m = re.search(r"docs/OPERATIONS\.md#([\w-]+)", alarm["Properties"]["AlarmDescription"])
        assert m, f"{alarm_id}'s description names no runbook section"
        assert m.group(1) in sections, f"{alarm_id}: no section #{m.group(1)} in docs/OPERATIONS.md"


def test_the_process_upload_alarm_is_a_rate() -> None:
    alarm = props("ProcessUploadErrorRateAlarm")
    returned = [m for m in alarm["Metrics"] if m.get("ReturnData", True)]
    assert len(returned) == 1 and "/ invocations" in returned[0]["Expression"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert names == {"Errors", "Invocations"}


def test_the_sweep_not_running_alarm_fires_on_silence() -> None:
    alarm = props("SweepNotRunningAlarm")
    rate = next(r["Properties"]["ScheduleExpression"] for r in resources("AWS::Events::Rule").values()
                if json.loads(r["Properties"]["Targets"][0]["Input"]) == {"mode": "sweep"})
    assert rate == "rate(1 hour)"
    assert alarm["MetricName"] == "Invocations" and alarm["TreatMissingData"] == "breaching"
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 2 * 3600


def test_the_budget_notifies_the_topic_which_lets_budgets_publish() -> None:
    (budget,) = resources("AWS::Budgets::Budget").values()
    notifications = budget["Properties"]["NotificationsWithSubscribers"]
    got = {(n["Notification"]["NotificationType"], n["Notification"]["Threshold"]) for n in notifications}
    assert got == {("ACTUAL", 80), ("ACTUAL", 100), ("FORECASTED", 80), ("FORECASTED", 100)}
    for n in notifications:
        assert n["Subscribers"] == [{"SubscriptionType": "SNS", "Address": {"Ref": "AlarmTopic"}}]
    assert budget["Properties"]["Budget"]["BudgetLimit"]["Amount"] == {"Ref": "MonthlyBudgetUsd"}
    (policy,) = resources("AWS::SNS::TopicPolicy").values()
    principals = {s["Principal"]["Service"] for s in policy["Properties"]["PolicyDocument"]["Statement"]
                  if s["Action"] == "sns:Publish"}
    assert "budgets.amazonaws.com" in principals


# --- Data that survives mistakes -----------------------------------------------------------------


def test_stateful_resources_are_retained_and_protected() -> None:
    res = expanded()["Resources"]
    kept = [*resources("AWS::DynamoDB::Table"), *resources("AWS::S3::Bucket"),
            *resources("AWS::SecretsManager::Secret"), *resources("AWS::SQS::Queue")]
    assert len(kept) == 4 + 1 + 1 + 3
    for logical_id in kept:
        assert res[logical_id].get("DeletionPolicy") == "Retain", logical_id
        assert res[logical_id].get("UpdateReplacePolicy") == "Retain", logical_id
    for table_id, table in resources("AWS::DynamoDB::Table").items():
        assert table["Properties"]["DeletionProtectionEnabled"] is True, table_id


def test_deleted_media_and_thumbnails_stay_recoverable() -> None:
    bucket = props("MediaBucket")
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Prefix"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    for prefix in (rust_prefix("media_prefix"), rust_prefix("thumb_prefix")):
        assert rules[prefix]["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}}
        assert "ExpirationInDays" not in rules[prefix], f"{prefix} objects must never expire by age"
    assert rules[rust_prefix("upload_prefix")]["ExpirationInDays"] == 1
    assert expanded()["Parameters"]["NoncurrentVersionDays"]["Default"] == 30


# --- Deploys anywhere ----------------------------------------------------------------------------


def test_by_default_no_function_reserves_concurrency() -> None:
    params = expanded()["Parameters"]
    conditions = expanded()["Conditions"]
    for fn_id, fn in resources("AWS::Lambda::Function").items():
        reserved = fn["Properties"].get("ReservedConcurrentExecutions")
        if reserved is None:
            continue
        condition, when_true, when_false = reserved["Fn::If"]
        assert when_false == {"Ref": "AWS::NoValue"}, fn_id
        param = target(when_true)
        assert params[param]["Default"] == 0, f"{param} reserves by default"
        assert conditions[condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, 0]}]}, fn_id


def test_every_function_logs_to_a_declared_group_that_expires() -> None:
    functions = resources("AWS::Lambda::Function")
    assert set(functions) == FUNCTIONS
    groups = set()
    for fn_id, fn in functions.items():
        group = target(fn["Properties"]["LoggingConfig"]["LogGroup"])
        assert kind_of(group) == "AWS::Logs::LogGroup", fn_id
        assert props(group)["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        groups.add(group)
    assert len(groups) == len(functions), "one group per function"


def test_the_api_writes_a_json_access_log() -> None:
    (stage,) = resources("AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["AccessLogSettings"]
    assert target(settings["DestinationArn"]) == "ApiAccessLogs"
    line = json.loads(re.sub(r"\$context\.[\w.]+", "x", settings["Format"]))
    assert {"requestId", "status", "route", "ip"} <= set(line)
    assert "authorization" not in settings["Format"].lower(), "tokens must not reach the log"


def test_the_outputs_the_runbook_and_readme_use_exist() -> None:
    outputs = set(expanded()["Outputs"])
    used = set()
    for doc in (RUNBOOK, REPO / "README.md"):
        used |= set(re.findall(r"\$\(out (\w+)\)", doc.read_text()))
    assert used, "the runbook reads no output through `out`"
    assert used <= outputs, f"outputs the docs use but the template lacks: {sorted(used - outputs)}"


def test_each_function_may_send_to_its_failure_queues() -> None:
    """A destination the role may not write to loses the failure silently."""
    def may_send(function: str, queue: str) -> bool:
        role = props(target(props(function)["Role"]))
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        for s in statements:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            resources_ = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            if "sqs:SendMessage" in actions and any(target(r) == queue for r in resources_ if isinstance(r, dict)):
                return True
        return False

    for config in resources("AWS::Lambda::EventInvokeConfig").values():
        function = target(config["Properties"]["FunctionName"])
        queue = target(config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"])
        assert may_send(function, queue), f"{function} may not send to {queue}"
    assert may_send("SyncPostgresFunction", "SyncPostgresFailures")
