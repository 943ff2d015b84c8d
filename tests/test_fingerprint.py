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
