# SPDX-License-Identifier: AGPL-3.0-or-later
"""One build step on top of setup.cfg: ship the repository's ``templates/`` inside the package.

The templates stay at the top of the repository (the project's layout), outside ``whistle/``, so
``package_data`` cannot reach them. Every built distribution (wheel, and so ``pip install .`` and
an install from the sdist, which carries ``templates/`` through MANIFEST.in) gets a copy at
``whistle/templates/``; ``whistle/server/app.py`` looks there first, then in the checkout.
Editable installs copy nothing: the app reads the checkout's ``templates/`` directly, so an edited
template shows without reinstalling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"


class BuildPyWithTemplates(build_py):
    """``build_py`` that also copies ``templates/`` to ``<build_lib>/whistle/templates/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not TEMPLATES.is_dir():
            # Fail closed: a wheel without templates installs fine and then answers every page
            # with a 500; better no wheel at all.
            raise SystemExit(f"cannot build whistle: {TEMPLATES} is missing")
        target = Path(self.build_lib) / "whistle" / "templates"
        # Start empty: a template deleted from the checkout must not survive in an old build/.
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(TEMPLATES, target,
                        ignore=shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*~"))


setup(cmdclass={"build_py": BuildPyWithTemplates})
