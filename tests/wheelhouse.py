# SPDX-License-Identifier: AGPL-3.0-or-later
"""Build whistle as a user would get it, and fresh virtualenvs to install it into.

Used by tests/test_packaging.py and tests/test_workstation_install.py. The sdist is built from a
copy of the checkout's files (what ``git ls-files`` knows, tracked or new, as a fresh clone would
have them) so that nothing in the checkout itself (its ``build/``, egg-info, ``.venv``) can leak
into or out of the build; the wheel is then built *from that sdist*, proving the sdist complete.
Everything lives under pytest's temporary folder, outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# pip may resolve dependencies from a package index; building and installing take seconds each.
PIP_TIMEOUT = 600


@dataclass(frozen=True)
class Dists:
    """The built distributions of one test session."""

    sdist: Path
    wheel: Path


_built: list[Dists] = []


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a process of a fresh venv: nothing that points back at this checkout,
    its venv, or a whistle instance configured for the test process."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WHISTLE_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | extra


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = PIP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command and fail the test with its output if it does not exit 0."""
    result = subprocess.run(args, cwd=cwd, env=env if env is not None else clean_env(),
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n"
                    f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def _copy_checkout(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # listed by git but deleted in the work tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def build_dists(factory: pytest.TempPathFactory) -> Dists:
    """The sdist and the wheel built from it; built once per test session."""
    if _built:
        return _built[0]
    base = factory.mktemp("dists")
    src = base / "src"
    _copy_checkout(src)
    # setuptools' PEP 517 hook directly, with this venv's setuptools (>=64, as pyproject.toml asks):
    # the `build` frontend is not a dependency of the project.
    sdist_dir = base / "sdist"
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = run([sys.executable, "-c", code, str(sdist_dir)], cwd=src).stdout.strip().splitlines()[-1]
    sdist = sdist_dir / name
    wheel_dir = base / "wheel"
    # From the sdist, with pip's build isolation: what `pip install whistle-X.tar.gz` does.
    # --no-cache-dir: every build is of this session's code, never a wheel pip cached before.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(wheel_dir),
         str(sdist)], cwd=base)
    wheels = list(wheel_dir.glob("whistle-*.whl"))
    assert len(wheels) == 1, wheels
    _built.append(Dists(sdist=sdist, wheel=wheels[0]))
    return _built[0]


def make_venv(path: Path) -> Path:
    """A fresh virtualenv (its own pip, no system site-packages); return its ``bin`` folder."""
    assert not path.resolve().is_relative_to(ROOT), "the venv must live outside the checkout"
    run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin"
