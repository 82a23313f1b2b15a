"""A Dockerfile's steps executed without a container engine, then what the image starts.

No Docker here, so an image is rehearsed step by step from its Dockerfile, parsed with
`dockerfile-parse` (PyPI):

- ``FROM``: the base image's Python (from its tag, or what `BASE_IMAGES` says the image
  ships) makes a fresh virtualenv; what the base image itself brings (Lambda's runtime
  client, the TensorFlow of a TensorFlow image) is installed into it first, pinned as in
  requirements.lock, and its ENV, WORKDIR and ENTRYPOINT apply.
- ``ARG``, ``ENV``, ``WORKDIR``: as Docker reads them, ``$VAR`` / ``${VAR}`` substituted.
- ``COPY``: the sources from the build context, less what .dockerignore keeps out of it,
  laid out under a temporary directory standing for the image's ``/``.
- ``RUN``: each ``&&``-joined command must be one the rehearsal knows: ``pip install``
  (run by the virtualenv's pip in the mapped WORKDIR, absolute paths mapped, with a pip
  cache shared by the run instead of ``--no-cache-dir``, which only keeps an image small)
  and ``rm``. Anything else fails the rehearsal, so a new step cannot be skipped unseen.
- ``CMD`` / ``ENTRYPOINT``: run in the mapped WORKDIR with the image's environment, the
  virtualenv first on PATH, nothing of the caller's environment but what `start` is given
  (as ``docker run -e``). Container paths in arguments and variables are mapped into the
  temporary root. ``docker run -p 127.0.0.1:PORT:8080`` becomes a rewrite of the exposed
  port and of ``0.0.0.0`` in the command: every server stays on loopback.

The Lambda base image's entrypoint is the Runtime Interface Emulator running
``python -m awslambdaric HANDLER`` (tests/aws/rie.py has the emulator); the others run the
command as given.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from tests.conftest import ROOT, free_port
from tests.processes import stop, wait_listening

LAMBDA_RIE = "lambda-rie"
"""The Lambda base image's entrypoint: the Runtime Interface Emulator over awslambdaric."""


@dataclass(frozen=True)
class BaseImage:
    """What a base image brings that a Dockerfile relies on."""

    workdir: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()
    """Distributions the image has installed, pinned from requirements.lock when rehearsed."""
    with_dependencies: bool = True
    """False where `packages` already lists everything the image has (Lambda's runtime
    client and its two dependencies)."""
    entrypoint: str | None = None
    python: str | None = None
    """The image's Python when its tag does not say (``3.12`` in ``python:3.12-slim``)."""


BASE_IMAGES: dict[str, BaseImage] = {
    "python": BaseImage(),
    "public.ecr.aws/lambda/python": BaseImage(
        workdir="/var/task",
        env={"LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime"},
        packages=("awslambdaric", "simplejson", "snapshot-restore-py"),
        with_dependencies=False, entrypoint=LAMBDA_RIE),
    # The GPU build of TensorFlow, rehearsed with tensorflow-cpu of the same release (no GPU
    # here); the image's Python is 3.11.
    "tensorflow/tensorflow": BaseImage(workdir="/", packages=("tensorflow-cpu",),
                                       python="3.11"),
}


