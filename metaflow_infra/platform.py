"""The whole stack: settings in, components wired, outputs out. `__main__.py` only calls `build`."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from .access import Access, AccessArgs
from .alerts import Alerts, AlertsArgs, ServiceWatch
from .base import LOGICAL_BASE, legacy_aliases
from .compute import Compute, Placement
from .costs import estimate_output
from .database import Database, DatabaseArgs
from .datastore import Datastore
from .image_mirror import ImageMirror, ImageMirrorArgs, ServiceImage
from .metadata import MetadataService, MetadataServiceArgs, ServicePlacement
from .network import Network, UiIngress
from .policies import Statement, wake_statements
from .profile import MetadataEndpoint, ProfileInputs, metaflow_profile
from .registry import Registry
from .scale_to_zero import waker_function_arn
from .settings import SECRET_PROVIDER_SETTINGS, AwsSettings, Settings, data_api_regions, provider_settings
from .step_functions import StepFunctions, StepFunctionsArgs
from .step_secrets import StepSecrets
from .ui import UI, UiArgs, ingress_cidrs, listener_ports


def build(settings: Settings) -> dict[str, pulumi.Output[Any]]:
    """Declare every resource of the stack; return the stack outputs by name."""
    prefix = settings.metaflow.prefix
    # One provider carries the tags, so every taggable resource gets them without repeating them.
    provider = aws_provider(prefix, settings)
    opts = pulumi.ResourceOptions(providers=[provider])

    ui_settings = settings.ui
    network = Network(
        prefix,
        settings.network,
        settings.region,
        with_metadata_service=settings.metadata.enabled,
        opts=opts,
        ui=UiIngress(ingress_cidrs(ui_settings), listener_ports(ui_settings)) if ui_settings.enabled else None,
        multi_node=settings.compute.multi_node,
    )
    datastore = Datastore(prefix, settings.datastore, opts=opts)
    compute = Compute(
        prefix,
        settings.compute,
        Placement(
            subnet_ids=network.subnet_ids,
            security_group_id=network.batch_security_group_id,
            multi_node_security_group_id=network.multi_node_security_group_id,
        ),
        bucket_arn=datastore.bucket_arn,
        instance_tags=settings.tags,
        datastore_key_arn=datastore.key_arn,
        opts=opts,
    )
    outputs: dict[str, pulumi.Output[Any]] = {
        "bucketName": datastore.bucket_name,
        **compute.queue_arns,  # jobQueueArn, and gpuJobQueue, neuronJobQueue, multiNodeJobQueue when on
        "estimatedMonthlyCost": pulumi.Output.from_input(estimate_output(settings, network.public_subnets)),
    }

    registry = Registry(prefix, settings.ecr, settings.stack, opts=opts) if settings.ecr.enabled else None
    step_secrets = (
        StepSecrets(prefix, settings.region, compute.task_role_arn, opts=opts) if settings.secrets.enabled else None
    )
    step_functions = (
        StepFunctions(
            prefix,
            StepFunctionsArgs(
                settings=settings.step_functions,
                region=settings.region,
                stack=settings.stack,
                bucket_name=datastore.bucket_name,
                job_queue_arns=list(compute.queue_arns.values()),
                task_role_arn=compute.task_role_arn,
                datastore_key_arn=datastore.key_arn,
            ),
            opts=opts,
        )
        if settings.step_functions.enabled
        else None
    )
    service: MetadataService | None = None
    ui: UI | None = None
    watch: ServiceWatch | None = None
    groups = network.service_groups
    if groups is not None:
        database = Database(
            prefix,
            DatabaseArgs(
                settings.db,
                network.subnet_ids,
                groups.database,
                serverless=settings.metadata.scale_to_zero,
                data_api=settings.metadata.scale_to_zero and settings.region in data_api_regions(),
            ),
            opts=opts,
        )
        image = (
            ImageMirror(prefix, ImageMirrorArgs(image=settings.metadata.image, stack=settings.stack), opts=opts).image
            if settings.metadata.scale_to_zero
            else ServiceImage(settings.metadata.image)
        )
        service = MetadataService(
            prefix,
            MetadataServiceArgs(
                settings=settings.metadata,
                placement=ServicePlacement(
                    subnet_ids=network.subnet_ids,
                    vpc_id=network.vpc_id,
                    service_security_group_id=groups.service,
                    endpoint_security_group_id=groups.endpoint,
                    assign_public_ip=network.public_subnets,
                ),
                database=database.endpoint,
                region=settings.region,
                stack=settings.stack,
                image=image,
                job_queue_arns=tuple(compute.queue_arns.values()),
            ),
            opts=opts,
        )
        outputs["serviceUrl"] = service.url
        watch = ServiceWatch(
            api_id=service.api_id,
            cluster_name=service.cluster.name,
            service_name=service.service.name,
            database_id=database.instance_id,
            database_storage_gb=settings.db.allocated_storage_gb,
        )
        if groups.ui is not None:
            ui = UI(
                prefix,
                UiArgs(
                    settings=ui_settings,
                    image=image,
                    spot=settings.metadata.spot,
                    region=settings.region,
                    cluster=service.cluster,
                    capacity=service.capacity,
                    database=database.endpoint,
                    bucket_name=datastore.bucket_name,
                    bucket_arn=datastore.bucket_arn,
                    subnet_ids=network.subnet_ids,
                    assign_public_ip=network.public_subnets,
                    groups=groups.ui,
                    load_balancer_subnet_ids=network.public_subnet_ids,
                    datastore_key_arn=datastore.key_arn,
                    wake_function=service.waker.function_name if service.waker else None,
                ),
                opts=opts,
            )
            outputs["uiUrl"] = ui.url
            outputs["ui"] = ui.description

    # What people attach to their own IAM identity to use the stack: the roles it may pass are
    # exactly those the profile names.
    passable_roles = [compute.task_role_arn] + ([compute.execution_role_arn] if compute.execution_role_arn else [])
    access = Access(
        prefix,
        AccessArgs(
            region=settings.region,
            bucket_arn=datastore.bucket_arn,
            job_queue_arns=list(compute.queue_arns.values()),
            passable_role_arns=passable_roles,
            ui_service=ui.tunnel_target if ui is not None and ui.tunnel_target is not None else None,
            secrets_name_prefix=step_secrets.name_prefix if step_secrets is not None else None,
            extra_statements=_people_statements(step_functions, service, ui),
            datastore_key_arn=datastore.key_arn,
        ),
        opts=opts,
    )
    outputs["userPolicyArn"] = access.user_policy_arn
    if settings.alerts.enabled or settings.budget.monthly_usd is not None:
        alerts = Alerts(
            prefix,
            AlertsArgs(
                settings=settings.alerts,
                budget=settings.budget,
                stack=settings.stack,
                job_queue_arns=list(compute.queue_arns.values()),
                service=watch,
            ),
            opts=opts,
        )
        if alerts.topic_arn is not None:
            outputs["alertTopicArn"] = alerts.topic_arn

    profile = pulumi.Output.all(
        bucket_name=datastore.bucket_name,
        job_queue_arn=compute.job_queue_arn,
        task_role_arn=compute.task_role_arn,
        fargate_execution_role_arn=compute.execution_role_arn,
        service_url=service.url if service else None,
        api_key=service.api_key if service else None,
        ui_url=outputs.get("uiUrl"),
        container_registry=registry.registry if registry else None,
        container_image=registry.repository_name.apply(lambda name: f"{name}:{settings.ecr.image_tag}")
        if registry and settings.ecr.image_tag
        else None,
        secrets_region=settings.region if step_secrets else None,
        step_functions=step_functions.profile if step_functions else None,
        job_tags=settings.tags,
    ).apply(_profile)
    # With the API key inside, the whole profile is a secret.
    outputs["metaflowProfile"] = pulumi.Output.secret(profile) if service else profile
    return outputs


def _people_statements(
    step_functions: StepFunctions | None, service: MetadataService | None, ui: UI | None
) -> pulumi.Output[list[Statement]] | None:
    """What features grant the people who use the stack beyond running flows: Step Functions' deploys, and
    waking a scale-to-zero metadata service before the private UI opens."""
    wake = (
        wake_statements(waker_function_arn(service, service.waker))
        if service is not None and service.waker is not None and ui is not None and ui.tunnel_target is not None
        else []
    )
    if step_functions is None and not wake:
        return None
    sfn = step_functions.user_statements if step_functions is not None else pulumi.Output.from_input([])
    return sfn.apply(lambda statements: [*statements, *wake])


def aws_provider(prefix: str, settings: Settings) -> aws.Provider:
    """An explicit provider ignores `aws:*` stack config, so forward every key the settings accept."""
    account = settings.aws
    logical = f"{LOGICAL_BASE}-aws"
    return aws.Provider(
        logical,
        region=account.region,
        profile=account.profile,
        allowed_account_ids=account.allowed_account_ids,
        forbidden_account_ids=account.forbidden_account_ids,
        assume_roles=[
            aws.ProviderAssumeRoleArgs(
                role_arn=role.role_arn, session_name=role.session_name, external_id=role.external_id
            )
            for role in account.assume_roles or []
        ]
        or None,
        default_tags=aws.ProviderDefaultTagsArgs(tags=settings.tags),
        **{
            name: pulumi.Output.secret(value) if key in SECRET_PROVIDER_SETTINGS else value
            for key, (name, value) in forwarded_provider_settings(account).items()
        },
        opts=pulumi.ResourceOptions(aliases=legacy_aliases(logical, prefix)),
    )


def forwarded_provider_settings(account: AwsSettings) -> dict[str, tuple[str, Any]]:
    """The provider settings the user gave beyond the typed ones: config key -> (argument, value)."""
    return {key: (provider_settings()[key][0], value) for key, value in (account.model_extra or {}).items()}


def _profile(values: dict[str, Any]) -> dict[str, str]:
    service_url, api_key = values.pop("service_url"), values.pop("api_key")
    # Batch tasks use the same HTTPS endpoint: they have internet egress, the key already travels
    # with them (METAFLOW_SERVICE_HEADERS), and no extra network path needs opening.
    metadata = MetadataEndpoint(url=service_url, internal_url=service_url, auth_key=api_key) if service_url else None
    return metaflow_profile(ProfileInputs(**values, metadata=metadata))
