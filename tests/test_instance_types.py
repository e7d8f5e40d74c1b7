"""The instance-family catalog (`data/instance_types.toml`) checked against botocore's EC2 model and
endpoint data: every size it lists exists, every region it names exists, GPU and Neuron flags are right."""

from __future__ import annotations

import botocore.session
import pytest

from metaflow_infra.settings import instance_families, offered_families
from metaflow_infra.settings.loading import CPU, GPU, NEURON, families_of, family_kind

FAMILIES = instance_families()
GPU_FAMILY_PREFIXES = ("g", "p")
"""NVIDIA families: G (graphics and inference) and P (training)."""
NEURON_FAMILY_PREFIXES = ("inf", "trn")
"""AWS Inferentia and Trainium."""


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


@pytest.mark.parametrize("family", [f for f in FAMILIES if family_kind(FAMILIES[f]) != CPU])
def test_accelerator_families_list_every_size_ec2_offers(family: str, ec2_instance_types: set[str]) -> None:
    """A size left out would be refused as `family.size` although Batch would launch it for the family."""
    sizes = {name.split(".", 1)[1] for name in ec2_instance_types if name.split(".", 1)[0] == family}
    assert set(FAMILIES[family]["sizes"]) == sizes


@pytest.mark.parametrize("family", FAMILIES)
def test_every_region_named_for_a_family_exists(family: str, aws_regions: set[str]) -> None:
    regions = FAMILIES[family]["regions"]
    assert regions == ["*"] or set(regions) <= aws_regions


@pytest.mark.parametrize("family", FAMILIES)
def test_only_g_and_p_families_are_marked_gpu(family: str) -> None:
    assert bool(FAMILIES[family].get("gpu")) == family.startswith(GPU_FAMILY_PREFIXES)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_inf_and_trn_families_are_marked_neuron(family: str) -> None:
    assert bool(FAMILIES[family].get("neuron")) == family.startswith(NEURON_FAMILY_PREFIXES)
    assert not (FAMILIES[family].get("gpu") and FAMILIES[family].get("neuron"))


def test_no_family_the_nvidia_image_cannot_run_is_offered_as_a_gpu_family() -> None:
    """ECS_AL2023_NVIDIA "doesn't support p3 and g3 instance types" (botocore's Batch model)."""
    doc = botocore.session.get_session().get_service_model("batch").shape_for("Ec2Configuration")
    assert "doesn't support <code>p3</code> and <code>g3</code>" in doc.members["imageType"].documentation
    assert not {"p3", "g3"} & set(families_of((GPU,)))


def test_inf1_is_left_out_of_the_neuron_families() -> None:
    """Current Neuron drivers (those of the ECS Neuron AMI) no longer support Inf1."""
    assert "inf1" not in FAMILIES
    assert families_of((NEURON,)) == ("inf2", "trn1", "trn1n")


def test_accelerator_families_name_their_regions_rather_than_everywhere() -> None:
    """No GPU or Neuron family is offered in every region: each lists the regions it is known in."""
    assert all(FAMILIES[f]["regions"] != ["*"] for f in families_of((GPU, NEURON)))


def test_offered_families_follow_the_region_lists() -> None:
    assert "c6i" in offered_families("us-east-1") and "c6i" not in offered_families("sa-east-1")
    assert "c5" in offered_families("sa-east-1")
    assert offered_families("us-east-1", gpu=True) == ["g4dn", "g5", "g6", "g6e", "p4d", "p5"]
    assert families_of((GPU,), "eu-west-1") == ("g4dn", "g5", "p4d")
    assert families_of((NEURON,), "us-east-1") == ("inf2", "trn1", "trn1n")
    assert families_of((NEURON,), "eu-west-1") == ("inf2",)
    assert families_of((NEURON,), "sa-east-1") == families_of((GPU,), "sa-east-1") == ()
