"""`python -m metaflow_infra plan`: offline resources, masked profile and cost; clear errors; compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_docs import README, readme_section

from metaflow_infra.__main__ import main
from metaflow_infra.costs import price_table
from metaflow_infra.plan import SCALE_TO_ZERO, comparison_document, render_comparison, render_scale_to_zero
from metaflow_infra.wake import best_wake_seconds, worst_first_answer_seconds, worst_wake_seconds

PROJECT = README.parent


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", "--dir", str(PROJECT), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_of_the_dev_stack_shows_resources_profile_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys)
    assert code == 0
    assert "Stack dev (dev preset) in us-east-1" in out
    for component in ("Network (", "Datastore (", "Database (", "Compute (", "MetadataService ("):
        assert f"  {component}" in out
    assert "METAFLOW_SERVICE_AUTH_KEY = [secret]" in out
    assert "aws:rds/instance:Instance" in out
    assert f"(estimatedMonthlyCost; 730 h; prices read on {price_table().read_on}):" in out
    total = float(out.split("  total")[1].split()[0])
    assert 0 < total <= 25


def test_plan_json_is_machine_readable_and_masks_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys, "--json")
    document = json.loads(out)
    assert code == 0 and document["preset"] == "dev"
    assert document["metaflowProfile"]["METAFLOW_SERVICE_AUTH_KEY"] == "[secret]"
    assert any(r["type"] == "aws:ecs/service:Service" for r in document["resources"]["MetadataService"])
    assert document["estimatedMonthlyCost"]["totalUsd"] <= 25


def test_set_overrides_one_key_like_pulumi_config_set(capsys: pytest.CaptureFixture[str]) -> None:
    _, base, _ = plan(capsys, "--json")
    _, bigger, _ = plan(capsys, "--json", "--set", "db:instanceClass=db.t4g.small", "--set", "metaflow:preset=dev")
    difference = (
        json.loads(bigger)["estimatedMonthlyCost"]["totalUsd"] - json.loads(base)["estimatedMonthlyCost"]["totalUsd"]
    )
    small, micro = (
        price_table().price("us-east-1", "rds_instance_hour", c).usd for c in ("db.t4g.small", "db.t4g.micro")
    )
    assert difference == pytest.approx((small - micro) * 730, abs=0.02)


def test_minimal_plan_costs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys, "--json", "--set", "metaflow:preset=minimal")
    document = json.loads(out)
    assert code == 0 and document["estimatedMonthlyCost"]["totalUsd"] == 0
    assert "MetadataService" not in document["resources"]


def test_bad_config_exits_non_zero_with_the_same_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = plan(capsys, "--set", "compute:maxVcpus=-1")
    assert code == 2 and out == ""
    assert "compute:maxVcpus = '-1'" in err and "Traceback" not in err


def test_missing_stack_file_and_malformed_set_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = plan(capsys, "--stack", "nope")
    assert code == 2 and "no Pulumi.nope.yaml" in err
    code, _, err = plan(capsys, "--set", "maxVcpus")
    assert code == 2 and "expected namespace:key=value, e.g. compute:maxVcpus=128" in err


def test_plan_runs_as_a_module_without_pulumi_or_aws_and_leaves_no_event_loop_open(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no AWS credentials, no pulumi on PATH
    # ...but where bytecode goes, as the tests run it: without the cache `make test` keeps (PYTHONPYCACHEPREFIX)
    # pulumi-aws compiles again (~5 s); where writing is off (`make mutation`), a mutant's bytecode is never kept.
    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")})
    result = subprocess.run(
        # An event loop collected unclosed warns (ResourceWarning); at exit it may print "Exception ignored".
        [sys.executable, "-W", "always::ResourceWarning", "-m", "metaflow_infra", "plan", "--dir", str(PROJECT)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Always-on monthly cost" in result.stdout
    assert "unclosed event loop" not in result.stderr and "Exception ignored" not in result.stderr


MAIN_TOP_LEVEL_TWICE = """
import gc, json, sys
from pathlib import Path
import metaflow_infra.__main__  # its imports cached, as in a caller that imported it
gc.freeze()  # the caller's objects, frozen as the tests and the command freeze theirs
path = Path(sys.argv[1])
code = compile(path.read_text(), str(path), "exec")
states = {}
for enabled in (True, False):
    (gc.enable if enabled else gc.disable)()
    frozen = gc.get_freeze_count()
    exec(code, {"__name__": "metaflow_infra.__main__", "__package__": "metaflow_infra"})
    states[str(enabled)] = [gc.isenabled(), gc.get_freeze_count(), frozen]
    gc.enable()
