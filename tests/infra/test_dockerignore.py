""".dockerignore: what every Dockerfile copies reaches the build; the rest does not.

No Docker engine here, so the build context is worked out as Docker's builder works it
out (moby's patternmatcher): patterns in order, a later match overriding an earlier one,
``!`` re-including, a pattern matching a path or any folder above it, ``*`` and ``?``
within one path segment, ``**`` across segments.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import ROOT

DOCKERFILES = sorted(p for p in ROOT.rglob("Dockerfile*")
                     if not p.relative_to(ROOT).parts[0].startswith((".", "build")))
COPY = re.compile(r"^#?\s*(?:COPY|ADD)\s+(?!--from)(?:--\S+\s+)*(.+?)\s+\S+\s*$", re.M)
"""COPY/ADD sources, including the ones a comment tells the reader to add."""


def patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) per line, as moby's patternmatcher compiles them."""
    compiled = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        path = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
        regex = ""
        i = 0
        while i < len(path):
            if path.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif path.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif path[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif path[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(path[i]), i + 1
        compiled.append((exception, re.compile(regex)))
    return compiled


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not exception
    return result


RULES = patterns((ROOT / ".dockerignore").read_text())


def copied_sources() -> list[tuple[str, str]]:
    sources = []
    for dockerfile in DOCKERFILES:
        for match in COPY.finditer(dockerfile.read_text()):
            for source in match.group(1).split():
                sources.append((str(dockerfile.relative_to(ROOT)), source.rstrip("/")))
    return sources


def test_the_sources_under_build_are_found():
    """The model files two Dockerfiles copy from build/ (one in a comment that shows how):
    what the exception in .dockerignore is for."""
    assert {("Dockerfile", "build/models/digits/served"),
            ("infra/tfserving/Dockerfile.function",
             "build/models/digits/served/assets.extra/model_metadata.json"),
            } <= set(copied_sources())


@pytest.mark.parametrize("dockerfile, source", copied_sources())
def test_every_copied_source_reaches_the_build(dockerfile, source):
    assert not ignored(source, RULES), f"{dockerfile} copies {source}, which .dockerignore drops"
    tracked = subprocess.run(["git", "ls-files", source], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    inside = [f for f in tracked if "__pycache__" not in f and not f.endswith(".pyc")]
    assert [f for f in inside if ignored(f, RULES)] == []


@pytest.mark.parametrize("path", [
    "build/pip-cache/wheels/x.whl", "build/bench/peer-venv/bin/python",
    "build/models/mobilenet_v2/served/saved_model.pb", "build/models/digits/original/x.pb",
    ".venv/bin/python", ".venv-py3.13/bin/python", ".venv-tools/bin/sam", ".git/HEAD",
    "functions/__pycache__/app.cpython-311.pyc", "bench/results/latest.json",
])
def test_environments_caches_and_other_builds_stay_out(path):
    assert ignored(path, RULES)


def test_the_matcher_follows_dockers_rules():
    rules = patterns("build/\n!build/keep/\n*.log\ndocs/**/*.tmp\n!docs/a/keep.tmp\n")
    assert ignored("build/x", rules) and not ignored("build/keep/x", rules)
    assert ignored("a.log", rules) and not ignored("sub/a.log", rules)  # * stays in a segment
    assert ignored("docs/a/b/c.tmp", rules) and ignored("docs/c.tmp", rules)
    assert not ignored("docs/a/keep.tmp", rules)
    assert not ignored(str(Path("functions") / "app.py"), RULES)
