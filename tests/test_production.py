"""The production preset: highly available, private, protected and watched, for at most $150 a month idle."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import botocore.session
import pytest
from conftest import offline, policy_of
from test_ui import allowed

from metaflow_infra.alerts import BUDGET_ALERTS, failed_jobs_pattern, service_alarm_specs
from metaflow_infra.costs import estimate_monthly_cost
from metaflow_infra.metadata import one_extra_task_percent
from metaflow_infra.network import nat_for_zone, subnet_cidrs
from metaflow_infra.offline import DeclaredResource, OfflineRun, SubnetFixture
from metaflow_infra.settings.models import EndpointService

SUBNET = "aws:ec2/subnet:Subnet"
ROUTE = "aws:ec2/route:Route"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
IDLE_BUDGET_USD = 150
SESSION = botocore.session.get_session()


@pytest.fixture(scope="module")
def production() -> OfflineRun:
    return offline("production")


def resource_id(resource: DeclaredResource) -> str:
    """The id the offline mocks give a resource (see `RecordingMocks.new_resource`)."""
    return f"{resource.state['name']}-id"


def subnets(run: OfflineRun, tier: str) -> list[DeclaredResource]:
    """The subnets of a tier, in AZ order."""
    return sorted((s for s in run.of_type(SUBNET) if s.name.startswith(f"metaflow-{tier}-")), key=lambda s: s.name)


def named(run: OfflineRun, type_: str, name: str) -> DeclaredResource:
    [found] = [r for r in run.of_type(type_) if r.name == name]
    return found


def role_policy(run: OfflineRun, name: str) -> dict[str, Any]:
    return policy_of(named(run, "aws:iam/rolePolicy:RolePolicy", name).inputs)


# --- Availability ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, multi_az, tasks, capacity, private",
    [
        ("minimal", None, None, None, False),
        ("dev", False, 1, "FARGATE_SPOT", False),
        ("production", True, 2, "FARGATE", True),
    ],
)
def test_each_preset_has_its_availability_and_placement(
    preset: str, multi_az: bool | None, tasks: int | None, capacity: str | None, private: bool
) -> None:
    run = offline(preset)
    databases = [d.inputs["multiAz"] for d in run.of_type("aws:rds/instance:Instance")]
    assert databases == ([] if multi_az is None else [multi_az])
    services = [s.inputs for s in run.of_type("aws:ecs/service:Service")]
    assert [(s["desiredCount"], s["capacityProviderStrategies"][0]["capacityProvider"]) for s in services] == (
        [] if tasks is None else [(tasks, capacity)]
    )
    assert all(s["networkConfiguration"]["assignPublicIp"] is not private for s in services)
    assert bool(subnets(run, "private")) is private and bool(run.of_type("aws:ec2/natGateway:NatGateway")) is private
    placed = [resource_id(s) for s in subnets(run, "private" if private else "public")]
    environments = run.of_type("aws:batch/computeEnvironment:ComputeEnvironment")
    assert environments and all(e.inputs["computeResources"]["subnets"] == placed for e in environments)


def test_the_database_is_multi_az_on_a_burstable_graviton_class(production: OfflineRun) -> None:
    database = production.one("aws:rds/instance:Instance").inputs
    assert database["multiAz"] is True
    assert database["instanceClass"] == "db.t4g.small"
    assert database["publiclyAccessible"] is False


def test_two_on_demand_service_tasks_and_deploys_that_never_drop_below_them(production: OfflineRun) -> None:
    service = production.one("aws:ecs/service:Service").inputs
    assert service["desiredCount"] == 2
    assert [s["capacityProvider"] for s in service["capacityProviderStrategies"]] == ["FARGATE"]
    assert service["deploymentMinimumHealthyPercent"] == 100
    assert service["deploymentMaximumPercent"] == 150  # one task more than two, never two more at once


@pytest.mark.parametrize("tasks, extra", [(1, 1), (2, 1), (3, 1), (4, 1), (7, 1), (10, 1)])
def test_a_deploy_starts_exactly_one_task_more(tasks: int, extra: int) -> None:
    # ECS rounds tasks * maximumPercent / 100 down.
    assert tasks * one_extra_task_percent(tasks) // 100 == tasks + extra


def test_the_service_spans_three_azs_in_private_subnets(production: OfflineRun) -> None:
    private = subnets(production, "private")
    assert len({s.inputs["availabilityZone"] for s in private}) == 3
    network = production.one("aws:ecs/service:Service").inputs["networkConfiguration"]
    assert network["assignPublicIp"] is False
    assert network["subnets"] == [resource_id(s) for s in private]


# --- Private networking --------------------------------------------------------------------------------------------


def test_private_subnets_give_no_public_ip_and_use_their_own_blocks(production: OfflineRun) -> None:
    private, public = subnets(production, "private"), subnets(production, "public")
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in private)
    assert [s.inputs["cidrBlock"] for s in private] == ["10.0.128.0/20", "10.0.144.0/20", "10.0.160.0/20"]
    # The public subnets keep the blocks they have without private subnets: turning these on moves nothing.
    assert [s.inputs["cidrBlock"] for s in public] == subnet_cidrs("10.0.0.0/16", 3)
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in private + public]
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])


def test_the_database_batch_and_the_service_endpoint_live_in_the_private_subnets(production: OfflineRun) -> None:
    private = [resource_id(s) for s in subnets(production, "private")]
    assert production.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"] == private
    environment = production.one("aws:batch/computeEnvironment:ComputeEnvironment").inputs
    assert environment["computeResources"]["subnets"] == private
    assert production.one("aws:apigatewayv2/vpcLink:VpcLink").inputs["subnetIds"] == private


def test_one_nat_gateway_in_a_public_subnet_is_every_private_subnets_way_out(production: OfflineRun) -> None:
    nat = production.one("aws:ec2/natGateway:NatGateway")
    address = production.one("aws:ec2/eip:Eip")
    assert nat.inputs["subnetId"] == resource_id(subnets(production, "public")[0])
    assert nat.inputs["allocationId"] == resource_id(address) and address.inputs["domain"] == "vpc"
    tables = {
        t.name: resource_id(t)
        for t in production.of_type("aws:ec2/routeTable:RouteTable")
        if t.name.startswith("metaflow-private-")
    }
    defaults = [r.inputs for r in production.of_type(ROUTE) if r.name.startswith("metaflow-private-")]
    assert sorted(r["routeTableId"] for r in defaults) == sorted(tables.values())
    assert all(r["destinationCidrBlock"] == "0.0.0.0/0" and r["natGatewayId"] == resource_id(nat) for r in defaults)
    associations = {
        a.inputs["subnetId"]: a.inputs["routeTableId"]
        for a in production.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if a.name.startswith("metaflow-private-")
    }
    assert associations == {resource_id(s): tables[s.name] for s in subnets(production, "private")}


@pytest.mark.parametrize("nats, expected", [(1, [0, 0, 0]), (2, [0, 1, 0]), (3, [0, 1, 2])])
def test_a_private_subnet_goes_out_through_its_own_azs_nat_when_there_is_one(nats: int, expected: list[int]) -> None:
    assert [nat_for_zone(zone, nats) for zone in range(3)] == expected


def test_one_nat_per_az_when_asked() -> None:
    run = offline("production", {"network:natGateways": 3})
    nats = sorted(run.of_type("aws:ec2/natGateway:NatGateway"), key=lambda n: n.name)
    assert [n.inputs["subnetId"] for n in nats] == [resource_id(s) for s in subnets(run, "public")]
    routes = sorted((r.name, r.inputs["natGatewayId"]) for r in run.of_type(ROUTE) if "private" in r.name)
    assert [nat for _, nat in routes] == [resource_id(n) for n in nats]


def test_s3_goes_through_a_free_gateway_endpoint_on_the_private_routes(production: OfflineRun) -> None:
    endpoint = production.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert endpoint["serviceName"] == "com.amazonaws.us-east-1.s3" and endpoint["vpcEndpointType"] == "Gateway"
    private_tables = {
        resource_id(t) for t in production.of_type("aws:ec2/routeTable:RouteTable") if "private" in t.name
    }
    # Compared as sets: the mocks register the tables in whatever order their inputs resolve.
    assert len(endpoint["routeTableIds"]) == len(private_tables) == 3
    assert set(endpoint["routeTableIds"]) == private_tables


def test_each_interface_endpoint_choice_takes_every_vpc_endpoint_service_its_callers_need() -> None:
    # AWS's PrivateLink guides: pulling an image calls ecr.api and ecr.dkr; the ECS agent calls ecs,
    # ecs-agent and ecs-telemetry.
    assert {choice.value: choice.aws_services for choice in EndpointService} == {
        "ecr": ("ecr.api", "ecr.dkr"),
        "logs": ("logs",),
        "secretsmanager": ("secretsmanager",),
        "sts": ("sts",),
        "ecs": ("ecs", "ecs-agent", "ecs-telemetry"),
    }


def test_interface_endpoints_on_request_in_every_private_subnet_open_to_the_vpc_on_https_only() -> None:
    run = offline("production", {"network:interfaceEndpoints": ["ecr", "logs"]})
    interface = [r.inputs for r in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") if r.name != "metaflow-s3"]
    assert sorted(e["serviceName"] for e in interface) == [
        "com.amazonaws.us-east-1.ecr.api",
        "com.amazonaws.us-east-1.ecr.dkr",
        "com.amazonaws.us-east-1.logs",
    ]
    private = [resource_id(s) for s in subnets(run, "private")]
    group = resource_id(named(run, "aws:ec2/securityGroup:SecurityGroup", "metaflow-endpoints"))
    for endpoint in interface:
        assert endpoint["vpcEndpointType"] == "Interface" and endpoint["privateDnsEnabled"] is True
        assert endpoint["subnetIds"] == private and endpoint["securityGroupIds"] == [group]
    [rule] = [
        r.inputs
        for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == group
    ]
    assert (rule["cidrIpv4"], rule["ipProtocol"], rule["fromPort"], rule["toPort"]) == ("10.0.0.0/16", "tcp", 443, 443)
    lines = {line["item"]: line for line in run.outputs["estimatedMonthlyCost"]["lines"]}
    [endpoints] = [line for item, line in lines.items() if item.startswith("Interface VPC endpoints")]
    assert endpoints["monthlyUsd"] == pytest.approx(3 * 3 * 0.01 * 730)


EXISTING_VPC = "vpc-0123456789abcdef0"


def existing(target: str, public_ip: bool) -> dict[str, SubnetFixture]:
    return {
        f"subnet-0123456789abcdef{i}": SubnetFixture(
            EXISTING_VPC, f"us-east-1{zone}", f"use1-az{i + 1}", public_ip, target
        )
        for i, zone in enumerate("bc")
    }


def test_an_existing_vpcs_private_subnets_host_the_stack_without_public_ips() -> None:
    fixtures = existing("nat-0123456789abcdef0", public_ip=False)
    run = offline("production", {"network:vpcId": EXISTING_VPC, "network:subnetIds": list(fixtures)}, subnets=fixtures)
    assert not run.of_type(SUBNET) and not run.of_type("aws:ec2/natGateway:NatGateway")
    network = run.one("aws:ecs/service:Service").inputs["networkConfiguration"]
    assert network["assignPublicIp"] is False and network["subnets"] == list(fixtures)
    assert run.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"] == list(fixtures)
    cost_items = [line["item"] for line in run.outputs["estimatedMonthlyCost"]["lines"]]
    assert not any("public IPv4" in item for item in cost_items)


def test_existing_public_subnets_are_refused_as_private_ones() -> None:
    fixtures = existing("igw-0123456789abcdef0", public_ip=True)
    with pytest.raises(Exception, match="routes to an internet gateway, and network:privateSubnets is true"):
        offline("production", {"network:vpcId": EXISTING_VPC, "network:subnetIds": list(fixtures)}, subnets=fixtures)


# --- Data protection -----------------------------------------------------------------------------------------------


def test_the_database_is_protected_snapshotted_backed_up_and_patched(production: OfflineRun) -> None:
    database = production.one("aws:rds/instance:Instance")
    inputs = database.inputs
    assert database.protect is True and inputs["deletionProtection"] is True
    assert inputs["skipFinalSnapshot"] is False and inputs["finalSnapshotIdentifier"].startswith("metaflow-db-final-")
    assert inputs["backupRetentionPeriod"] == 14
    assert inputs["autoMinorVersionUpgrade"] is True  # RDS applies them in the maintenance window
    assert inputs["storageEncrypted"] is True


def test_rds_picks_the_windows_unless_both_are_given(production: OfflineRun) -> None:
    inputs = production.one("aws:rds/instance:Instance").inputs
    assert "backupWindow" not in inputs and "maintenanceWindow" not in inputs
    windows = {"db:backupWindow": "03:00-03:30", "db:maintenanceWindow": "sun:04:00-sun:04:30"}
    inputs = offline("production", windows).one("aws:rds/instance:Instance").inputs
    assert (inputs["backupWindow"], inputs["maintenanceWindow"]) == tuple(windows.values())


def test_performance_insights_stays_in_its_free_tier(production: OfflineRun) -> None:
    inputs = production.one("aws:rds/instance:Instance").inputs
    assert inputs["performanceInsightsEnabled"] is True
    assert inputs["performanceInsightsRetentionPeriod"] == 7


def test_the_bucket_is_kept_versioned_and_old_versions_expire(production: OfflineRun) -> None:
    assert production.one("aws:s3/bucket:Bucket").retain_on_delete is True
    versioning = production.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    rules = production.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    [expiry] = [r for r in rules if "noncurrentVersionExpiration" in r]
    assert expiry["status"] == "Enabled" and expiry["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    shorter = offline("production", {"datastore:noncurrentVersionDays": 7})
    rules = shorter.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert [
        r["noncurrentVersionExpiration"]["noncurrentDays"] for r in rules if "noncurrentVersionExpiration" in r
    ] == [7]


def test_without_a_kms_key_the_bucket_keeps_sse_s3(production: OfflineRun) -> None:
    [rule] = production.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    assert not production.of_type("aws:kms/key:Key")


@pytest.fixture(scope="module")
def with_key() -> OfflineRun:
    return offline("production", {"datastore:kmsKey": "create", "ui:enabled": True})


def test_the_ui_task_runs_in_the_private_subnets_without_a_public_ip(with_key: OfflineRun) -> None:
    [ui] = [s.inputs for s in with_key.of_type("aws:ecs/service:Service") if s.name == "metaflow-ui"]
    network = ui["networkConfiguration"]
    assert network["assignPublicIp"] is False
    assert network["subnets"] == [resource_id(s) for s in subnets(with_key, "private")]


def test_a_created_key_rotates_and_outlives_the_stack(with_key: OfflineRun) -> None:
    key = with_key.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True and key.inputs["deletionWindowInDays"] == 30
    assert key.retain_on_delete is True
    [rule] = with_key.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key.state["arn"]}
    assert rule["bucketKeyEnabled"] is True


def key_use(policy: dict[str, Any], key: str) -> set[str]:
    """The KMS actions a policy allows on `key`, each only through S3 in the key's region."""
    granted = set()
    for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:CreateGrant", "kms:ReEncryptFrom"):
        if allowed(policy, action, key):
            granted.add(action)
    for statement in policy["Statement"]:
        if any(str(a).startswith("kms:") for a in statement["Action"]):
            assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    return granted


