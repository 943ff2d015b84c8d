"""Builds amalgam's wheel, installs it (not editable) in a clean venv and runs it: what CI checks.

A non-editable install once lacked ``amalgam.kd`` (packages were listed by hand) and nothing
noticed: every test imports the source tree. This tool imports only the installed wheel:

1. ``pip wheel --no-deps`` builds the wheel; every package under ``amalgam/`` must be in it.
2. A fresh venv gets the wheel with ``--no-deps``. Its heavy dependencies (torch, timm, ...) come
   from the current environment through a ``.pth`` line placed *after* the venv's own
   site-packages, so the wheel's ``amalgam`` wins and the source tree is never on the path
   (the commands run outside the repository).
3. ``amalgam tasks`` must list the built-in tasks from the installed distribution, and
   ``amalgam build`` must train and evaluate the tests' tiny world for one short epoch.

Usage: ``python tools/check_wheel.py [--keep DIR]`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIST_NAME = "amalgam_kd"  # the distribution's name in wheel file names (amalgam-kd on the index)


def run(*args: str, cwd: Path) -> str:
    """Runs a command; on failure prints its output and exits 1."""
    start = time.time()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    shown = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(args))[:110]
    print(f"  {shown}  ({time.time() - start:.0f} s)")
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        sys.exit(f"check_wheel: failed: {' '.join(args)}")
    return done.stdout


def source_packages() -> set[str]:
    """Every package (folder with ``__init__.py``) under amalgam/ and the built-in tasks."""
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "amalgam").rglob("__init__.py")}
    return found | {"amalgam_tasks"}


def wheel_packages(wheel: Path) -> set[str]:
    """Packages inside a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        return {".".join(Path(n).parent.parts) for n in zf.namelist() if n.endswith("/__init__.py")}


def link_dependencies(folder: Path) -> Path:
    """A folder of links to every installed package of this environment except amalgam's own.

    The current environment holds amalgam editable (a finder and a dist-info that point to the
    source tree); leaving them out keeps the clean venv's amalgam the wheel's alone.
    """
    folder.mkdir(exist_ok=True)
    for entry in sys.path:
        if not entry.endswith("site-packages") or not Path(entry).is_dir():
            continue
        for item in Path(entry).iterdir():
            own = item.name.lower().startswith(("amalgam", "__editable__")) or item.suffix == ".pth"
            if not own and not (folder / item.name).exists():
                (folder / item.name).symlink_to(item)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="amalgam-wheel-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"check_wheel: working in {work}")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(REPO), cwd=work)
    wheels = sorted((work / "dist").glob(f"{DIST_NAME}-*.whl"))
    if not wheels:
        built = sorted(p.name for p in (work / "dist").iterdir())
        sys.exit(f"check_wheel: no {DIST_NAME}-*.whl in {work / 'dist'}: {built}")
    missing = source_packages() - wheel_packages(wheels[-1])
    if missing:
        sys.exit(f"check_wheel: {wheels[-1].name} lacks packages: {sorted(missing)}")
    print(f"  {wheels[-1].name}: all {len(source_packages())} packages")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=work)
    py = venv / "bin" / "python"
    own = Path(run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work).strip())
    (own / "zz_amalgam_deps.pth").write_text(f"{link_dependencies(work / 'deps')}\n")  # zz: after the wheel
    run(str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheels[-1]), cwd=work)
    where = run(str(py), "-c", "import amalgam, amalgam.kd, amalgam_tasks; print(amalgam.__file__)", cwd=work)
    if not where.strip().startswith(str(own)):
        sys.exit(f"check_wheel: amalgam imported from {where.strip()}, not from the installed wheel in {own}")
    amalgam = str(venv / "bin" / "amalgam")
    tasks = run(amalgam, "tasks", cwd=work)
    for name in ("classification", "segmentation", "depth"):
        if f"{name}\tamalgam-kd (" not in tasks:  # registered by the wheel's own entry points
            sys.exit(f"check_wheel: `amalgam tasks` does not list {name}:\n{tasks}")

    sys.path.insert(0, str(REPO))
    from tests.world import TINY_BUILD, make_world

    (work / "world").mkdir(exist_ok=True)
    recipe = make_world(work / "world")
    run(amalgam, "build", str(recipe), *TINY_BUILD, cwd=work)
    if not (work / "world" / "runs" / "tiny" / "report.json").is_file():
        sys.exit("check_wheel: the build from the wheel wrote no report.json")
    print("check_wheel: the wheel installs, lists its tasks and builds the tiny world")


if __name__ == "__main__":
    main()
