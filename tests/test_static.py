# SPDX-License-Identifier: AGPL-3.0-or-later
"""Static checks as part of the suite: ruff (with the security rules), mypy --strict, bandit, and
an audit of the runtime dependencies for known vulnerabilities (pip-audit)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    if shutil.which(name, path=str(Path(sys.executable).parent)) is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", name]


def test_static_ruff_clean() -> None:
    result = subprocess.run([*_tool("ruff"), "check", "."],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_static_mypy_clean() -> None:
    result = subprocess.run(_tool("mypy"), cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- bandit ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_static_bandit_clean() -> None:
    result = subprocess.run([*_tool("bandit"), "-q", "-r", "whistle", "-c", "pyproject.toml"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_static_bandit_skipped_checks_are_justified_on_their_lines() -> None:
    """pyproject.toml skips B101 and B105 because ruff's S101/S105 cover them with per-line
    justifications. Here bandit runs exactly those two checks without the config, and every hit
    must carry its justification: ``# noqa: S101 - why`` (or ``# nosec``) on the line. Bandit
    finds a few things ruff does not (a dict value, for instance); those need a reason too."""
    result = subprocess.run([*_tool("bandit"), "-q", "-r", "whistle", "-t", "B101,B105", "-f", "json"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    findings = json.loads(result.stdout)["results"]
    unexplained = []
    for hit in findings:
        line = (ROOT / hit["filename"]).read_text(encoding="utf-8").splitlines()[hit["line_number"] - 1]
        code = "S" + hit["test_id"][1:]
        if not re.search(rf"#\s*(noqa:[^#]*\b{code}\b[^#]*-\s*\S|nosec\b)", line):
            unexplained.append(f"{hit['filename']}:{hit['line_number']} {hit['test_id']} {hit['issue_text']}")
    assert not unexplained, ("add `# noqa: S1xx - why` (or `# nosec B1xx - why`) to each line:\n"
                             + "\n".join(unexplained))


# --- dependency audit ------------------------------------------------------------------------

# Vulnerabilities accepted on purpose, each with the reason (none so far). Passed to pip-audit as
# --ignore-vuln; add an entry only for a vulnerability with no fixed release, or one that cannot
# reach whistle, and say which.
IGNORED_VULNS: dict[str, str] = {}
# Dependencies that cannot be audited from here, pinned to the exact release, with the reason.
# The exemption lapses by itself when another release is installed.
UNAUDITABLE: dict[str, tuple[str, str]] = {
    "deprecated": ("1.3.1", "pulled in by limits (flask-limiter); 1.3.1 is the newest release for "
                   "Python 3.11 (3.x needs 3.12), and the registry serves vulnerability data "
                   "only for the latest release"),
}
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_requirements() -> dict[str, str]:
    """setup.cfg's install_requires and everything they pull in (extras and markers evaluated
    here), pinned to the versions installed in this environment: what a deployment runs."""
    import configparser
    from importlib import metadata

    from packaging.requirements import Requirement

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = [line for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    todo = [Requirement(line) for line in lines]
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (_canonical(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (from setup.cfg) is not installed: pip install -e '.[test]'")
        pinned[_canonical(req.name)] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras | {""}):
                todo.append(sub)
    return pinned


def _pypi_project(name: str) -> dict[str, object]:
    import urllib.request

    url = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - a fixed https URL
        doc: dict[str, object] = json.load(resp)
    return doc


def _audit_unavailable(message: str) -> None:
    message = "dependency audit could not run: " + message
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message + " (fails when CI=true)")


@pytest.mark.slow
def test_static_dependencies_have_no_known_vulnerabilities(tmp_path: Path) -> None:
    """pip-audit with PyPI's own vulnerability data (``--vulnerability-service pypi``: PyPI's JSON
    API, the only host CI reaches; OSV is not reachable) over the runtime dependencies.

    Every dependency must actually be audited (``--strict``'s rule, enforced here so that all the
    gaps are listed at once instead of stopping at the first). pip-audit asks PyPI for
    ``/pypi/NAME/VERSION/json``; where the registry answers 404 there (the package mirror these
    machines and CI reach serves only ``/pypi/NAME/json``) the test reads that project document,
    whose ``vulnerabilities`` are PyPI's for the latest release: exact when the installed release
    is the latest, and otherwise the dependency counts as not audited.

    Found vulnerabilities always fail. A dependency that could not be audited, or no answer from
    PyPI, fails in CI (CI=true) and skips elsewhere.
    """
    pinned = _runtime_requirements()
    reqs = tmp_path / "runtime-requirements.txt"
    reqs.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())))
    if shutil.which("pip-audit", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("pip-audit is not installed: pip install -e '.[test]'")
    cmd = [sys.executable, "-m", "pip_audit", "--vulnerability-service", "pypi", "--disable-pip",
           "--no-deps", "-r", str(reqs), "--format", "json", "--progress-spinner", "off",
           "--timeout", "30", "--cache-dir", str(tmp_path / "cache"),
           *[arg for vuln in IGNORED_VULNS for arg in ("--ignore-vuln", vuln)]]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = None
    if report is None:
        tail = "\n".join(result.stderr.strip().splitlines()[-2:])[-600:]
        _audit_unavailable(f"pip-audit could not query PyPI (exit {result.returncode}):\n{tail}")
        return
    from concurrent.futures import ThreadPoolExecutor

    def project_or_error(name: str) -> dict[str, object] | str:
        try:
            return _pypi_project(name)
        except (OSError, ValueError) as exc:
            return str(exc)

    skipped = [_canonical(dep["name"]) for dep in report["dependencies"] if "skip_reason" in dep]
    with ThreadPoolExecutor(max_workers=8) as pool:
        projects = dict(zip(skipped, pool.map(project_or_error, skipped), strict=True))
    found: list[str] = []
    unaudited: dict[str, str] = {}
    for dep in report["dependencies"]:
        name, version = _canonical(dep["name"]), dep.get("version", pinned.get(_canonical(dep["name"]), "?"))
        if "skip_reason" not in dep:
            found += [f"{name} {version}: {v['id']} (fixed in {', '.join(v['fix_versions']) or 'no release'})"
                      for v in dep["vulns"] if v["id"] not in IGNORED_VULNS]
            continue
        project = projects[name]
        if isinstance(project, str):
            unaudited[name] = f"{dep['skip_reason']}; project document: {project}"
            continue
        latest = str(project["info"]["version"])  # type: ignore[index]
        if latest != version:
            if UNAUDITABLE.get(name, ("", ""))[0] != version:
                unaudited[name] = f"{version} installed, PyPI has vulnerability data only for {latest}"
            continue
        for vuln in project.get("vulnerabilities") or []:  # type: ignore[attr-defined]
            ids = {vuln["id"], *vuln.get("aliases", [])}
            if vuln.get("withdrawn") or ids & set(IGNORED_VULNS):
                continue
            fixed = ", ".join(vuln["fixed_in"]) or "no release"
            found.append(f"{name} {version}: {vuln['id']} (fixed in {fixed})")
    assert not found, "known vulnerabilities in runtime dependencies:\n" + "\n".join(found)
    if unaudited:
        _audit_unavailable("not audited: " + "; ".join(f"{n}: {why}" for n, why in sorted(unaudited.items())))


# --- the test suite's own layout --------------------------------------------------------------


def test_static_tests_share_helpers_only_through_support() -> None:
    """Test files import shared helpers from tests/support.py, never from conftest.py (pytest's
    file for fixtures, loaded by pytest under a name that depends on its import mode) or from
    another test file (a change there then breaks this one's collection, and any test function
    or fixture imported with a helper runs or applies here too)."""
    import ast

    tests = ROOT / "tests"
    test_modules = {p.stem for p in tests.glob("test_*.py")}
    offenders = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.name}:{node.lineno} imports {name}" for name in names
                          if name.split(".")[0] in test_modules | {"conftest", "helpers"}]
    assert not offenders, "import shared helpers from support instead:\n" + "\n".join(offenders)