print(json.dumps(states))
"""


@pytest.fixture(scope="module")
def collector_after_main_top_level() -> dict[str, list[Any]]:
    """__main__.py's top level executed under a module name, with the collector on and then off: in a process of
    its own, where nothing else (another test's thread or finalizer) can free a frozen object meanwhile."""
    path = Path(sys.modules[main.__module__].__file__ or "")
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    result = subprocess.run(
        [sys.executable, "-c", MAIN_TOP_LEVEL_TWICE, str(path)], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("enabled", [True, False])
def test_imported_as_a_module_it_leaves_the_collector_alone(
    collector_after_main_top_level: dict[str, list[Any]], enabled: bool
) -> None:
    is_enabled, freeze_count, frozen = collector_after_main_top_level[str(enabled)]
    assert is_enabled is enabled and freeze_count == frozen and frozen > 0


def test_compare_lists_every_preset_and_the_terraform_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(capsys, "--compare")
    assert code == 0
    for label in ("`minimal` preset | 0.00", "`dev` preset", "`production` preset", "terraform-aws-metaflow defaults"):
        assert label in out


@pytest.mark.parametrize(
    "region, data_api, wake, verdict",
    [
        ("us-east-1", True, "27.8-84 s", "first answer by 84 s, against 90 s at worst (met, 6 s to spare;"),
        (
            "eu-west-1",
            False,
            "42.8-114 s by the documented stage ranges (this region's RDS Data API is not",
            "first answer by 114 s, against 90 s at worst (missed by 24 s;",
        ),
    ],
)
def test_compare_holds_scale_to_zero_to_its_goals(
    capsys: pytest.CaptureFixture[str], region: str, data_api: bool, wake: str, verdict: str
) -> None:
    """Issue 17's goals where it asked for them: the idle month, the documented worst wake (held to what the
    client that woke the service waits), warm latency."""
    document = comparison_document(region)[SCALE_TO_ZERO]
    assert document["wake"] == {
        "dataApi": data_api,
        "bestSeconds": best_wake_seconds(data_api),
        "worstSeconds": worst_wake_seconds(data_api),
        "worstFirstAnswerSeconds": worst_first_answer_seconds(data_api),
        "goalSeconds": 90,
        "retriesOutlastSeconds": 255,
        "warmRequestAddedMs": 0,
    }
    code, out, _ = plan(capsys, "--compare", "--region", region)
    assert code == 0
    [goals] = [line for line in out.splitlines() if line.startswith("Goals: ")]
    assert goals.startswith(f"Goals: idle ${document['totalUsd']:.2f} against $2.00 (met)")
    assert f"reachable in {wake}" in goals and verdict in goals
    assert "the profile retries for 255 s unheld" in goals and "0 ms added" in goals


def test_a_wake_the_retries_may_not_outlast_is_said_so_not_a_crash() -> None:
    document = comparison_document("us-east-1")[SCALE_TO_ZERO]
    late = {**document, "wake": {**document["wake"], "worstFirstAnswerSeconds": None}}
    [goals] = [line for line in render_scale_to_zero(late) if line.startswith("Goals: ")]
    assert "has its first answer never, against 90 s at worst (missed: its retries may run out first;" in goals


def test_readme_cost_table_is_generated_by_compare() -> None:
    assert readme_section("cost-comparison") == render_comparison(comparison_document("us-east-1"))


def test_plan_of_an_existing_network_says_what_it_could_not_check(capsys: pytest.CaptureFixture[str]) -> None:
    subnets = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    code, out, _ = plan(
        capsys, "--set", "network:vpcId=vpc-0123456789abcdef0", "--set", f"network:subnetIds={','.join(subnets)}"
    )
    assert code == 0 and "aws:ec2/vpc:Vpc" not in out
    assert f"Not checked offline: {', '.join(subnets)}" in out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("config: [1,2\n", "is not valid YAML"),
        ("- a\n- b\n", "expected a mapping with a `config:` mapping"),
        ("config:\n- a\n", "expected a mapping with a `config:` mapping"),
    ],
)
def test_an_unreadable_stack_file_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text(text)
    code = main(["plan", "--dir", str(tmp_path), "--stack", "broken"])
    _, err = capsys.readouterr()
    assert code == 2 and expected in err and "Traceback" not in err


@pytest.mark.parametrize("region, partition", [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")])
def test_compare_outside_the_commercial_partition_is_refused_saying_prices_cover_it_only(
    capsys: pytest.CaptureFixture[str], region: str, partition: str
) -> None:
    code, out, err = plan(capsys, "--compare", "--region", region)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"prices cover the commercial partition (aws) only, and {region} is in {partition}" in err
    assert "Compare a commercial region (e.g. --region us-east-1)" in err


def test_a_plan_in_china_names_its_partition_and_says_why_it_has_no_prices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = plan(capsys, "--region", "cn-north-1")
    assert code == 0
    profile = dict(line.strip().split(" = ", 1) for line in out.splitlines() if line.startswith("  METAFLOW_"))
    assert profile["METAFLOW_BATCH_JOB_QUEUE"].startswith("arn:aws-cn:batch:cn-north-1:")
    assert profile["METAFLOW_ECS_S3_ACCESS_IAM_ROLE"].startswith("arn:aws-cn:iam::")
    assert ".execute-api.cn-north-1.amazonaws.com.cn" in profile["METAFLOW_SERVICE_URL"]
    assert "arn:aws:" not in out
    assert "Always-on monthly cost (estimatedMonthlyCost; 730 h):" in out and "prices read on" not in out
    assert "cost estimate unavailable: no price data for region cn-north-1: prices cover the commercial" in out


def test_output_into_a_closed_pipe_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan ... | head` where head has exited: no BrokenPipeError traceback, and nothing left to fail at exit."""
    reader, writer = os.pipe()
    os.close(reader)
    with open(writer, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert main(["config-table"]) == 1
        print("the interpreter's last flush", file=closed_pipe)
    assert capsys.readouterr().err == ""
