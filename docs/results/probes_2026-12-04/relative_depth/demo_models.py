"""The quickstart's python factories (recipes/demo_models.py), for the probe recipe beside this file."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "quickstart_demo_models", Path(__file__).resolve().parents[4] / "recipes" / "demo_models.py"
)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
small_resnet, resnet_unet = _module.small_resnet, _module.resnet_unet
