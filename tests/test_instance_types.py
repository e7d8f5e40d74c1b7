"""The instance-family catalog (`data/instance_types.toml`) checked against botocore's EC2 model and
endpoint data: every size it lists exists, every region it names exists, GPU flags are right."""

from __future__ import annotations

import botocore.session
import pytest

from metaflow_infra.settings import instance_families, offered_families

FAMILIES = instance_families()


@pytest.fixture(scope="module")
def ec2_instance_types() -> set[str]:
    return set(botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum)


@pytest.fixture(scope="module")
def aws_regions() -> set[str]:
    session = botocore.session.get_session()
    return set(session.get_available_regions("ec2", partition_name="aws"))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_listed_size_is_a_real_ec2_instance_type(family: str, ec2_instance_types: set[str]) -> None:
    missing = [f"{family}.{size}" for size in FAMILIES[family]["sizes"] if f"{family}.{size}" not in ec2_instance_types]
    assert not missing


@pytest.mark.parametrize("family", FAMILIES)
def test_every_region_named_for_a_family_exists(family: str, aws_regions: set[str]) -> None:
    regions = FAMILIES[family]["regions"]
    assert regions == ["*"] or set(regions) <= aws_regions


@pytest.mark.parametrize("family", FAMILIES)
def test_only_g_and_p_families_are_marked_gpu(family: str) -> None:
    assert bool(FAMILIES[family].get("gpu")) == family.startswith(("g", "p"))


def test_offered_families_follow_the_region_lists() -> None:
    assert "c6i" in offered_families("us-east-1") and "c6i" not in offered_families("sa-east-1")
    assert "c5" in offered_families("sa-east-1")
    assert offered_families("us-east-1", gpu=True) == ["g4dn", "g5"]