def find_python(version: str) -> Path | None:
    """A python``version`` that runs: on PATH, else under pyenv (whose shim may refuse)."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}")] + sorted(
        glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in filter(None, candidates):
        result = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip() == str(
                tuple(int(p) for p in version.split("."))):
            return Path(candidate)
    return None


def lock_pins(names: tuple[str, ...] | list[str]) -> list[str]:
    """``name==version`` from requirements.lock for each name."""
    def key(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {key(line.split("==")[0]): line.strip()
            for line in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    missing = [n for n in names if key(n) not in pins]
    assert not missing, f"not in requirements.lock: {missing}"
    return [pins[key(n)] for n in names]


def pip_install(python: Path, args: list[str], cwd: Path, pip_cache: Path) -> None:
    """``python -m pip install ARGS`` with the run's shared cache; its output on failure.

    ``--no-compile``: no .pyc files written at install (Python writes those it needs on
    first import), which halves the time TensorFlow takes to install (40 s instead of 85 s
    here) and changes nothing the rehearsal checks."""
    env = {**os.environ, "PIP_CACHE_DIR": str(pip_cache), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1"}
    env.pop("PIP_NO_CACHE_DIR", None)
    result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile",
                             *args], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (f"pip install {' '.join(args)} failed:\n"
                                    f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


@dataclass
class Image:
    """A Dockerfile's steps carried out: its files under `root`, its packages in `venv`."""

    dockerfile: Path
    context: Path
    root: Path
    """Stands for the image's ``/``."""
    venv: Path
    python_version: str
    base: BaseImage
    env: dict[str, str]
    workdir: str
    cmd: list[str]
    entrypoint: list[str]
    exposed: list[int]
    steps: list[str] = field(default_factory=list)
    """What was done, one line per step, for failure messages."""

    def host(self, path: str) -> Path:
        """The place of the image's absolute `path` under `root`."""
        return self.root / PurePosixPath(path).relative_to("/")

    def installed(self) -> dict[str, str]:
        """Distribution name -> version in the image's virtualenv."""
        result = subprocess.run([str(self.venv / "bin" / "python"), "-m", "pip", "list",
                                 "--format=json", "--disable-pip-version-check"],
                                capture_output=True, text=True, check=True)
        return {p["name"].lower(): p["version"] for p in json.loads(result.stdout)}

    def command(self) -> list[str]:
        """What ``docker run IMAGE`` executes: ENTRYPOINT + CMD, or CMD alone."""
        return [*self.entrypoint, *self.cmd] if self.entrypoint else list(self.cmd)

    def start(self, env: Mapping[str, str] | None = None,
              volumes: Mapping[str, Path] | None = None, log: Path | None = None,
              timeout: float = 60) -> Container:
        """Run the image's command as ``docker run -p 127.0.0.1:PORT:EXPOSED -e NAME=VALUE
        -v HOST:CONTAINER``: `env` values and `volumes` are in the container's terms."""
        for inside, outside in (volumes or {}).items():
            place = self.host(inside)
            place.parent.mkdir(parents=True, exist_ok=True)
            if place.is_symlink():
                place.unlink()
            place.symlink_to(outside.resolve(), target_is_directory=outside.is_dir())
        port = free_port()
        exposed = self.exposed[0] if self.exposed else 8080
        log = log or self.root.parent / f"{self.dockerfile.name}-{port}.log"
        given = {**self.env, **(env or {})}
        full_env = {"PATH": f"{self.venv / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
                    "HOME": str(self.host("/root")), "LANG": "C.UTF-8",
                    "PYTHONNOUSERSITE": "1", "VIRTUAL_ENV": str(self.venv),
                    **{k: self._map(v) for k, v in given.items()}}
        if self.base.entrypoint == LAMBDA_RIE:
            argv = self._lambda_argv(port)
        else:
            argv = [self._map(a) for a in self.command()]
            argv = [str(port) if a == str(exposed) else "127.0.0.1" if a == "0.0.0.0" else a
                    for a in argv]
            full_env["PORT"] = str(port)
        process = subprocess.Popen(argv, cwd=self.host(self.workdir), env=full_env,
                                   stdout=log.open("wb"), stderr=subprocess.STDOUT)
        container = Container(f"http://127.0.0.1:{port}", process, log, argv)
        wait_listening(process, port, log, f"{self.dockerfile.name}: {argv}", timeout)
        return container

    def _lambda_argv(self, port: int) -> list[str]:
        """/lambda-entrypoint.sh outside Lambda: the emulator running the handler (CMD)."""
        from tests.aws.rie import find_emulator

        emulator = find_emulator()
        assert emulator is not None, "the Lambda Runtime Interface Emulator is missing"
        return [str(emulator), "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                "--runtime-api-address", f"127.0.0.1:{free_port()}", "--log-level", "info",
                str(self.venv / "bin" / "python"), "-m", "awslambdaric", *self.cmd]

    def _map(self, value: str) -> str:
        """A container path to its place under `root`, if its top folder is in the image."""
        if value.startswith("/") and len(PurePosixPath(value).parts) > 1 and \
                (self.root / PurePosixPath(value).parts[1]).exists():
            return str(self.host(value))
        return value


