"""A container registry for step images (`ecr:enabled`) and @secrets through Secrets Manager."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest
from conftest import offline, policy_of
from parliament import analyze_policy_string
from test_profile import read_with_metaflow
from test_settings import error_for
from test_ui import allowed

from metaflow_infra.offline import OfflineRun
from metaflow_infra.registry import lifecycle_policy

REPOSITORY = "aws:ecr/repository:Repository"
SECRETS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


@pytest.fixture(scope="module")
def registry() -> OfflineRun:
    return offline("dev", {"ecr:enabled": True, "ecr:imageTag": "py311", "ecr:keepImages": 10})


def test_the_repository_scans_on_push_and_keeps_the_newest_images(registry: OfflineRun) -> None:
    repository = registry.one(REPOSITORY)
    assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository.inputs["imageTagMutability"] == "MUTABLE"
    assert repository.inputs["name"] == "metaflow-dev/steps" and "name" in repository.ignore_changes
    policy = json.loads(registry.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    assert policy == lifecycle_policy(10)
    [rule] = policy["rules"]
    assert rule["selection"]["countNumber"] == 10 and rule["action"] == {"type": "expire"}


def test_immutable_tags_are_a_switch() -> None:
    run = offline("dev", {"ecr:enabled": True, "ecr:immutableTags": True})
    assert run.one(REPOSITORY).inputs["imageTagMutability"] == "IMMUTABLE"


def test_the_repository_values_are_ecr_enums(registry: OfflineRun) -> None:
    ecr = botocore.session.get_session().get_service_model("ecr")
    repository = registry.one(REPOSITORY).inputs
    assert repository["imageTagMutability"] in ecr.shape_for("ImageTagMutability").enum
    assert repository["encryptionConfigurations"][0]["encryptionType"] in ecr.shape_for("EncryptionType").enum


def test_the_profile_names_the_registry_and_the_default_image(registry: OfflineRun, tmp_path: Path) -> None:
    profile = registry.outputs["metaflowProfile"]
    assert profile["METAFLOW_BATCH_CONTAINER_REGISTRY"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert profile["METAFLOW_BATCH_CONTAINER_IMAGE"] == "metaflow-dev/steps:py311"
    assert read_with_metaflow(profile, tmp_path)["METAFLOW_BATCH_CONTAINER_IMAGE"] == "metaflow-dev/steps:py311"


def test_without_an_image_tag_the_profile_names_only_the_registry() -> None:
    profile = offline("dev", {"ecr:enabled": True}).outputs["metaflowProfile"]
    assert "METAFLOW_BATCH_CONTAINER_REGISTRY" in profile and "METAFLOW_BATCH_CONTAINER_IMAGE" not in profile


def test_registry_keys_without_the_registry_are_refused() -> None:
    assert "ecr:imageTag has no effect while ecr:enabled is false" in error_for({"ecr:imageTag": "py311"})


@pytest.fixture(scope="module")
def dev() -> OfflineRun:
    return offline("dev")


def test_dev_steps_read_this_stacks_secrets_and_no_others(dev: OfflineRun) -> None:
    [grant] = [p for p in dev.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == "metaflow-batch-task-secrets"]
    [task_role] = [r for r in dev.of_type("aws:iam/role:Role") if r.name == "metaflow-batch-task"]
    assert grant.inputs["role"] == task_role.state["name"]
    policy = policy_of(grant.inputs)
    assert allowed(policy, "secretsmanager:GetSecretValue", f"{SECRETS}metaflow/db-credentials-AbCdEf")
    assert not allowed(policy, "secretsmanager:GetSecretValue", f"{SECRETS}other/db-credentials-AbCdEf")
    assert not allowed(policy, "secretsmanager:GetSecretValue", f"{SECRETS}metaflow-db-password-AbCdEf")
    assert not allowed(policy, "secretsmanager:PutSecretValue", f"{SECRETS}metaflow/x-AbCdEf")
    assert not analyze_policy_string(grant.inputs["policy"]).findings


def test_people_running_steps_locally_read_the_same_secrets(dev: OfflineRun) -> None:
    policy = policy_of(dev.one("aws:iam/policy:Policy").inputs)
    assert allowed(policy, "secretsmanager:GetSecretValue", f"{SECRETS}metaflow/token-AbCdEf")
    assert not allowed(policy, "secretsmanager:GetSecretValue", f"{SECRETS}metaflow-api-key-AbCdEf")


def test_the_profile_selects_the_secrets_manager_backend(dev: OfflineRun, tmp_path: Path) -> None:
    profile = dev.outputs["metaflowProfile"]
    assert profile["METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE"] == "aws-secrets-manager"
    assert profile["METAFLOW_AWS_SECRETS_MANAGER_DEFAULT_REGION"] == "us-east-1"
    read = read_with_metaflow(profile, tmp_path)
    assert read["METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE"] == "aws-secrets-manager"


def test_minimal_has_no_secrets_access(minimal: OfflineRun) -> None:
    assert "METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE" not in minimal.outputs["metaflowProfile"]
    assert not [p for p in minimal.of_type("aws:iam/rolePolicy:RolePolicy") if "secrets" in p.name]
