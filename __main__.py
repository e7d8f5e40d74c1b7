"""metaflow-infra: read the stack's settings, declare the platform, export its outputs."""

import pulumi

from metaflow_infra.platform import build
from metaflow_infra.settings import load_settings, raw_config_from_pulumi

settings = load_settings(raw_config_from_pulumi(), stack=pulumi.get_stack())
for output_name, value in build(settings).items():
    pulumi.export(output_name, value)
