"""The pure parts of `plan --diff`: how inputs are opened up, shown and compared."""

from __future__ import annotations

import pulumi

from metaflow_infra.changes import SECRET, Change, flatten, key_properties, render_value, visible_inputs
from metaflow_infra.offline import DeclaredResource


def resource(inputs: dict, secret_inputs: set[str] | None = None) -> DeclaredResource:
    return DeclaredResource("urn", "aws:x/y:Y", "y", inputs, {}, "", "", secret_inputs or set())


def test_nested_inputs_and_json_documents_are_opened_up_to_their_leaves() -> None:
    inputs = {
        "computeResources": {"maxVcpus": 64.0, "instanceTypes": ["c6i", "m6i"]},
        "policy": '{"Statement": [{"Effect": "Allow"}]}',
        "tagSpecifications": [{"tags": {"team": "ds"}}],
        "empty": {},
        "text": "{not json",
    }
    assert flatten(inputs) == {
        "computeResources.maxVcpus": 64.0,
        "computeResources.instanceTypes": ["c6i", "m6i"],  # a list of plain values stays one value
        "policy.Statement[0].Effect": "Allow",
        "tagSpecifications[0].tags.team": "ds",
        "empty": {},
        "text": "{not json",
    }


def test_an_asset_is_named_by_its_kind_not_compared_by_identity() -> None:
    assert flatten({"code": pulumi.AssetArchive({})}) == {"code": "<AssetArchive>"}


def test_secret_inputs_are_masked_with_everything_under_them() -> None:
    shown = visible_inputs(
        resource({"password": "hunter2", "oidc": {"clientSecret": "s"}, "a": 1}, {"password", "oidc"})
    )
    assert shown == {"password": SECRET, "oidc.clientSecret": SECRET, "a": 1}


def test_values_are_shown_as_a_person_writes_them() -> None:
    assert [render_value(v) for v in (True, 128.0, 0.5, ["c6i", 2.0], None, "x")] == [
        "true",
        "128",
        "0.5",
        "[c6i, 2]",
        "unset",
        "x",
    ]


def test_key_properties_follow_paths_into_objects_and_lists_and_skip_what_is_unset() -> None:
    found = resource({"a": {"b": [{"c": 2.0}]}, "flag": False})
    assert key_properties(found, ("a.b[0].c", "a.b[3].c", "flag", "missing.path")) == {"c": "2", "flag": "false"}


def test_only_an_unspared_data_resource_replaced_or_removed_loses_data() -> None:
    def change(kind: str, data: str = "the database", spared: bool = False) -> Change:
        return Change(kind, "aws:rds/instance:Instance", "db", "Database", data=data, spared=spared)

    assert change("removed").loses_data and change("replaced").loses_data
    assert not change("removed", spared=True).loses_data
    assert not change("changed").loses_data and not change("added").loses_data
    assert not change("removed", data="").loses_data