def test_each_role_gets_exactly_the_key_use_it_needs(with_key: OfflineRun) -> None:
    key = with_key.one("aws:kms/key:Key").state["arn"]
    read_write = {"kms:Decrypt", "kms:GenerateDataKey"}
    assert key_use(role_policy(with_key, "metaflow-batch-task-datastore"), key) == read_write
    assert key_use(role_policy(with_key, "metaflow-sfn"), key) == read_write  # distributed-map results
    assert key_use(policy_of(with_key.one("aws:iam/policy:Policy").inputs), key) == read_write  # people
    assert key_use(role_policy(with_key, "metaflow-ui-task"), key) == {"kms:Decrypt"}  # reads only
    assert not allowed(role_policy(with_key, "metaflow-batch-task-datastore"), "kms:Decrypt", KEY)  # no other key


def test_a_given_key_is_used_and_granted_not_created() -> None:
    run = offline("production", {"datastore:kmsKey": KEY})
    assert not run.of_type("aws:kms/key:Key")
    [rule] = run.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs[
        "rules"
    ]
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == KEY
    assert key_use(role_policy(run, "metaflow-batch-task-datastore"), KEY) == {"kms:Decrypt", "kms:GenerateDataKey"}


# --- Operability ---------------------------------------------------------------------------------------------------


