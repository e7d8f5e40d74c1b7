"""Stack-wide properties: components and their children, tags on everything, no deprecated API."""

from __future__ import annotations

import gc
import json
import runpy
import warnings
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from conftest import TODAY, offline, stack_config

from metaflow_infra.offline import OfflineRun, RecordingMocks, run_offline
from metaflow_infra.platform import build
from metaflow_infra.settings import ConfigError, Settings, load_settings, provider_settings

COMPONENTS = {"metaflow:infra:Network", "metaflow:infra:Datastore", "metaflow:infra:Compute", "metaflow:infra:Access"}


def test_every_resource_belongs_to_one_of_the_components(minimal: OfflineRun) -> None:
    assert {r.type for r in minimal.resources if r.is_component} == COMPONENTS
    for resource in minimal.resources:
        if resource.type.startswith("aws:"):
            component = minimal.component_of(resource)
            assert component is not None, f"{resource.name} has no component parent"


def test_dev_adds_the_database_metadata_service_and_step_secrets_components() -> None:
    run = offline("dev")
    assert {r.type for r in run.resources if r.is_component} == COMPONENTS | {
        "metaflow:infra:Database",
        "metaflow:infra:MetadataService",
        "metaflow:infra:StepSecrets",
    }
    assert all(run.component_of(r) is not None for r in run.resources if r.type.startswith(("aws:", "random:")))


def test_every_aws_resource_uses_the_tagging_provider(minimal: OfflineRun) -> None:
    [provider] = minimal.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    reference = f"{provider.urn}::{provider.name}"
    for resource in minimal.resources:
        if resource.type.startswith("aws:"):
            assert resource.provider.startswith(reference), resource.name


def test_provider_tags_carry_user_tags_and_the_stack_name() -> None:
    run = offline("minimal", {"metaflow:tags": {"team": "ds"}})
    default_tags = json.loads(run.one("pulumi:providers:aws").inputs["defaultTags"])
    assert default_tags == {"tags": {"team": "ds", "metaflow:stack": "dev"}}


