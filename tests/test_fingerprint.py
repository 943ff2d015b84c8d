"""What a teacher's code is, for the cache key and --resume: local imports followed, library versions."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from amalgam.teachers.fingerprint import imported_names, local_code_digest


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_digest_follows_local_imports_through_modules_and_packages(tmp_path):
    write(tmp_path / "models.py", "import torch\nfrom helpers import make\n\ndef net():\n    return make()\n")
    write(tmp_path / "helpers.py", "from mylib.layers import block\n\ndef make():\n    return block()\n")
    write(tmp_path / "mylib" / "__init__.py", "")
    layers = write(tmp_path / "mylib" / "layers.py", "def block():\n    return 1\n")
    write(tmp_path / "unused.py", "X = 1\n")
    before = local_code_digest("models:net", tmp_path)
    write(tmp_path / "unused.py", "X = 2\n")  # not imported: not part of the teacher's code
    assert local_code_digest("models:net", tmp_path) == before
    layers.write_text("def block():\n    return 2\n")  # two imports away, inside a package
    assert local_code_digest("models:net", tmp_path) != before


def test_a_factory_importing_nothing_local_keeps_the_digest_of_its_own_file(tmp_path):
    import hashlib

    path = write(tmp_path / "models.py", "import torch\n\ndef net():\n    return torch.nn.Identity()\n")
    expected = hashlib.sha256(b"models.py\0" + path.read_bytes()).hexdigest()  # the digest before imports were followed
    assert local_code_digest("models:net", tmp_path) == expected
    assert local_code_digest("torch.nn:Identity", tmp_path) is None  # not in the recipe folder


def test_imported_names_reads_absolute_imports_and_survives_a_syntax_error(tmp_path):
    path = write(tmp_path / "m.py", "import a.b, c\nfrom d.e import f\nfrom . import g\nfrom .h import i\n")
    assert imported_names(path) == ["a.b", "c", "d.e"]
    assert imported_names(write(tmp_path / "bad.py", "def (:\n")) == []


def test_a_library_teacher_is_keyed_by_the_library_version(world):
    from amalgam.config.recipe import load_recipe
    from amalgam.teachers.fingerprint import model_code

    recipe = load_recipe(world)
    name = next(iter(recipe.teachers))
    timm = recipe.model_copy(deep=True)
    timm.teachers[name].model = timm.teachers[name].model.model_validate({"from": "timm", "name": "resnet18"})
    assert model_code(timm, name) == {"package": f"timm=={version('timm')}"}


def test_resume_names_a_library_upgrade_and_accepts_runs_from_before_versions_were_recorded(world):
    from amalgam.config.recipe import load_recipe
    from amalgam.teachers.fingerprint import fingerprint_changes, teacher_fingerprints

    recipe = load_recipe(world)
    name = next(iter(recipe.teachers))
    recipe.teachers[name].model = recipe.teachers[name].model.model_validate({"from": "timm", "name": "resnet18"})
    stored = teacher_fingerprints(recipe)
    assert fingerprint_changes(stored, recipe) == []
    stored[name]["code"] = {"package": "timm==0.0.1"}
    assert fingerprint_changes(stored, recipe) == [f"{name}: its code changed (timm==0.0.1 -> timm=={version('timm')})"]
    stored[name]["code"] = {}  # a checkpoint from before library versions were part of a teacher's code
    assert fingerprint_changes(stored, recipe) == []


def test_an_imported_folder_without_init_is_not_walked_as_code(tmp_path):
    write(tmp_path / "models.py", "import data\n\ndef net():\n    return 1\n")
    before = local_code_digest("models:net", tmp_path)
    write(tmp_path / "data" / "scenes" / "gen.py", "X = 1\n")  # a data folder that happens to hold a script
    assert local_code_digest("models:net", tmp_path) == before


def test_a_factory_from_an_editable_or_pythonpath_package_is_keyed_by_its_source(world, tmp_path, monkeypatch):
    # its version (none here: a folder on PYTHONPATH) stays when it is edited in place
    from amalgam.config.recipe import load_recipe
    from amalgam.teachers.fingerprint import fingerprint_changes, model_code, teacher_fingerprints

    write(tmp_path / "outside" / "extmodels" / "__init__.py", "from .layers import net\n")
    code = write(tmp_path / "outside" / "extmodels" / "layers.py", "def net():\n    return 1\n")
    unrelated = write(tmp_path / "outside" / "extmodels" / "tests" / "test_layers.py", "X = 1\n")
    (tmp_path / "outside" / "extmodels" / ".#layers.py").symlink_to(tmp_path / "gone")  # an editor's lock file
    monkeypatch.syspath_prepend(str(tmp_path / "outside"))
    recipe = load_recipe(world)
    name = next(iter(recipe.teachers))
    recipe.teachers[name].model = recipe.teachers[name].model.model_validate(
        {"from": "python", "factory": "extmodels:net"}
    )
    before = model_code(recipe, name)
    assert set(before) == {"package", "module_source"}
    stored = teacher_fingerprints(recipe)
    unrelated.write_text("X = 2\n")  # a module the factory never imports: not its code
    assert model_code(recipe, name) == before
    code.write_text("def net():\n    return 2\n")  # imported by the package's __init__
    assert model_code(recipe, name)["module_source"] != before["module_source"]
    assert fingerprint_changes(stored, recipe) == [f"{name}: its factory's code changed"]
    stored[name]["code"].pop("module_source")  # a run from before module sources were recorded resumes
    assert fingerprint_changes(stored, recipe) == []


def test_a_task_plugins_code_is_part_of_the_cache_key_and_of_resume(world, tmp_path, monkeypatch):
    # a plugin's convert_output shapes the answers the cache stores: an edit reused stale ones
    from amalgam.config.recipe import load_recipe
    from amalgam.distill.cache import _comparable
    from amalgam.task import TASKS
    from amalgam.teachers.fingerprint import fingerprint_changes, task_code, teacher_fingerprints

    plugin = write(tmp_path / "plugins" / "mytasks" / "__init__.py", "X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    recipe = load_recipe(world)
    name = next(iter(recipe.teachers))
    task = recipe.teachers[name].task
    assert task_code(task) == {}  # amalgam's own task: amalgam's version covers it
    plugin_class = type("Plugin", (TASKS.get(task),), {"__module__": "mytasks"})
    monkeypatch.setitem(TASKS._items, task, plugin_class)
    before = task_code(task)
    assert set(before) == {"package", "module_source"}
    stored = teacher_fingerprints(recipe)
    plugin.write_text("X = 2\n")
    assert task_code(task) != before
    assert fingerprint_changes(stored, recipe) == [f"{name}: its task plugin's code changed"]
    stored[name].pop("task")  # a run from before task code was recorded resumes
    assert fingerprint_changes(stored, recipe) == []
    assert _comparable({"sources": {}})["task_code"] == {}  # a store of before, of a built-in task, stays valid
