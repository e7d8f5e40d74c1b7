"""`metadata:scaleToZero` on the dev preset, by value: an Aurora Serverless v2 cluster that pauses at 0 ACU,
a service at 0 tasks that Pulumi never scales, a route that starts at the waker and that Pulumi never moves,
and the waker wired to exactly this stack's API, service and events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import TODAY, offline, policy_of, stack_config

from metaflow_infra.image_mirror import MissingCopyError, _require_copy, missing_copy_message
from metaflow_infra.lambdas.waker import READY_PROBE_PATH, Config
from metaflow_infra.metadata import WAKING_HEALTH_CHECK
from metaflow_infra.offline import OfflineRun, RecordingMocks, run_offline
from metaflow_infra.scale_to_zero import (
    START_STEP_JOB_NAMES,
    TICK_SCHEDULE,
    WAKER_TIMEOUT_SECONDS,
    WATCH_SECONDS,
    waker_function_name,
)

ON = {"metadata:scaleToZero": True}


@pytest.fixture(scope="module")
def run() -> OfflineRun:
    return offline("dev", ON)


def test_the_database_is_aurora_serverless_v2_that_pauses_at_zero(run: OfflineRun) -> None:
    assert run.of_type("aws:rds/instance:Instance") == []
    cluster = run.one("aws:rds/cluster:Cluster").inputs
    assert cluster["engine"] == "aurora-postgresql" and cluster["engineMode"] == "provisioned"
    assert cluster["engineVersion"] == "17.4"
    assert cluster["serverlessv2ScalingConfiguration"] == {
        "minCapacity": 0,
        "maxCapacity": 2,
        "secondsUntilAutoPause": 300,
    }
    writer = run.one("aws:rds/clusterInstance:ClusterInstance").inputs
    assert writer["instanceClass"] == "db.serverless" and writer["publiclyAccessible"] is False


def test_the_database_forces_tls_and_keeps_its_data(run: OfflineRun) -> None:
    group = run.one("aws:rds/clusterParameterGroup:ClusterParameterGroup")
    assert group.inputs["family"] == "aurora-postgresql17"
    assert {"name": "rds.force_ssl", "value": "1", "applyMethod": "immediate"} in group.inputs["parameters"]
    cluster = run.one("aws:rds/cluster:Cluster")
    assert cluster.inputs["dbClusterParameterGroupName"] == group.state["name"]
    assert cluster.inputs["storageEncrypted"] is True
    assert cluster.inputs["deletionProtection"] is True and cluster.protect
    assert cluster.inputs["skipFinalSnapshot"] is False
    assert cluster.inputs["finalSnapshotIdentifier"].startswith("metaflow-db-final-")
    assert cluster.inputs["backupRetentionPeriod"] == 1
    assert "engineVersion" in cluster.ignore_changes, "Aurora's own minor upgrades must not be undone"


def test_the_password_is_generated_kept_in_secrets_manager_and_never_in_the_task_environment(run: OfflineRun) -> None:
    cluster = run.one("aws:rds/cluster:Cluster")
    [password] = [
        p for p in run.of_type("random:index/randomPassword:RandomPassword") if p.name == "metaflow-db-password"
    ]
    assert cluster.inputs["masterPassword"] == password.state["result"]
    assert "masterPassword" in cluster.secret_inputs
    [task] = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    assert password.state["result"] not in task.inputs["containerDefinitions"]
    containers = json.loads(task.inputs["containerDefinitions"])
    for container in containers:
        [secret] = container["secrets"]
        assert secret["name"] == "MF_METADATA_DB_PSWD" and ":secret:metaflow-db-password" in secret["valueFrom"]


def test_the_waker_resumes_the_database_through_the_data_api_knowing_only_arns(run: OfflineRun) -> None:
    """The Data API reads `username` and `password` from the secret with the waker's own permission; the
    password is never in the waker's settings, and the task takes only the secret's `password` key."""
    cluster = run.one("aws:rds/cluster:Cluster")
    assert cluster.inputs["enableHttpEndpoint"] is True
    [password] = [
        p for p in run.of_type("random:index/randomPassword:RandomPassword") if p.name == "metaflow-db-password"
    ]
    [secret] = [s for s in run.of_type("aws:secretsmanager/secret:Secret") if s.name == "metaflow-db-password"]
    [version] = [
        v for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion") if v.name == "metaflow-db-password"
    ]
    assert json.loads(version.inputs["secretString"]) == {"username": "metaflow", "password": password.state["result"]}
    assert "secretString" in version.secret_inputs
    [task] = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    for container in json.loads(task.inputs["containerDefinitions"]):
        assert [s["valueFrom"] for s in container["secrets"]] == [f"{secret.state['arn']}:password::"]
    [waker] = [f.inputs for f in run.of_type("aws:lambda/function:Function") if f.name == "metaflow-waker"]
    variables = waker["environment"]["variables"]
    assert (variables["DB_CLUSTER_ARN"], variables["DB_SECRET_ARN"]) == (cluster.state["arn"], secret.state["arn"])
    assert variables["DB_NAME"] == "metaflow"
    assert password.state["result"] not in json.dumps(variables)
    policies = {p.name: policy_of(p.inputs) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    statements = {s["Sid"]: s for s in policies["metaflow-waker"]["Statement"]}
    assert statements["ResumeTheDatabase"]["Action"] == ["rds-data:ExecuteStatement"]
    assert statements["ResumeTheDatabase"]["Resource"] == [cluster.state["arn"]]
    assert statements["ReadItsCredentials"]["Resource"] == [secret.state["arn"]]


def test_where_the_data_api_is_not_documented_the_migrator_resumes_the_database_as_before() -> None:
    """eu-west-1's row of AWS's Data API table is not among those read (postgres.toml [data_api])."""
    run = offline("dev", ON, region="eu-west-1")
    assert run.one("aws:rds/cluster:Cluster").inputs.get("enableHttpEndpoint") is None
    [version] = [
        v for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion") if v.name == "metaflow-db-password"
    ]
    assert not version.inputs["secretString"].startswith("{")
    [task] = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    for container in json.loads(task.inputs["containerDefinitions"]):
        assert not container["secrets"][0]["valueFrom"].endswith("::")
    [waker] = [f.inputs for f in run.of_type("aws:lambda/function:Function") if f.name == "metaflow-waker"]
    assert "DB_CLUSTER_ARN" not in waker["environment"]["variables"]
    policies = {p.name: policy_of(p.inputs) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    assert "ResumeTheDatabase" not in {s["Sid"] for s in policies["metaflow-waker"]["Statement"]}


def test_the_service_starts_at_no_task_on_demand_and_pulumi_leaves_its_count_to_the_waker(run: OfflineRun) -> None:
    service = run.one("aws:ecs/service:Service")
    assert service.inputs["desiredCount"] == 0
    assert service.ignore_changes == ["desiredCount"]
    assert service.inputs["capacityProviderStrategies"] == [{"capacityProvider": "FARGATE", "weight": 1}]


def test_the_task_connects_to_the_aurora_endpoint_and_checks_its_health_often(run: OfflineRun) -> None:
    cluster = run.one("aws:rds/cluster:Cluster")
    [task] = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    containers = {c["name"]: c for c in json.loads(task.inputs["containerDefinitions"])}
    environment = {e["name"]: e["value"] for e in containers["metadata"]["environment"]}
    # The mocks name the cluster's endpoint after the resource: the writer's endpoint, not an instance's.
    assert (
        environment["MF_METADATA_DB_HOST"]
        == f"{cluster.state['name']}-id.cluster-abcdefghij.us-east-1.rds.amazonaws.com"
    )
    assert environment["MF_METADATA_DB_SSL_MODE"] == "require"
    check = containers["metadata"]["healthCheck"]
    assert check["interval"] == WAKING_HEALTH_CHECK.interval_seconds == 5  # ECS's least
    # A serving task is replaced only after 30 s of failed checks, not 15 s: a short stall costs no new wake.
    assert check["interval"] * check["retries"] == 30 and check["retries"] <= 10  # ECS allows 1-10 retries
    # The first check waits for a server still starting: a refused connection is tried again each second,
    # three times, within ECS's 5 s check timeout.
    assert check["command"] == [
        "CMD-SHELL",
        "curl -fsS --retry 3 --retry-delay 1 --retry-connrefused http://localhost:8080/ping || exit 1",
    ]
    assert check["timeout"] == 5 > WAKING_HEALTH_CHECK.connect_retries


def test_without_scale_to_zero_the_health_check_is_unchanged() -> None:
    [task] = offline("dev").of_type("aws:ecs/taskDefinition:TaskDefinition")
    containers = {c["name"]: c for c in json.loads(task.inputs["containerDefinitions"])}
    check = containers["metadata"]["healthCheck"]
    assert (check["interval"], check["retries"]) == (30, 3)


def integrations(run: OfflineRun) -> dict[str, Any]:
    return {i.name: i for i in run.of_type("aws:apigatewayv2/integration:Integration")}


def routes(run: OfflineRun) -> dict[str, Any]:
    return {r.name: r for r in run.of_type("aws:apigatewayv2/route:Route")}


def test_the_route_starts_at_the_waker_and_pulumi_never_moves_it(run: OfflineRun) -> None:
    route = routes(run)["metaflow-metadata"]
    waker = integrations(run)["metaflow-waker"]
    assert route.inputs["routeKey"] == "$default"
    assert route.inputs["target"].startswith("integrations/metaflow-waker-")
    assert route.ignore_changes == ["target"]
    assert route.inputs["authorizationType"] == "CUSTOM", "unauthenticated requests never reach the waker"
    assert waker.inputs["integrationType"] == "AWS_PROXY" and waker.inputs["payloadFormatVersion"] == "2.0"


def test_without_scale_to_zero_the_route_goes_to_the_service_and_pulumi_owns_it() -> None:
    dev = offline("dev")
    route = dev.one("aws:apigatewayv2/route:Route")
    assert route.ignore_changes == []
    assert list(integrations(dev)) == ["metaflow-metadata"]
    assert len(dev.of_type("aws:apigatewayv2/api:Api")) == 1, "no readiness probe without a waker"
    assert dev.of_type("aws:scheduler/schedule:Schedule") == []


def test_the_waker_is_wired_to_this_stacks_api_route_service_and_cloud_map(run: OfflineRun) -> None:
    [waker] = [f.inputs for f in run.of_type("aws:lambda/function:Function") if f.name == "metaflow-waker"]
    variables = waker["environment"]["variables"]
    route = routes(run)["metaflow-metadata"]
    service = run.one("aws:ecs/service:Service")
    waker_integration = integrations(run)["metaflow-waker"]
    assert waker["name"] == waker_function_name("metaflow-dev") == "metaflow-dev-waker"
    assert (
        waker_integration.inputs["integrationUri"]
        == "arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"
    )
    assert route.inputs["target"] == f"integrations/{variables['WAKER_INTEGRATION_ID']}"
    assert variables["API_ID"] == route.inputs["apiId"] == waker_integration.inputs["apiId"]
    assert variables["SERVICE"] == service.state["name"]
    assert variables["CLUSTER"] == service.inputs["cluster"].rsplit("/", 1)[-1]
    assert variables["DISCOVERY_SERVICE_ID"] == "metadata-id"  # the Cloud Map service's id in the mocks
    assert variables["SERVICE_INTEGRATION_ID"] != variables["WAKER_INTEGRATION_ID"]
    assert variables["IDLE_MINUTES"] == "15" and variables["WATCH_SECONDS"] == str(WATCH_SECONDS)
    assert waker["timeout"] == WAKER_TIMEOUT_SECONDS > WATCH_SECONDS


def test_the_waker_probes_and_forwards_the_way_clients_reach_the_task_on_an_api_of_its_own(run: OfflineRun) -> None:
    """Same VPC link, same Cloud Map service; the probe on the service's /ping, IAM-authorized and callable by
    the waker alone; forwards on every other path unchanged, as the main API's route takes them, behind the same
    API-key check; a separate API, so its requests never count among the main API's (which decide idleness)."""
    apis = {a.name: a for a in run.of_type("aws:apigatewayv2/api:Api")}
    assert set(apis) == {"metaflow-metadata", "metaflow-ready-probe"}
    probe_api, main_api = apis["metaflow-ready-probe"], apis["metaflow-metadata"]
    probe_api_id, main_api_id = (f"{api.state['name']}-id" for api in (probe_api, main_api))  # the mocks' ids
    found = integrations(run)
    probe, forward, service = (
        found["metaflow-ready-probe"],
        found["metaflow-ready-probe-forward"],
        found["metaflow-metadata"],
    )
    assert probe.inputs["apiId"] == forward.inputs["apiId"] == probe_api_id != main_api_id == service.inputs["apiId"]
    for integration in (probe, forward):
        assert integration.inputs["connectionType"] == service.inputs["connectionType"] == "VPC_LINK"
        assert integration.inputs["connectionId"] == service.inputs["connectionId"]
        assert integration.inputs["integrationUri"] == service.inputs["integrationUri"]  # the Cloud Map service
    assert probe.inputs["requestParameters"] == {"overwrite:path": "/ping"}
    ignored = ("apiId", "connectionId", "integrationUri")
    assert {k: v for k, v in forward.inputs.items() if k not in ignored} == {
        k: v for k, v in service.inputs.items() if k not in ignored
    }, "a forwarded request must reach the service exactly as one on the main route does"
    probe_routes = {r.inputs["routeKey"]: r.inputs for r in routes(run).values() if r.inputs["apiId"] == probe_api_id}
    assert probe_routes.keys() == {f"GET {READY_PROBE_PATH}", "$default"}
    ready, forwarding = probe_routes[f"GET {READY_PROBE_PATH}"], probe_routes["$default"]
    assert ready["target"] == f"integrations/{probe.state['name']}-id"
    assert ready["authorizationType"] == "AWS_IAM" and "authorizerId" not in ready
    assert forwarding["target"] == f"integrations/{forward.state['name']}-id"
    stages = {s.inputs["apiId"]: s for s in run.of_type("aws:apigatewayv2/stage:Stage")}
    assert stages[probe_api_id].inputs["name"] == "$default" and stages[probe_api_id].inputs["autoDeploy"] is True
    main_routes = [r for r in routes(run).values() if r.inputs["apiId"] == main_api_id]
    assert [r.inputs["authorizationType"] for r in main_routes] == ["CUSTOM"], "clients' routes all need the key"
    # The forwarding route checks the key exactly as the main route does: same function, same settings.
    authorizers = {a.inputs["apiId"]: a for a in run.of_type("aws:apigatewayv2/authorizer:Authorizer")}
    assert authorizers.keys() == {main_api_id, probe_api_id}
    assert forwarding["authorizationType"] == "CUSTOM" == main_routes[0].inputs["authorizationType"]
    assert forwarding["authorizerId"] == f"{authorizers[probe_api_id].state['name']}-id"
    assert main_routes[0].inputs["authorizerId"] == f"{authorizers[main_api_id].state['name']}-id"
    assert {k: v for k, v in authorizers[probe_api_id].inputs.items() if k != "apiId"} == {
        k: v for k, v in authorizers[main_api_id].inputs.items() if k != "apiId"
    }
    permissions = {p.name: p.inputs for p in run.of_type("aws:lambda/permission:Permission")}
    for api, permission in ((probe_api, "metaflow-ready-probe-authorizer"), (main_api, "metaflow-authorizer")):
        authorizer = authorizers[f"{api.state['name']}-id"]
        assert permissions[permission]["sourceArn"] == (
            f"{api.state['executionArn']}/authorizers/{authorizer.state['name']}-id"
        )
        assert permissions[permission]["function"] == permissions["metaflow-authorizer"]["function"]
    # The stage (which the waker's settings name) waits for both routes and the authorizer's permission: the
    # waker's code that forwards never meets API Gateway's own 404 or 500 for a missing one.
    permission = _named(run, "aws:lambda/permission:Permission", "metaflow-ready-probe-authorizer")
    probe_route_urns = {r.urn for r in routes(run).values() if r.inputs["apiId"] == probe_api_id}
    assert {permission.urn, *probe_route_urns} <= set(stages[probe_api_id].dependencies)
    [waker] = [f for f in run.of_type("aws:lambda/function:Function") if f.name == "metaflow-waker"]
    config = Config.from_env(waker.inputs["environment"]["variables"])
    assert config.probe_url == probe_api.state["apiEndpoint"] + "/ready"
    assert config.forward_url == probe_api.state["apiEndpoint"]
    # The waker may call the probe alone: its forwards carry the client's key, not its own rights.
    policies = {p.name: policy_of(p.inputs) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    invoking = [s for s in policies["metaflow-waker"]["Statement"] if "execute-api:Invoke" in s["Action"]]
    assert invoking == [
        {
            "Sid": "ProbeTheTaskAsClientsReachIt",
            "Effect": "Allow",
            "Action": ["execute-api:Invoke"],
            "Resource": [probe_api.state["executionArn"] + "/$default/GET/ready"],
        }
    ]


class Reads(dict[str, str]):
    """An environment that remembers which variables were read."""

    def __init__(self, variables: dict[str, str]) -> None:
        super().__init__(variables)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


def test_the_waker_reads_every_setting_the_stack_gives_it_and_nothing_else(run: OfflineRun) -> None:
    """The contract between scale_to_zero.py and lambdas/waker.py: a name misspelt on either side would fall
    back to a default or fail only on AWS."""
    [waker] = [f for f in run.of_type("aws:lambda/function:Function") if f.name == "metaflow-waker"]
    variables = Reads(waker.inputs["environment"]["variables"])
    config = Config.from_env(variables)
    assert variables.read >= set(variables), f"set but never read: {set(variables) - variables.read}"
    assert config.watch_seconds == WATCH_SECONDS and config.idle_minutes == 15
    assert (config.database_cluster_arn, config.database_secret_arn, config.database_name) == (
        variables["DB_CLUSTER_ARN"],
        variables["DB_SECRET_ARN"],
        "metaflow",
    )
    assert config.probe_url.endswith(READY_PROBE_PATH)


def test_awake_requests_take_the_same_path_as_devs_so_they_pay_nothing_more(run: OfflineRun) -> None:
    """What `plan --compare`'s "0 ms added" rests on: the route's awake target is the integration `dev` has,
    the same in every input (no proxy, no mapping), behind the same authorizer."""
    awake, always_on = integrations(run)["metaflow-metadata"], integrations(offline("dev"))["metaflow-metadata"]
    assert {k: v for k, v in awake.inputs.items() if k not in ("apiId", "connectionId", "integrationUri")} == {
        k: v for k, v in always_on.inputs.items() if k not in ("apiId", "connectionId", "integrationUri")
    }
    assert "requestParameters" not in awake.inputs and awake.inputs["integrationType"] == "HTTP_PROXY"
    authorizers = [
        _named(run, "aws:apigatewayv2/authorizer:Authorizer", "metaflow-api-key"),
        offline("dev").one("aws:apigatewayv2/authorizer:Authorizer"),
    ]
    assert {k: v for k, v in authorizers[0].inputs.items() if k not in ("apiId", "authorizerUri")} == {
        k: v for k, v in authorizers[1].inputs.items() if k not in ("apiId", "authorizerUri")
    }


def test_a_runs_start_step_queued_on_the_stacks_batch_queues_wakes_the_service(run: OfflineRun) -> None:
    """Steps on Batch keep Metaflow's 5 retries and a scheduled run has no client to wake the service first:
    the start step's RUNNABLE event does, while Batch starts an instance. Late events are dropped."""
    pattern = json.loads(
        _named(run, "aws:cloudwatch/eventRule:EventRule", "metaflow-run-queued").inputs["eventPattern"]
    )
    queues = sorted(run.outputs[name] for name in ("jobQueueArn",))
    assert pattern == {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {"jobQueue": queues, "status": ["RUNNABLE"], "jobName": [{"wildcard": START_STEP_JOB_NAMES}]},
    }
    target = _named(run, "aws:cloudwatch/eventTarget:EventTarget", "metaflow-run-queued").inputs
    assert target["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"
    assert target["retryPolicy"] == {"maximumRetryAttempts": 0, "maximumEventAgeInSeconds": 60}
    permission = _named(run, "aws:lambda/permission:Permission", "metaflow-waker-runs").inputs
    rule = _named(run, "aws:cloudwatch/eventRule:EventRule", "metaflow-run-queued")
    assert (permission["principal"], permission["sourceArn"]) == ("events.amazonaws.com", rule.state["arn"])


def test_every_queue_of_the_stack_wakes_the_service() -> None:
    run = offline("dev", {**ON, "compute:gpu": True})
    pattern = json.loads(
        _named(run, "aws:cloudwatch/eventRule:EventRule", "metaflow-run-queued").inputs["eventPattern"]
    )
    assert pattern["detail"]["jobQueue"] == sorted([run.outputs["jobQueueArn"], run.outputs["gpuJobQueue"]])


def batch_event(job_name: str, queue: str, status: str = "RUNNABLE") -> dict[str, Any]:
    """A Batch job state change as EventBridge delivers it (Batch User Guide, job state change events)."""
    return {
        "version": "0",
        "id": "c8f9c4b5-76e5-d76a-f980-7011e206042b",
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "account": "123456789012",
        "time": "2026-12-01T09:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:batch:us-east-1:123456789012:job/4c7599ae"],
        "detail": {"jobName": job_name, "jobId": "4c7599ae", "jobQueue": queue, "status": status},
    }


def test_the_rule_matches_step_functions_start_steps_only_by_eventbridges_own_rules(run: OfflineRun) -> None:
    """The deployed pattern, matched by moto's EventBridge, against job names Metaflow's own code gives: a
    Step Functions run's start step on the stack's queue when RUNNABLE, and nothing else."""
    from metaflow.plugins.aws.batch.batch import Batch
    from moto.events.models import EventPattern

    pattern = EventPattern.load(
        _named(run, "aws:cloudwatch/eventRule:EventRule", "metaflow-run-queued").inputs["eventPattern"]
    )
    queue = run.outputs["jobQueueArn"]

    def job(user: str, step: str, run_id: str | None = None, task_id: str | None = None) -> str:
        return Batch._job_name(None, user, "HelloFlow", run_id, step, task_id, None)  # type: ignore[arg-type]

    assert pattern.matches_event(batch_event(job("SFN", "start"), queue))
    assert not pattern.matches_event(batch_event(job("SFN", "start"), queue, status="STARTING"))
    assert not pattern.matches_event(batch_event(job("SFN", "start"), queue.replace("queue", "elsewhere")))
    for step in ("end", "train", "startup", "restart", "join"):
        assert not pattern.matches_event(batch_event(job("SFN", step), queue)), step
    # A run started from a laptop: its client woke the service before it submitted the step.
    assert not pattern.matches_event(batch_event(job("alice", "start", "1733212345", "1"), queue))


def test_idle_minutes_reach_the_waker() -> None:
    run = offline("dev", {**ON, "metadata:idleMinutes": 45})
    [waker] = [f for f in run.of_type("aws:lambda/function:Function") if f.name == "metaflow-waker"]
    assert waker.inputs["environment"]["variables"]["IDLE_MINUTES"] == "45"


def test_a_schedule_checks_every_minute_and_an_ecs_rule_reports_stopping_tasks(run: OfflineRun) -> None:
    schedule = run.one("aws:scheduler/schedule:Schedule").inputs
    assert schedule["scheduleExpression"] == TICK_SCHEDULE == "rate(1 minute)"
    assert schedule["target"]["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"
    assert json.loads(schedule["target"]["input"]) == {"action": "tick"}
    pattern = json.loads(
        _named(run, "aws:cloudwatch/eventRule:EventRule", "metaflow-task-stopping").inputs["eventPattern"]
    )
    service = run.one("aws:ecs/service:Service")
    assert pattern == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "clusterArn": [service.inputs["cluster"]],
            "group": [f"service:{service.state['name']}"],
            "desiredStatus": ["STOPPED"],
        },
    }
    target = _named(run, "aws:cloudwatch/eventTarget:EventTarget", "metaflow-task-stopping")
    assert target.inputs["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"


def test_only_this_api_this_rule_and_the_scheduler_role_may_run_the_waker(run: OfflineRun) -> None:
    permissions = {p.name: p.inputs for p in run.of_type("aws:lambda/permission:Permission")}
    assert permissions["metaflow-waker-api"]["principal"] == "apigateway.amazonaws.com"
    assert permissions["metaflow-waker-api"]["sourceArn"].endswith("/*/$default")
    assert permissions["metaflow-waker-events"]["principal"] == "events.amazonaws.com"
    assert permissions["metaflow-waker-events"]["sourceArn"].startswith("arn:aws:events:us-east-1:")
    policies = {p.name: policy_of(p.inputs) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    [statement] = policies["metaflow-waker-scheduler"]["Statement"]
    assert statement["Action"] == ["lambda:InvokeFunction"]
    assert statement["Resource"] == ["arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"]


def test_the_waker_may_touch_only_this_service_and_this_route(run: OfflineRun) -> None:
    policies = {p.name: policy_of(p.inputs) for p in run.of_type("aws:iam/rolePolicy:RolePolicy")}
    statements = {s["Sid"]: s for s in policies["metaflow-waker"]["Statement"]}
    service = run.one("aws:ecs/service:Service")
    cluster = service.inputs["cluster"].rsplit("/", 1)[-1]
    route = routes(run)["metaflow-metadata"]
    assert statements["StartAndStopTheService"]["Resource"] == [
        f"arn:aws:ecs:us-east-1:123456789012:service/{cluster}/{service.state['name']}"
    ]
    assert statements["SeeTheirHealth"]["Resource"] == [f"arn:aws:ecs:us-east-1:123456789012:task/{cluster}/*"]
    assert statements["SwitchTheRoute"]["Action"] == ["apigateway:GET", "apigateway:PATCH"]
    assert statements["SwitchTheRoute"]["Resource"] == [
        f"arn:aws:apigateway:us-east-1::/apis/{route.inputs['apiId']}/routes/{route.inputs['apiId']}"
    ]  # the mocks give the API and its route the same id
    assert statements["StartItsWatcher"]["Resource"] == [
        "arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"
    ]
    discovery = run.one("aws:servicediscovery/service:Service")
    assert statements["FindRegisteredTasks"]["Condition"] == {
        "ArnEquals": {"servicediscovery:ServiceArn": discovery.state["arn"]}
    }


def test_the_profile_keeps_the_retry_count_that_outlasts_a_wake(run: OfflineRun) -> None:
    assert run.outputs["metaflowProfile"]["METAFLOW_SERVICE_RETRY_COUNT"] == "9"


def test_idle_cost_is_within_two_dollars_in_us_east_1(run: OfflineRun) -> None:
    estimate = run.outputs["estimatedMonthlyCost"]
    assert estimate["totalUsd"] == 1.45
    assert {line["item"].split(" (")[0].split(":")[0] for line in estimate["lines"]} == {
        "Aurora Serverless v2 compute",
        "Aurora storage",
        "ECR copy of the metadata-service image",
        "Waker's idle check every minute",
        "Secrets Manager",
        "Cloud Map private DNS namespace",
    }


def test_the_private_ui_wakes_the_service_through_the_waker_and_people_may_call_it() -> None:
    run = offline("dev", {**ON, "ui:enabled": True})
    assert run.outputs["ui"]["wakeFunction"] == "metaflow-dev-waker"
    statements = {s["Sid"]: s for s in policy_of(run.one("aws:iam/policy:Policy").inputs)["Statement"]}
    assert statements["WakeTheMetadataService"] == {
        "Sid": "WakeTheMetadataService",
        "Effect": "Allow",
        "Action": ["lambda:InvokeFunction"],
        "Resource": ["arn:aws:lambda:us-east-1:123456789012:function:metaflow-dev-waker"],
    }
    # The UI backend reads the same database secret, now JSON: it takes the `password` key too.
    for task in run.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        for container in json.loads(task.inputs["containerDefinitions"]):
            assert container["secrets"][0]["valueFrom"].endswith(":password::")


def test_without_scale_to_zero_people_get_no_waker_to_call() -> None:
    run = offline("dev", {"ui:enabled": True})
    assert "wakeFunction" not in run.outputs["ui"]
    sids = {s["Sid"] for s in policy_of(run.one("aws:iam/policy:Policy").inputs)["Statement"]}
    assert "WakeTheMetadataService" not in sids


def test_the_estimate_output_adds_what_an_awake_hour_costs(run: OfflineRun) -> None:
    estimate = run.outputs["estimatedMonthlyCost"]
    assert estimate["awakeHourUsd"] == 0.0802
    assert estimate["awakeHour"][0]["item"] == "Aurora Serverless v2 at 0.5 ACU"
    assert "awakeHourUsd" not in offline("dev").outputs["estimatedMonthlyCost"]


def _named(run: OfflineRun, type_: str, name: str) -> Any:
    [resource] = [r for r in run.of_type(type_) if r.name == name]
    return resource


def test_the_image_is_copied_into_an_ecr_repository_of_the_stack_when_pulumi_up_runs(run: OfflineRun) -> None:
    repository = run.one("aws:ecr/repository:Repository")
    assert repository.inputs["name"] == "metaflow-dev/metadata-service" and "name" in repository.ignore_changes
    assert repository.inputs["imageTagMutability"] == "IMMUTABLE"
    assert repository.inputs["forceDelete"] is True  # copies of a public image only
    assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository.inputs["encryptionConfigurations"] == [{"encryptionType": "AES256"}]
    function = _named(run, "aws:lambda/function:Function", "metaflow-image-mirror")
    assert function.inputs["handler"] == "mirror.handler" and function.inputs["timeout"] == 900
    copy = run.one("aws:lambda/invocation:Invocation")
    assert copy.inputs["functionName"] == function.state["name"]
    assert json.loads(copy.inputs["input"]) == {
        "image": "netflixoss/metaflow_metadata_service:v2.5.1",
        "repository": repository.state["name"],
    }
    # The function pushes at once: its role's policy must exist before the invocation.
    policy = _named(run, "aws:iam/rolePolicy:RolePolicy", "metaflow-image-mirror")
    assert policy.urn in copy.dependencies


def test_pulumi_up_warns_when_the_copied_image_is_larger_than_the_one_the_wake_time_rests_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copy answers its compressed size; above the 413 MB the task-start figure was measured with, the wake
    may take longer than documented, and `pulumi up` says so."""
    computed = RecordingMocks._computed

    def larger(self: RecordingMocks, type_: str, resource_id: str, arn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        state = computed(self, type_, resource_id, arn, inputs)
        if type_ == "aws:lambda/invocation:Invocation":
            state["result"] = json.dumps({**json.loads(state["result"]), "compressedBytes": 500_000_000})
        return state

    monkeypatch.setattr(RecordingMocks, "_computed", larger)
    warnings = run_offline(stack_config("dev", ON), today=TODAY).warnings
    assert [w for w in warnings if "metadata-service image is 500 MB compressed, larger than the 413 MB" in w]
    monkeypatch.undo()
    assert not [w for w in offline("dev", ON).warnings if "compressed, larger than" in w]


def test_the_mirror_may_push_to_its_repository_only(run: OfflineRun) -> None:
    repository = run.one("aws:ecr/repository:Repository")
    statements = {
        s["Sid"]: s
        for s in policy_of(_named(run, "aws:iam/rolePolicy:RolePolicy", "metaflow-image-mirror").inputs)["Statement"]
    }
    assert statements["PushToOneRepository"]["Resource"] == [repository.state["arn"]]
    assert "ecr:PutImage" in statements["PushToOneRepository"]["Action"]
    assert set(statements) == {"PushToOneRepository", "WriteOneLogGroup"}


def test_the_service_and_the_ui_run_the_copy_by_the_digest_the_mirror_answered() -> None:
    run = offline("dev", {**ON, "ui:enabled": True})
    repository = run.one("aws:ecr/repository:Repository")
    answer = json.loads(run.one("aws:lambda/invocation:Invocation").state["result"])
    expected = f"{repository.state['repositoryUrl']}@{answer['digest']}"
    tasks = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    assert len(tasks) == 2
    for task in tasks:
        assert {container["image"] for container in json.loads(task.inputs["containerDefinitions"])} == {expected}
    # Each task's execution role may pull from that repository, and from no other.
    for role_policy in ("metaflow-metadata-execution", "metaflow-ui-execution"):
        statements = {
            s["Sid"]: s
            for s in policy_of(_named(run, "aws:iam/rolePolicy:RolePolicy", role_policy).inputs)["Statement"]
        }
        assert statements["PullFromOneRepository"]["Resource"] == [repository.state["arn"]]
        assert statements["PullFromOneRepository"]["Action"] == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


def test_without_scale_to_zero_tasks_pull_the_configured_image_and_roles_get_no_ecr_rights() -> None:
    run = offline("dev", {"ui:enabled": True})
    assert not any(r.type == "metaflow:infra:ImageMirror" for r in run.resources)
    for task in run.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        images = {container["image"] for container in json.loads(task.inputs["containerDefinitions"])}
        assert images == {"netflixoss/metaflow_metadata_service:v2.5.1"}
    for role_policy in ("metaflow-metadata-execution", "metaflow-ui-execution"):
        actions = [
            a
            for s in policy_of(_named(run, "aws:iam/rolePolicy:RolePolicy", role_policy).inputs)["Statement"]
            for a in s["Action"]
        ]
        assert not any(action.startswith("ecr:") for action in actions)


@pytest.mark.parametrize(
    "gone, message",
    [
        ("copy", "is missing from ECR repository metaflow-dev/metadata-service"),
        ("repository", "ECR repository metaflow-dev/metadata-service, which holds .* is gone"),
    ],
)
def test_the_program_stops_when_the_copy_or_its_repository_is_gone(
    gone: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real program on mocks whose ECR no longer lists the copy, or the repository: the run fails with
    the way back, before any task could be declared to pull an image that is not there."""
    answer = RecordingMocks._answer

    def without_it(self: RecordingMocks, token: str, args: dict[str, Any]) -> dict[str, Any]:
        result = answer(self, token, args)
        if gone == "copy" and token == "aws:ecr/getImages:getImages":
            return {**result, "imageIds": []}
        if gone == "repository" and token == "aws:ecr/getRepositories:getRepositories":
            return {**result, "names": ["someone-elses/repository"]}
        return result

    monkeypatch.setattr(RecordingMocks, "_answer", without_it)
    with pytest.raises(MissingCopyError, match=message):
        run_offline(stack_config("dev", ON), today=TODAY)
    monkeypatch.undo()
    assert run_offline(stack_config("dev", ON), today=TODAY).outputs["metaflowProfile"], "later runs are unharmed"


def test_a_new_repository_copies_the_image_again(run: OfflineRun) -> None:
    [repository] = run.of_type("aws:ecr/repository:Repository")
    [copy] = run.of_type("aws:lambda/invocation:Invocation")
    assert copy.replace_with == [repository.urn]


def test_a_copy_deleted_since_pulumi_up_made_it_stops_the_next_preview_with_the_way_back() -> None:
    urn = "urn:pulumi:dev::metaflow-infra::metaflow:infra:ImageMirror$aws:lambda/invocation:Invocation::mirror"
    assert missing_copy_message("metaflow-dev/metadata-service", "sha256:aa", ["sha256:bb", "sha256:aa"], urn) is None
    message = missing_copy_message("metaflow-dev/metadata-service", "sha256:aa", ["sha256:bb"], urn)
    assert message is not None and "sha256:aa is missing from ECR repository metaflow-dev/metadata-service" in message
    assert message.endswith(f"`pulumi up --replace '{urn}'`")
    with pytest.raises(MissingCopyError, match="is missing"):
        _require_copy("metaflow-dev/metadata-service", "sha256:aa", [], urn)
