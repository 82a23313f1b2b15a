"""The root requirements.txt, generated from requirements.lock: what Cloud Functions and
Cloud Run install for the function deployed from the repository root.

    .venv/bin/python -m infra.requirements            # rewrite requirements.txt
    .venv/bin/python -m infra.requirements --check    # exit 1 if it differs from the lock

Google's Python buildpack runs ``pip install -r requirements.txt`` in the uploaded source
and nothing else: the project itself is not installed, its code is imported from the source
root (``main.py`` beside ``functions/``). So the file lists every distribution the deployed
function needs, pinned exactly as requirements.lock pins it: the project's own dependencies
and its extras `FUNCTION_EXTRAS`, and everything those require, followed through the
installed distributions' metadata for each Python the project supports (a dependency needed
on some of them only keeps its marker).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
OUTPUT = ROOT / "requirements.txt"
FUNCTION_EXTRAS = ("serve", "inprocess", "gcp")
"""functions-framework (the entry point), TensorFlow (the in-process backend, the default),
google-cloud-storage (MODEL_URI=gs://...)."""
PYTHONS = ("3.11", "3.12", "3.13")
"""requires-python in pyproject.toml: the Cloud Functions runtimes python311..python313."""
UNLOCKED = ("pip", "setuptools", "wheel")
"""Left out of the lock by ``pip freeze``: written with the range their dependents ask."""
HEADER = """\
# What Cloud Functions / Cloud Run install from the repository root (pip install -r
# requirements.txt): the function's dependencies with extras {extras}, pinned as in
# requirements.lock ({unlocked}, which the lock leaves out, as their dependents ask).
# Generated: .venv/bin/python -m infra.requirements (do not edit).
"""


class LockError(Exception):
    """The environment or the lock cannot say what a dependency is pinned to."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, tuple[str, str]]:
    """Canonical name -> (name as the lock spells it, version)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = (name.strip(), version.strip())
    return pins


def environments(extra: str = "") -> list[dict[str, str]]:
    """Marker environments for Linux x86_64 under each supported Python."""
    return [{"python_version": v, "python_full_version": f"{v}.0", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython",
             "extra": extra} for v in PYTHONS]


def roots() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in FUNCTION_EXTRAS:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(r) for r in wanted]


def closure(asked: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Canonical name -> the supported Pythons on which the function needs it; `asked`
    collects the specifiers each unlocked tool is required with."""
    needed: dict[str, set[str]] = {}
    queue: list[tuple[Requirement, set[str]]] = [(r, set(PYTHONS)) for r in roots()]
    while queue:
        requirement, pythons = queue.pop()
        name = canonical(requirement.name)
        if name in UNLOCKED:
            if asked is not None:
                asked.setdefault(name, set()).update(str(s) for s in requirement.specifier)
            needed.setdefault(name, set()).update(pythons)
            continue
        new = pythons - needed.get(name, set())
        if not new:
            continue
        needed.setdefault(name, set()).update(new)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError as exc:
            raise LockError(f"{requirement.name} is not installed here, so what it requires "
                            "is unknown; run `make install`") from exc
        for child in (Requirement(r) for r in dist.requires or ()):
            on = {env["python_version"] for env in _applying(child.marker, requirement.extras)
                  if env["python_version"] in new}
            if on:
                queue.append((child, on))
    return needed


def _applying(marker: Marker | None, extras: Iterable[str]) -> list[dict[str, str]]:
    """The environments in which a requirement with `marker` applies, given the extras its
    parent was asked for."""
    if marker is None:
        return environments()
    chosen = []
    for extra in ("", *extras):
        for env in environments(extra):
            if marker.evaluate(env) and env not in chosen:
                chosen.append({**env, "extra": ""})
    unique = {env["python_version"]: env for env in chosen}
    return list(unique.values())


def render() -> str:
    """requirements.txt's text as the lock and the environment make it."""
    pins = locked()
    asked: dict[str, set[str]] = {}
    lines = []
    for name, pythons in sorted(closure(asked).items()):
        if name in UNLOCKED:
            lines.append(f"{name}{','.join(sorted(asked[name]))}{_marker(pythons)}")
            continue
        if name not in pins:
            raise LockError(f"{name} is needed by the function but not pinned in "
                            "requirements.lock")
        spelled, version = pins[name]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = version
        if installed != version:
            raise LockError(f"{name} {installed} is installed but requirements.lock pins "
                            f"{version}; run `make install`")
        lines.append(f"{spelled}=={version}{_marker(pythons)}")
    return HEADER.format(extras=", ".join(FUNCTION_EXTRAS), unlocked=", ".join(UNLOCKED)) \
        + "\n".join(lines) + "\n"


def _marker(pythons: set[str]) -> str:
    if pythons == set(PYTHONS):
        return ""
    ordered = [v for v in PYTHONS if v in pythons]
    return " ; " + " or ".join(f'python_version == "{v}"' for v in ordered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.requirements",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if requirements.txt differs from what the lock gives")
    args = parser.parse_args(argv)
    try:
        text = render()
    except LockError as exc:
        print(f"infra.requirements: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if OUTPUT.is_file() and OUTPUT.read_text() == text:
            return 0
        print("requirements.txt differs from requirements.lock; regenerate it with "
              "`.venv/bin/python -m infra.requirements`", file=sys.stderr)
        return 1
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
