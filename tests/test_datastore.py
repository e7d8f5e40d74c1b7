"""Datastore: a private, encrypted, TLS-only bucket that cleans up after itself and outlives the stack."""

from __future__ import annotations

from conftest import offline, policy_of

from metaflow_infra.offline import OfflineRun

BUCKET = "aws:s3/bucket:Bucket"


def bucket_id(run: OfflineRun) -> str:
    return run.one(BUCKET).state["bucket"]


def test_bucket_name_is_the_prefix_plus_a_unique_suffix_so_stacks_never_collide(minimal: OfflineRun) -> None:
    bucket = minimal.one(BUCKET)
    assert "bucket" not in bucket.inputs and bucket.inputs["bucketPrefix"] == "metaflow-artifacts-"
    assert offline("minimal", {"metaflow:prefix": "team"}).one(BUCKET).inputs["bucketPrefix"] == "team-artifacts-"


def test_no_preset_lets_destroy_delete_the_artifacts() -> None:
    for preset in ("minimal", "dev"):
        bucket = offline(preset).one(BUCKET)
        assert bucket.inputs["forceDestroy"] is False and bucket.retain_on_delete is True, preset


def test_force_destroy_is_the_one_switch_that_deletes_the_bucket_with_its_objects() -> None:
    bucket = offline("minimal", {"datastore:forceDestroy": True}).one(BUCKET)
    assert bucket.inputs["forceDestroy"] is True and bucket.retain_on_delete is False


def test_server_side_encryption_is_sse_s3(minimal: OfflineRun) -> None:
    sse = minimal.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["bucket"] == bucket_id(minimal)
    rule = sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
    assert rule["sseAlgorithm"] == "AES256"


def test_all_four_public_access_blocks_are_on(minimal: OfflineRun) -> None:
    block = minimal.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert block["bucket"] == bucket_id(minimal)
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[flag] is True, flag


def test_bucket_owner_enforced_disables_acls(minimal: OfflineRun) -> None:
    controls = minimal.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert controls["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_bucket_policy_denies_requests_without_tls(minimal: OfflineRun) -> None:
    bucket = minimal.one(BUCKET)
    policy = policy_of(minimal.one("aws:s3/bucketPolicy:BucketPolicy").inputs)
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [bucket.state["arn"], f"{bucket.state['arn']}/*"]


def test_lifecycle_aborts_incomplete_multipart_uploads(minimal: OfflineRun) -> None:
    rules = minimal.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    [abort] = [r for r in rules if "abortIncompleteMultipartUpload" in r]
    assert abort["status"] == "Enabled"
    assert abort["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7
    assert abort["filter"] == {"prefix": ""}


def test_minimal_has_no_versioning(minimal: OfflineRun) -> None:
    assert not minimal.of_type("aws:s3/bucketVersioning:BucketVersioning")


def test_versioning_on_also_expires_old_versions() -> None:
    run = offline("minimal", {"datastore:versioning": True})
    versioning = run.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"] == {"status": "Enabled"}
    rules = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert any(r.get("noncurrentVersionExpiration", {}).get("noncurrentDays") == 30 for r in rules)
