"""The console script: `import amalgam` stays light, and a Ctrl-C while the command line loads is one line."""

from __future__ import annotations

import subprocess
import sys

import amalgam
from amalgam import console


def test_import_amalgam_loads_no_torch_until_the_api_is_used():
    code = "import sys, amalgam; print('torch' in sys.modules); amalgam.build; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_the_package_still_names_its_api_and_its_subpackages():
    from amalgam.api import build

    assert amalgam.build is build
    assert {"build", "evaluate", "inspect", "load_student", "Inspection", "AmalgamError"} <= set(dir(amalgam))
    assert "importlib" not in dir(amalgam) and "_importlib" not in dir(amalgam)
    assert set(amalgam.__all__) == set(amalgam._LAZY) | {"AmalgamError", "RecipeError", "__version__"}
    # `import amalgam` alone used to load its subpackages: amalgam.task.TASKS (docs/plugins.md) must still work
    code = "import amalgam; amalgam.task.TASKS; amalgam.kd.kd_loss; print(hasattr(amalgam, 'no_such_thing'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    class Interrupting:  # a finder that raises as a Ctrl-C during torch's import would
        def find_spec(self, name, path=None, target=None):
            if name == "amalgam.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "amalgam.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert console.main() == console.INTERRUPTED
    assert capsys.readouterr().err == "amalgam: interrupted\n"


def test_the_console_script_runs_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["amalgam", "tasks"])
    assert console.main() == 0
    assert "segmentation" in capsys.readouterr().out
