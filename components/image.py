"""The container image kfp runs musicops components in on a cluster (see docs/kubeflow.md).

kfp.local's SubprocessRunner ignores it and uses the current interpreter.
"""

from __future__ import annotations

import os

from musicops import __version__

COMPONENT_IMAGE = os.environ.get("MUSICOPS_KFP_IMAGE", f"musicops:{__version__}")