def test_every_log_group_has_a_retention(production: OfflineRun) -> None:
    groups = production.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert groups and all(g.inputs.get("retentionInDays", 0) > 0 for g in groups)


def test_alarms_watch_the_endpoint_the_service_and_the_database_and_tell_the_topic(production: OfflineRun) -> None:
    topic = production.one("aws:sns/topic:Topic").state["arn"]
    alarms = {a.name.removeprefix("metaflow-"): a.inputs for a in production.of_type(ALARM)}
    api = resource_id(production.one("aws:apigatewayv2/api:Api"))
    cluster = production.one("aws:ecs/cluster:Cluster").state["name"]
    service = production.one("aws:ecs/service:Service").state["name"]
    database = production.one("aws:rds/instance:Instance").state["identifier"]
    expected = {
        "alarm-endpoint-5xx": ("AWS/ApiGateway", "5xx", {"ApiId": api}, "GreaterThanOrEqualToThreshold", 5),
        "alarm-service-no-task": (
            "AWS/ECS",
            "CPUUtilization",
            {"ClusterName": cluster, "ServiceName": service},
            "LessThanThreshold",
            1,
        ),
        "alarm-db-cpu": ("AWS/RDS", "CPUUtilization", {"DBInstanceIdentifier": database}, "GreaterThanThreshold", 80),
        "alarm-db-storage": (
            "AWS/RDS",
            "FreeStorageSpace",
            {"DBInstanceIdentifier": database},
            "LessThanThreshold",
            2 * 1024**3,  # a tenth of 20 GiB
        ),
        "alarm-db-connections": (
            "AWS/RDS",
            "DatabaseConnections",
            {"DBInstanceIdentifier": database},
            "GreaterThanThreshold",
            100,
        ),
    }
    assert {
        name: (a["namespace"], a["metricName"], a["dimensions"], a["comparisonOperator"], a["threshold"])
        for name, a in alarms.items()
    } == expected
    assert all(a["alarmActions"] == [topic] and a["okActions"] == [topic] for a in alarms.values())
    assert alarms["alarm-service-no-task"]["treatMissingData"] == "breaching"  # no task sends no data


