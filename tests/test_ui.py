"""The Metaflow UI: private by default (no ingress, no task at rest), an allow-listed load balancer, or
public behind HTTPS and sign-in; one backend container on the metadata service's database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import offline, policy_of
from parliament import analyze_policy_string
from test_profile import read_with_metaflow

from metaflow_infra.costs import estimate_monthly_cost
from metaflow_infra.offline import DeclaredResource, OfflineRun
from metaflow_infra.settings import ConfigError, load_settings

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab"
OFFICE = "203.0.113.0/24"
PRIVATE = {"ui:enabled": True}
ALLOW_LIST = {"ui:enabled": True, "ui:access": "allowList", "ui:allowedCidrs": [OFFICE]}
ALLOW_LIST_TLS = {**ALLOW_LIST, "ui:certificateArn": CERT, "ui:domain": "mf.example.com"}
PUBLIC = {
    "ui:enabled": True,
    "ui:access": "public",
    "ui:certificateArn": CERT,
    "ui:domain": "mf.example.com",
    "ui:hostedZoneId": "Z0123456789ABC",
}
OIDC = {
    "issuer": "https://idp.example.com",
    "authorizationEndpoint": "https://idp.example.com/auth",
    "tokenEndpoint": "https://idp.example.com/token",
    "userInfoEndpoint": "https://idp.example.com/userinfo",
    "clientId": "metaflow",
    "clientSecret": "s3cr3t",
}
SERVICE = "aws:ecs/service:Service"
LISTENER = "aws:lb/listener:Listener"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ACCEPTED_UI_FINDINGS = {
    (
        "RESOURCE_STAR",
        "ecs:ListTasks",
    ): "ListTasks names no resource for Fargate tasks; the ecs:cluster condition scopes it",
    ("UNKNOWN_CONDITION_FOR_ACTION", "ssm:SessionDocumentAccessCheck"): "a Session Manager key parliament's copy of "
    "the reference lacks (Session Manager guide: 'Enforce a session document permission check')",
}


@pytest.fixture(scope="module")
def private() -> OfflineRun:
    return offline("dev", PRIVATE)


@pytest.fixture(scope="module")
def public() -> OfflineRun:
    return offline("dev", PUBLIC)


def ui_service(run: OfflineRun) -> DeclaredResource:
    [service] = [s for s in run.of_type(SERVICE) if s.name == "metaflow-ui"]
    return service


def ui_container(run: OfflineRun) -> dict[str, Any]:
    [task] = [t for t in run.of_type("aws:ecs/taskDefinition:TaskDefinition") if t.name == "metaflow-ui"]
    [container] = json.loads(task.inputs["containerDefinitions"])
    return container


def group(run: OfflineRun, name: str) -> str:
    [found] = [g for g in run.of_type("aws:ec2/securityGroup:SecurityGroup") if g.name == name]
    return f"{found.state['name']}-id"


def test_the_ui_alone_is_private_with_no_way_in_from_outside(private: OfflineRun) -> None:
    assert not private.of_type("aws:lb/loadBalancer:LoadBalancer") and not private.of_type(LISTENER)
    outside = [r for r in private.of_type(INGRESS) if "cidrIpv4" in r.inputs or "cidrIpv6" in r.inputs]
    assert not outside
    ui_group = group(private, "metaflow-ui")
    assert not [r for r in private.of_type(INGRESS) if r.inputs["securityGroupId"] == ui_group]


def test_the_private_ui_runs_no_task_at_rest_and_admits_ecs_exec(private: OfflineRun) -> None:
    service = ui_service(private)
    assert service.inputs["desiredCount"] == 0 and service.inputs["enableExecuteCommand"] is True
    assert "desiredCount" in service.ignore_changes  # a `pulumi up` never stops an open session
    assert "loadBalancers" not in service.inputs or not service.inputs["loadBalancers"]


def test_the_private_ui_url_is_the_local_tunnel_and_metaflow_reads_it(private: OfflineRun, tmp_path: Path) -> None:
    assert private.outputs["uiUrl"] == "http://localhost:8083"
    profile = private.outputs["metaflowProfile"]
    assert profile["METAFLOW_UI_URL"] == "http://localhost:8083"
    assert read_with_metaflow(profile, tmp_path)["METAFLOW_UI_URL"] == "http://localhost:8083"


def test_the_ui_command_finds_what_it_needs_in_the_ui_output(private: OfflineRun) -> None:
    described = private.outputs["ui"]
    cluster = private.one("aws:ecs/cluster:Cluster").state["name"]
    assert described == {
        "access": "private",
        "url": "http://localhost:8083",
        "cluster": cluster,
        "service": ui_service(private).state["name"],
        "container": "ui",
        "port": 8083,
        "region": "us-east-1",
    }


def test_one_backend_container_serves_api_bundle_and_websockets_on_the_shared_database(private: OfflineRun) -> None:
    container = ui_container(private)
    assert container["image"] == private.settings.metadata.image
    assert container["command"] == ["/opt/latest/bin/python3", "-m", "services.ui_backend_service.ui_server"]
    assert container["portMappings"] == [{"containerPort": 8083, "protocol": "tcp"}]
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert environment["MF_METADATA_DB_SSL_MODE"] == "require" and environment["UI_ENABLED"] == "1"
    assert environment["MF_METADATA_DB_HOST"] == private.one("aws:rds/instance:Instance").state["address"]
    assert "MF_METADATA_DB_PSWD" not in environment
    assert [s["name"] for s in container["secrets"]] == ["MF_METADATA_DB_PSWD"]
    assert "localhost:8083/ping" in container["healthCheck"]["command"][1]
    [logs] = [g for g in private.of_type("aws:cloudwatch/logGroup:LogGroup") if g.name == "metaflow-ui"]
    assert logs.inputs["retentionInDays"] == 14
    assert container["logConfiguration"]["options"]["awslogs-group"] == logs.state["name"]


def test_the_backend_reaches_the_database_only_through_its_own_group(private: OfflineRun) -> None:
    database = group(private, "metaflow-database")
    sources = {
        r.inputs["referencedSecurityGroupId"]
        for r in private.of_type(INGRESS)
        if r.inputs["securityGroupId"] == database
    }
    assert sources == {group(private, "metaflow-metadata"), group(private, "metaflow-ui")}
    assert ui_service(private).inputs["networkConfiguration"]["securityGroups"] == [group(private, "metaflow-ui")]


def allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    """A minimal allow-evaluator for our own documents: an Allow statement names the action and a
    resource pattern matching it (no Deny statements in them)."""
    from fnmatch import fnmatchcase

    for statement in policy["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if (
            statement["Effect"] == "Allow"
            and action in statement["Action"]
            and any(fnmatchcase(resource, pattern) for pattern in resources)
        ):
            return True
    return False


def test_the_task_reads_this_bucket_and_writes_nothing(private: OfflineRun) -> None:
    [task_policy] = [p for p in private.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == "metaflow-ui-task"]
    policy = policy_of(task_policy.inputs)
    bucket = private.one("aws:s3/bucket:Bucket").state["arn"]
    assert allowed(policy, "s3:GetObject", f"{bucket}/metaflow/Flow/1/start/1/0.data")
    assert allowed(policy, "s3:ListBucket", bucket)
    for write in ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert not allowed(policy, write, f"{bucket}/metaflow/x")
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::another-bucket/x")
    assert allowed(policy, "ssmmessages:OpenDataChannel", "*")  # the port-forward channel


def test_people_may_start_and_tunnel_to_this_ui_only(private: OfflineRun) -> None:
    policy = policy_of(private.one("aws:iam/policy:Policy").inputs)
    cluster = private.one("aws:ecs/cluster:Cluster").state["name"]
    service = ui_service(private).state["name"]
    ecs = "arn:aws:ecs:us-east-1:123456789012"
    assert allowed(policy, "ecs:UpdateService", f"{ecs}:service/{cluster}/{service}")
    assert not allowed(policy, "ecs:UpdateService", f"{ecs}:service/{cluster}/metaflow-metadata-x")
    assert allowed(policy, "ssm:StartSession", f"{ecs}:task/{cluster}/abc")
    assert allowed(policy, "ssm:StartSession", "arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSession")
    assert not allowed(
        policy, "ssm:StartSession", "arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSessionToRemoteHost"
    )
    assert not allowed(policy, "ssm:StartSession", "arn:aws:ssm:us-east-1::document/SSM-SessionManagerRunShell")
    [start] = [s for s in policy["Statement"] if "ssm:StartSession" in s["Action"]]
    assert start["Condition"] == {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}


def test_without_the_private_ui_people_get_no_tunnel_rights() -> None:
    policy = policy_of(offline("dev", ALLOW_LIST).one("aws:iam/policy:Policy").inputs)
    assert not [s for s in policy["Statement"] if any(a.startswith(("ssm:", "ecs:")) for a in s["Action"])]


@pytest.mark.parametrize("overrides", [PRIVATE, PUBLIC], ids=["private", "public"])
def test_ui_policies_pass_parliament_but_for_what_aws_allows_no_narrower(overrides: dict[str, Any]) -> None:
    run = offline("dev", overrides)
    documents = [p.inputs["policy"] for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if "ui" in p.name]
    documents.append(run.one("aws:iam/policy:Policy").inputs["policy"])
    for document in documents:
        for finding in analyze_policy_string(document).findings:
            detail = finding.detail[0] if isinstance(finding.detail, list) else str(finding.detail).split()[2]
            assert (finding.issue, detail) in ACCEPTED_UI_FINDINGS, (finding.issue, finding.detail)


def test_allow_list_without_a_certificate_is_plain_http_from_those_networks_only() -> None:
    run = offline("dev", ALLOW_LIST)
    balancer = run.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert balancer["loadBalancerType"] == "application" and balancer["internal"] is False
    assert len(balancer["subnets"]) == 2 and balancer["dropInvalidHeaderFields"] is True
    [listener] = run.of_type(LISTENER)
    assert (listener.inputs["port"], listener.inputs["protocol"]) == (80, "HTTP")
    target_group = run.one("aws:lb/targetGroup:TargetGroup")
    assert listener.inputs["defaultActions"] == [{"type": "forward", "targetGroupArn": target_group.state["arn"]}]
    lb_group = group(run, "metaflow-ui-lb")
    admitted = [
        (r.inputs.get("cidrIpv4"), r.inputs["fromPort"])
        for r in run.of_type(INGRESS)
        if r.inputs["securityGroupId"] == lb_group
    ]
    assert admitted == [(OFFICE, 80)]
    service = ui_service(run).inputs
    assert service["desiredCount"] == 1 and service["enableExecuteCommand"] is False
    assert service["loadBalancers"] == [
        {"targetGroupArn": target_group.state["arn"], "containerName": "ui", "containerPort": 8083}
    ]
    assert run.outputs["uiUrl"].startswith("http://") and "ssmmessages" not in json.dumps(
        [p.inputs["policy"] for p in run.of_type("aws:iam/rolePolicy:RolePolicy")]
    )


def test_the_target_group_checks_the_backend_and_the_task_admits_only_the_load_balancer() -> None:
    run = offline("dev", ALLOW_LIST)
    target_group = run.one("aws:lb/targetGroup:TargetGroup").inputs
    assert (target_group["port"], target_group["targetType"], target_group["healthCheck"]["path"]) == (
        8083,
        "ip",
        "/ping",
    )
    into_task = [r.inputs for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == group(run, "metaflow-ui")]
    assert [(r["referencedSecurityGroupId"], r["fromPort"]) for r in into_task] == [
        (group(run, "metaflow-ui-lb"), 8083)
    ]


def test_with_a_certificate_https_serves_and_http_redirects() -> None:
    run = offline("dev", ALLOW_LIST_TLS)
    listeners = {r.inputs["port"]: r.inputs for r in run.of_type(LISTENER)}
    assert listeners[443]["protocol"] == "HTTPS" and listeners[443]["certificateArn"] == CERT
    assert listeners[443]["sslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert listeners[80]["defaultActions"] == [
        {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}
    ]
    assert run.outputs["uiUrl"] == "https://mf.example.com"


def test_public_means_sign_in_before_anything_reaches_the_ui(public: OfflineRun) -> None:
    listeners = {r.inputs["port"]: r.inputs for r in public.of_type(LISTENER)}
    sign_in, forward = listeners[443]["defaultActions"]
    assert (sign_in["type"], sign_in["order"], forward["type"], forward["order"]) == (
        "authenticate-cognito",
        1,
        "forward",
        2,
    )
    pool = public.one("aws:cognito/userPool:UserPool")
    assert pool.inputs["adminCreateUserConfig"] == {"allowAdminCreateUserOnly": True}
    client = public.one("aws:cognito/userPoolClient:UserPoolClient").inputs
    assert client["callbackUrls"] == ["https://mf.example.com/oauth2/idpresponse"]
    assert client["generateSecret"] is True and client["allowedOauthFlows"] == ["code"]
    assert sign_in["authenticateCognito"]["userPoolArn"] == pool.state["arn"]
    record = public.one("aws:route53/record:Record").inputs
    balancer = public.one("aws:lb/loadBalancer:LoadBalancer").state
    assert (record["zoneId"], record["name"], record["type"]) == ("Z0123456789ABC", "mf.example.com", "A")
    assert record["aliases"][0]["name"] == balancer["dnsName"]


def test_public_oidc_keeps_its_client_secret_secret() -> None:
    run = offline("dev", {**PUBLIC, "ui:auth": "oidc", "ui:oidc": OIDC})
    listener = next(r for r in run.of_type(LISTENER) if r.inputs["port"] == 443)
    oidc = listener.inputs["defaultActions"][0]["authenticateOidc"]
    assert (oidc["issuer"], oidc["clientId"], oidc["clientSecret"]) == ("https://idp.example.com", "metaflow", "s3cr3t")
    assert "defaultActions" in listener.secret_inputs  # Pulumi keeps the property holding it secret
    assert not run.of_type("aws:cognito/userPool:UserPool")


def refusal(overrides: dict[str, Any], preset: str = "dev") -> str:
    raw = {
        "aws:region": "us-east-1",
        "metaflow:preset": preset,
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in overrides.items()},
    }
    with pytest.raises(ConfigError) as raised:
        load_settings(raw, stack="dev")
    return str(raised.value)


@pytest.mark.parametrize(
    "overrides, preset, expected",
    [
        (PRIVATE, "minimal", "ui:enabled needs the metadata service"),
        ({"ui:enabled": True, "ui:access": "public"}, "dev", "ui:access public needs ui:certificateArn and ui:domain"),
        ({**PUBLIC, "ui:certificateArn": None}, "dev", "ui:certificateArn"),
        ({"ui:enabled": True, "ui:access": "allowList"}, "dev", "ui:access allowList needs ui:allowedCidrs"),
        ({**ALLOW_LIST, "ui:allowedCidrs": ["0.0.0.0/0"]}, "dev", "lets everyone in without signing in"),
        ({**PUBLIC, "ui:auth": "oidc"}, "dev", "ui:auth oidc needs ui:oidc"),
        ({**PUBLIC, "ui:oidc": OIDC}, "dev", "ui:oidc does not apply to ui:auth cognito"),
        ({**PRIVATE, "ui:allowedCidrs": [OFFICE]}, "dev", "ui:allowedCidrs does not apply to ui:access private"),
        ({**PRIVATE, "ui:certificateArn": CERT}, "dev", "ui:certificateArn does not apply to ui:access private"),
        ({**PUBLIC, "ui:allowedCidrs": [OFFICE]}, "dev", "ui:allowedCidrs does not apply to ui:access public"),
        ({**ALLOW_LIST, "ui:auth": "oidc"}, "dev", "ui:auth does not apply to ui:access allowList"),
        (
            {**PUBLIC, "ui:certificateArn": CERT.replace("us-east-1", "eu-west-1")},
            "dev",
            "needs a certificate from ACM in us-east-1",
        ),
        ({**ALLOW_LIST, "ui:hostedZoneId": "Z0123456789ABC"}, "dev", "ui:hostedZoneId needs ui:domain"),
        ({"ui:access": "public"}, "dev", "ui:access has no effect while ui:enabled is false"),
        ({**PRIVATE, "ui:cpu": 256, "ui:memory": 8192}, "dev", "ui:memory 8192 does not fit ui:cpu 256"),
    ],
)
def test_every_unsafe_or_incomplete_combination_is_refused_by_key(
    overrides: dict[str, Any], preset: str, expected: str
) -> None:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    assert expected in refusal(overrides, preset)


def idle_cost(overrides: dict[str, Any]) -> float:
    raw = {"aws:region": "us-east-1", **{k: v if isinstance(v, str) else json.dumps(v) for k, v in overrides.items()}}
    return estimate_monthly_cost(load_settings(raw, stack="dev")).total_usd


def test_the_private_ui_costs_nothing_while_idle() -> None:
    assert idle_cost(PRIVATE) == idle_cost({})


@pytest.mark.parametrize("overrides", [ALLOW_LIST, PUBLIC], ids=["allowList", "public"])
def test_a_load_balanced_ui_adds_at_most_35_dollars_a_month(overrides: dict[str, Any]) -> None:
    added = idle_cost(overrides) - idle_cost({})
    assert 0 < added <= 35


@pytest.mark.parametrize("overrides", [PRIVATE, ALLOW_LIST], ids=["private", "allowList"])
def test_every_always_on_ui_resource_has_a_cost_line(overrides: dict[str, Any]) -> None:
    run = offline("dev", overrides)
    lines = estimate_monthly_cost(run.settings).lines
    priced_services = sum(line.resources for line in lines if line.resource_type == SERVICE)
    running = [s for s in run.of_type(SERVICE) if s.inputs["desiredCount"] > 0]
    assert priced_services == len(running)
    priced_balancers = sum(line.resources for line in lines if line.resource_type.startswith("aws:lb/"))
    assert priced_balancers == len(run.of_type("aws:lb/loadBalancer:LoadBalancer"))
