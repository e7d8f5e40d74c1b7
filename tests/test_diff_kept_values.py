"""`plan --diff` sees what AWS keeps: a resource that is not replaced keeps its id, ARN and the names
AWS chose or the program ignores, and whatever is wired to it sees those, not the mock runtime's
re-invented placeholders."""

from __future__ import annotations

from conftest import offline

from metaflow_infra.changes import diff_runs

BUCKET_PARTS = (
    "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
)


def test_a_new_prefix_keeps_the_bucket_and_everything_wired_to_it() -> None:
    changes = diff_runs(offline("dev"), offline("dev", {"metaflow:prefix": "team"}))
    by_type = {c.type: c for c in changes}
    assert not any(part in by_type for part in BUCKET_PARTS)  # they still point at the kept bucket
    assert "aws:s3/bucket:Bucket" not in by_type
    [replaced] = [c for c in changes if c.kind == "replaced"]
    assert replaced.type == "aws:ecs/taskDefinition:TaskDefinition"  # a new family name: a new revision
    user_policy = {path: (old, new) for path, old, new in by_type["aws:iam/policy:Policy"].properties}
    assert not any("s3:::" in old for old, _ in user_policy.values())  # the bucket's ARN is unchanged
    assert any("secret:team/*" in new for _, new in user_policy.values())  # secrets are named by prefix
    database = {path: new for path, _, new in by_type["aws:rds/instance:Instance"].properties}
    assert database == {"finalSnapshotIdentifier": database["finalSnapshotIdentifier"]}
    assert database["finalSnapshotIdentifier"].startswith("team-db-final-")