def test_alarm_values_are_ones_cloudwatch_accepts() -> None:
    model = SESSION.get_service_model("cloudwatch")
    operators, statistics = (set(model.shape_for(s).enum) for s in ("ComparisonOperator", "Statistic"))
    for spec in service_alarm_specs(20):
        assert spec.comparison in operators and spec.statistic in statistics
        # PutMetricAlarm documents these four; its model leaves the string open.
        assert spec.missing_data in {"breaching", "notBreaching", "ignore", "missing"}
        assert spec.period % 60 == 0 and spec.periods >= 1


def test_failed_batch_jobs_of_this_stacks_queues_are_published_to_the_topic(production: OfflineRun) -> None:
    queue = production.outputs["jobQueueArn"]
    rule = production.one("aws:cloudwatch/eventRule:EventRule").inputs
    assert (
        json.loads(rule["eventPattern"])
        == failed_jobs_pattern([queue])
        == {
            "source": ["aws.batch"],
            "detail-type": ["Batch Job State Change"],
            "detail": {"status": ["FAILED"], "jobQueue": [queue]},
        }
    )
    target = production.one("aws:cloudwatch/eventTarget:EventTarget").inputs
    assert target["arn"] == production.one("aws:sns/topic:Topic").state["arn"]
    assert production.outputs["alertTopicArn"] == target["arn"]


