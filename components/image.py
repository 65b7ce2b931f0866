"""The container image kfp runs musicops components in on a cluster (see docs/kubeflow.md).

kfp.local's SubprocessRunner ignores it and uses the current interpreter.
"""

from __future__ import annotations

from musicops import __version__
from musicops.config import get_settings

# Read when the pipeline modules are imported (i.e. at compile time): `MUSICOPS_KFP_IMAGE`.
COMPONENT_IMAGE = get_settings().kfp_image or f"musicops:{__version__}"
