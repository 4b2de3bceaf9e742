"""Pulumi entry point: `pulumi up` in this directory deploys itemflow (docs/deploy.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from itemflow_deploy.stack import build, export, load_config

config = load_config()
export(build(config), config)