def test_only_this_stacks_rule_and_alarms_may_publish_to_the_topic(production: OfflineRun) -> None:
    topic = production.one("aws:sns/topic:Topic").state["arn"]
    policy = policy_of(production.one("aws:sns/topicPolicy:TopicPolicy").inputs)
    publishers = {
        s["Principal"]["Service"]: sorted(s["Condition"]["ArnEquals"]["aws:SourceArn"]) for s in policy["Statement"]
    }
    assert publishers == {
        "events.amazonaws.com": [production.one("aws:cloudwatch/eventRule:EventRule").state["arn"]],
        "cloudwatch.amazonaws.com": sorted(a.state["arn"] for a in production.of_type(ALARM)),
    }
    assert all(s["Action"] == ["sns:Publish"] and s["Resource"] == [topic] for s in policy["Statement"])


def test_an_email_subscribes_to_the_alerts_and_a_budget_emails_on_its_own() -> None:
    run = offline("production", {"alerts:email": "ops@example.com", "budget:monthlyUsd": 200})
    subscription = run.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert (subscription["protocol"], subscription["endpoint"]) == ("email", "ops@example.com")
    budget = run.one("aws:budgets/budget:Budget").inputs
    assert (budget["budgetType"], budget["timeUnit"], budget["limitAmount"], budget["limitUnit"]) == (
        "COST",
        "MONTHLY",
        "200",
        "USD",
    )
    assert [
        (n["notificationType"], n["threshold"], n["thresholdType"], n["subscriberEmailAddresses"])
        for n in budget["notifications"]
    ] == [("ACTUAL", 80, "PERCENTAGE", ["ops@example.com"]), ("FORECASTED", 100, "PERCENTAGE", ["ops@example.com"])]


