"""metaflow-infra: read the stack's settings, declare the platform, export its outputs."""

import pulumi

from metaflow_infra.platform import build
from metaflow_infra.settings import config_warnings, load_settings, raw_config_from_pulumi

raw_config = raw_config_from_pulumi()
settings = load_settings(raw_config, stack=pulumi.get_stack())
for warning in config_warnings(settings, raw_config):
    pulumi.log.warn(warning)
for output_name, value in build(settings).items():
    pulumi.export(output_name, value)