@pytest.mark.parametrize("enabled", [True, False])
def test_an_offline_run_pauses_the_garbage_collector_and_leaves_it_as_it_found_it(enabled: bool) -> None:
    during: list[bool] = []

    def declare(settings: Settings) -> dict[str, pulumi.Output[Any]]:
        during.append(gc.isenabled())
        return build(settings)

    (gc.enable if enabled else gc.disable)()
    try:
        run_offline(stack_config("minimal"), declare=declare)
        assert during == [False]
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_a_deprecated_resource_is_caught() -> None:
    def declare_legacy(settings: Settings) -> dict[str, pulumi.Output[Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the import-time warning; the constructor's log is what we check
            legacy = aws.s3.BucketV2("legacy")
        return {**build(settings), "legacy": legacy.id}

    run = run_offline(stack_config("minimal"), declare=declare_legacy)
    assert any("BucketV2 is deprecated" in w for w in run.deprecations)


def test_a_deprecated_argument_is_caught() -> None:
    def declare_acl(settings: Settings) -> dict[str, pulumi.Output[Any]]:
        return {**build(settings), "legacy": aws.s3.Bucket("legacy", acl="private").id}

    run = run_offline(stack_config("minimal"), declare=declare_acl)
    assert run.deprecations == ["aws:s3/bucket:Bucket legacy: argument acl is deprecated"]


def test_a_deprecated_argument_in_an_args_object_fails_the_test_run() -> None:
    with pytest.raises(DeprecationWarning):
        aws.s3.BucketArgs(acl="private")


def test_the_pulumi_program_reads_stack_config_and_exports_every_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """`__main__.py` as `pulumi up` runs it: config arrives in PULUMI_CONFIG, outputs leave by export."""
    config = {"aws:region": "us-east-1", "metaflow:preset": "dev", "metaflow:tags": '{"team": "ds"}'}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    exported: dict[str, pulumi.Output[Any]] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.setdefault(name, value))

    def run_program(_: Settings) -> dict[str, pulumi.Output[Any]]:
        runpy.run_path(str(Path(__file__).resolve().parent.parent / "__main__.py"))
        return exported

    run = run_offline(stack_config("minimal"), declare=run_program)
    assert set(run.outputs) == {
        "metaflowProfile",
        "estimatedMonthlyCost",
        "bucketName",
        "jobQueueArn",
        "serviceUrl",
        "userPolicyArn",
    }
    assert run.settings.metaflow.preset == "minimal"  # the harness's own settings…
    assert run.one("aws:rds/instance:Instance")  # …but the program declared the dev stack from PULUMI_CONFIG
    assert "metaflowProfile" in run.secret_outputs


def test_the_pulumi_program_warns_about_each_key_that_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"aws:region": "us-east-1", "metaflow:preset": "minimal", "db:multiAz": "true"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    monkeypatch.setattr(pulumi, "export", lambda name, value: None)

    def run_program(_: Settings) -> dict[str, pulumi.Output[Any]]:
        runpy.run_path(str(Path(__file__).resolve().parent.parent / "__main__.py"))
        return {}

    run = run_offline(stack_config("minimal"), declare=run_program)
    assert [w for w in run.warnings if "no effect" in w] == [
        "db:multiAz has no effect while metadata:enabled is false (minimal preset): this stack has no metadata "
        "service and no database"
    ]


def test_aws_stack_config_reaches_the_explicit_provider() -> None:
    run = offline(
        "minimal",
        {
            "aws:profile": "data-science",
            "aws:allowedAccountIds": ["123456789012"],
            "aws:assumeRoles": [{"roleArn": "arn:aws:iam::123456789012:role/deployer", "sessionName": "metaflow"}],
        },
    )
    provider = run.one("pulumi:providers:aws").inputs
    assert provider["profile"] == "data-science"
    assert json.loads(provider["allowedAccountIds"]) == ["123456789012"]
    assert json.loads(provider["assumeRoles"]) == [
        {"roleArn": "arn:aws:iam::123456789012:role/deployer", "sessionName": "metaflow"}
    ]


def test_every_other_aws_provider_setting_is_forwarded_by_its_declared_kind() -> None:
    run = offline(
        "minimal",
        {
            "aws:endpoints": [{"s3": "http://localhost:4566"}],
            "aws:skipCredentialsValidation": "true",
            "aws:maxRetries": "7",
            "aws:accessKey": "AKIAEXAMPLE",
            "aws:secretKey": "s3cr3t",
            "aws:token": "t0ken",
            "aws:s3UsePathStyle": "TRUE",
        },
    )
    provider = run.one("pulumi:providers:aws")
    assert json.loads(provider.inputs["endpoints"]) == [{"s3": "http://localhost:4566"}]
    assert (provider.inputs["skipCredentialsValidation"], provider.inputs["maxRetries"]) == ("true", "7")
    assert provider.inputs["s3UsePathStyle"] == "true"
    assert provider.inputs["secretKey"] == "s3cr3t"
    assert {"accessKey", "secretKey", "token"} <= set(provider.secret_inputs)
    assert "maxRetries" not in provider.secret_inputs


def test_the_provider_settings_are_read_from_pulumi_aws_itself() -> None:
    settings = provider_settings()
    assert settings["skipCredentialsValidation"] == ("skip_credentials_validation", "bool")
    assert settings["endpoints"] == ("endpoints", "objects") and settings["maxRetries"] == ("max_retries", "int")
    assert settings["userAgents"] == ("user_agents", "strings") and settings["ignoreTags"][1] == "object"
    assert "region" not in settings and "defaultTags" not in settings  # set by the program itself


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"aws:skipCredentialsValidation": "yes"}, "aws:skipCredentialsValidation = 'yes': expected true or false"),
        ({"aws:maxRetries": "many"}, "aws:maxRetries = 'many': expected a whole number"),
        ({"aws:defaultTags": {"a": "b"}}, "aws:defaultTags is not a known key"),
        ({"aws:endpoint": []}, "Did you mean aws:endpoints?"),
        ({"aws:endpoints": "5"}, "aws:endpoints = '5': expected a JSON list of objects"),
        ({"aws:ignoreTags": ["x"]}, "expected a JSON object"),
    ],
)
def test_a_bad_provider_setting_is_refused_by_name(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(stack_config("minimal", overrides), stack="dev")
    assert expected in str(raised.value)


def test_the_account_and_the_partition_are_looked_up_once_per_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every component needs them for ARNs and trust policies; in a real run each lookup is a call to AWS."""
    answer = RecordingMocks.call
    calls: list[str] = []

    def counted(self: RecordingMocks, args: pulumi.runtime.MockCallArgs) -> Any:
        calls.append(args.token)
        return answer(self, args)

    monkeypatch.setattr(RecordingMocks, "call", counted)
    everything = {"ui:enabled": True, "stepFunctions:enabled": True, "alerts:email": "ops@example.com"}
    for _ in range(2):  # each stack asks for itself
        run_offline(stack_config("production", everything), today=TODAY)
    assert calls.count("aws:index/getCallerIdentity:getCallerIdentity") == 2
    assert calls.count("aws:index/getPartition:getPartition") == 2