def test_budget_values_are_ones_aws_budgets_accepts() -> None:
    model = SESSION.get_service_model("budgets")
    assert {kind for kind, _ in BUDGET_ALERTS} <= set(model.shape_for("NotificationType").enum)
    assert {"GREATER_THAN"} <= set(model.shape_for("ComparisonOperator").enum)
    assert {"PERCENTAGE"} <= set(model.shape_for("ThresholdType").enum)
    assert {"COST"} <= set(model.shape_for("BudgetType").enum) and {"MONTHLY"} <= set(model.shape_for("TimeUnit").enum)


def test_a_budget_goes_to_its_own_email_before_the_alerts_one() -> None:
    run = offline(
        "production",
        {"alerts:email": "ops@example.com", "budget:monthlyUsd": 200, "budget:email": "finance@example.com"},
    )
    budget = run.one("aws:budgets/budget:Budget").inputs
    assert {a for n in budget["notifications"] for a in n["subscriberEmailAddresses"]} == {"finance@example.com"}


def test_minimal_and_dev_have_no_alerts() -> None:
    for preset in ("minimal", "dev"):
        run = offline(preset)
        assert not run.of_type(ALARM) and not run.of_type("aws:sns/topic:Topic")
        assert "alertTopicArn" not in run.outputs


# --- Cost ----------------------------------------------------------------------------------------------------------


def test_production_idles_within_its_budget(production: OfflineRun) -> None:
    cost = production.outputs["estimatedMonthlyCost"]
    assert cost["totalUsd"] <= IDLE_BUDGET_USD
    assert cost["totalUsd"] == estimate_monthly_cost(production.settings, public_subnets=False).total_usd
    items = {line["item"]: line["monthlyUsd"] for line in cost["lines"]}
    assert items["NAT gateway"] == pytest.approx(0.045 * 730)
    assert items["RDS PostgreSQL 17 db.t4g.small (multi-AZ)"] == pytest.approx(2 * 0.032 * 730)
    assert not any("public IPv4 address" in item for item in items)  # private tasks: no addresses
    assert any(usage.startswith("NAT gateway data processing") for usage in cost["notIncluded"])


def test_the_medium_database_of_the_design_would_break_the_budget() -> None:
    """Why the preset takes db.t4g.small: the trade-off stays one documented key away."""
    medium = offline("production", {"db:instanceClass": "db.t4g.medium"})
    assert medium.outputs["estimatedMonthlyCost"]["totalUsd"] > IDLE_BUDGET_USD


def test_a_budget_alone_needs_no_topic() -> None:
    run = offline("dev", {"budget:monthlyUsd": 30, "budget:email": "finance@example.com"})
    assert run.one("aws:budgets/budget:Budget").inputs["limitAmount"] == "30"
    assert not run.of_type("aws:sns/topic:Topic") and "alertTopicArn" not in run.outputs


def test_without_the_metadata_service_alerts_watch_failed_jobs_only() -> None:
    run = offline("minimal", {"alerts:enabled": True})
    assert not run.of_type(ALARM)
    assert json.loads(run.one("aws:cloudwatch/eventRule:EventRule").inputs["eventPattern"])["detail"]["status"] == [
        "FAILED"
    ]
    [statement] = policy_of(run.one("aws:sns/topicPolicy:TopicPolicy").inputs)["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert run.outputs["estimatedMonthlyCost"]["totalUsd"] == 0  # a rule and a topic bill nothing at rest