@dataclass
class Container:
    url: str
    process: subprocess.Popen
    log: Path
    argv: list[str]

    def post(self, path: str = "/", **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return requests.post(self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return requests.get(self.url + path, **kwargs)

    def wait_ready(self, path: str = "/healthz", timeout: float = 180) -> None:
        """Until `path` answers 200 (the model loaded), or fail with the log."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-5000:]
            try:
                response = self.get(path, timeout=5)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise AssertionError(f"not ready after {timeout} s ({last}):\n"
                             f"{self.log.read_text()[-5000:]}")

    def stop(self) -> None:
        stop(self.process)


def base_image(reference: str) -> tuple[BaseImage, str | None]:
    """The `BaseImage` for ``name:tag`` and the Python its tag names, if it does."""
    name, _, tag = reference.partition(":")
    assert name in BASE_IMAGES, f"no rehearsal is known for the base image {name!r}"
    base = BASE_IMAGES[name]
    match = re.match(r"(\d+\.\d+)", tag)
    version = base.python or (match.group(1) if match and name != "tensorflow/tensorflow"
                              else None)
    return base, version


def python_of(dockerfile: Path) -> str:
    """The Python version the Dockerfile's image runs."""
    from dockerfile_parse import DockerfileParser

    with dockerfile.open("rb") as handle:
        parser = DockerfileParser(fileobj=handle, env_replace=False)
        reference = str(parser.baseimage)
    _base, version = base_image(reference)
    assert version, f"{dockerfile}: cannot tell the Python of {reference}"
    return version


def build(dockerfile: Path, work: Path, *, context: Path = ROOT, python: Path | None = None,
          pip_cache: Path | None = None, build_args: Mapping[str, str] | None = None) -> Image:
    """Carry out `dockerfile`'s steps into `work` (root/ and venv/); the `Image`."""
    from dockerfile_parse import DockerfileParser

    from tests.infra.test_dockerignore import patterns

    pip_cache = pip_cache or ROOT / "build" / "pip-cache"
    with dockerfile.open("rb") as handle:
        structure = DockerfileParser(fileobj=io.BytesIO(handle.read()),
                                     env_replace=False).structure
    ignore_file = context / ".dockerignore"
    rules = patterns(ignore_file.read_text()) if ignore_file.is_file() else []
    root, venv = work / "root", work / "venv"
    for folder in ("tmp", "root"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    image: Image | None = None
    variables: dict[str, str] = dict(build_args or {})
    for step in structure:
        instruction, value = step["instruction"], step["value"]
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            assert image is None, f"{dockerfile}: one stage only is rehearsed"
            base, version = base_image(_substitute(value, variables).split()[0])
            assert version, f"{dockerfile}: cannot tell the Python of {value}"
            interpreter = python or find_python(version)
            assert interpreter is not None, f"python{version} is missing"
            subprocess.run([str(interpreter), "-m", "venv", str(venv)], check=True)
            if base.packages:
                how = ["-c", str(ROOT / "requirements.lock")] if base.with_dependencies \
                    else ["--no-deps"]
                pip_install(venv / "bin" / "python", [*how, *lock_pins(base.packages)], work,
                            pip_cache)
            image = Image(dockerfile, context, root, venv, version, base, dict(base.env),
                          base.workdir, [], [], [])
            image.host(base.workdir).mkdir(parents=True, exist_ok=True)
            image.steps.append(f"FROM {value}: python{version}, {list(base.packages)}")
            continue
        assert image is not None, f"{dockerfile}: {instruction} before FROM"
        known = {**variables, **image.env}
        if instruction == "ARG":
            name, _, default = value.partition("=")
            variables.setdefault(name.strip(), _substitute(default.strip(), known))
        elif instruction == "ENV":
            image.env.update(_env_pairs(value, known))
        elif instruction == "WORKDIR":
            image.workdir = str(PurePosixPath(image.workdir) / _substitute(value, known))
            image.host(image.workdir).mkdir(parents=True, exist_ok=True)
        elif instruction in ("COPY", "ADD"):
            _copy(image, _substitute(value, known), rules)
        elif instruction == "RUN":
            _run(image, _substitute(value, known), pip_cache)
        elif instruction in ("CMD", "ENTRYPOINT"):
            argv = json.loads(value) if value.strip().startswith("[") else \
                ["/bin/sh", "-c", value]
            setattr(image, instruction.lower(), argv)
        elif instruction == "EXPOSE":
            image.exposed += [int(p.split("/")[0]) for p in value.split()]
        elif instruction not in ("LABEL", "USER", "HEALTHCHECK", "STOPSIGNAL", "SHELL"):
            raise AssertionError(f"{dockerfile}: cannot rehearse {instruction} {value}")
        image.steps.append(f"{instruction} {value}")
    assert image is not None, f"{dockerfile} has no FROM"
    return image


def _substitute(text: str, known: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: known.get(m.group(1) or m.group(2), ""), text)


def _env_pairs(value: str, known: Mapping[str, str]) -> dict[str, str]:
    words = shlex.split(value)
    if words and "=" not in words[0]:  # the old form: ENV NAME value with spaces
        return {words[0]: _substitute(" ".join(words[1:]), known)}
    pairs: dict[str, str] = {}
    for word in words:
        name, _, raw = word.partition("=")
        pairs[name] = _substitute(raw, {**known, **pairs})
    return pairs


def _copy(image: Image, value: str, rules: list[Any]) -> None:
    words = [w for w in shlex.split(value) if not w.startswith("--")]
    assert not any(w.startswith("--from") for w in shlex.split(value)), "one stage only"
    *sources, dest = words
    target = PurePosixPath(dest) if dest.startswith("/") else \
        PurePosixPath(image.workdir) / dest
    into_folder = dest.endswith("/") or len(sources) > 1
    for source in sources:
        src = image.context / source
        assert src.exists(), f"COPY {source}: not in the build context"
        relative = src.relative_to(image.context).as_posix()
        assert not _ignored(relative, rules), f"COPY {source}: .dockerignore keeps it out"
        if src.is_dir():
            _copy_tree(image, src, image.host(str(target)), rules)
        else:
            place = image.host(str(target / src.name if into_folder else target))
            place.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, place)


def _copy_tree(image: Image, src: Path, dest: Path, rules: list[Any]) -> None:
    for path in sorted(src.rglob("*")):
        relative = path.relative_to(image.context).as_posix()
        if path.is_dir() or _ignored(relative, rules):
            continue
        place = dest / path.relative_to(src)
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, place)


def _ignored(relative: str, rules: list[Any]) -> bool:
    from tests.infra.test_dockerignore import ignored

    return bool(rules) and ignored(relative, rules)


def _run(image: Image, value: str, pip_cache: Path) -> None:
    for command in re.split(r"\s*&&\s*", value.strip()):
        words = shlex.split(command)
        if words[:2] == ["pip", "install"] or words[:4] in (
                ["python", "-m", "pip", "install"], ["python3", "-m", "pip", "install"]):
            args = words[words.index("install") + 1:]
            args = [a for a in args if a != "--no-cache-dir"]
            args = [_map_arg(image, a) for a in args]
            pip_install(image.venv / "bin" / "python", args, image.host(image.workdir),
                        pip_cache)
        elif words[:1] == ["rm"]:
            for target in (w for w in words[1:] if not w.startswith("-")):
                path = image.host(target if target.startswith("/") else
                                  str(PurePosixPath(image.workdir) / target))
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        else:
            raise AssertionError(f"{image.dockerfile}: cannot rehearse RUN {command!r}")


def _map_arg(image: Image, arg: str) -> str:
    """A pip argument naming an absolute container path (a file, or a folder with extras)."""
    if arg.startswith("/"):
        path, extras = re.match(r"([^\[]*)(\[.*\])?$", arg).groups()  # type: ignore[union-attr]
        return str(image.host(path)) + (extras or "")
    return arg
