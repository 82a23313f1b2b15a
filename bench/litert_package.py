"""Build the zip of a litert function and report its size.

    modelprep litert build/models/digits/served        # the demo's flavours, once
    python -m bench.litert_package [--model DIR] [--flavour int8] [--python-version 3.12]
                                   [--no-trim] [--out build/litert/function.zip]

What a zip-deployed function needs and nothing else: the ``functions`` package,
``modelmeta.py``, one LiteRT flavour of the model under ``model/`` (MODEL_URI),
and the packages the litert path imports: the LiteRT interpreter, numpy, Pillow
and Werkzeug (with MarkupSafe). ``ai-edge-litert`` goes in without its declared
dependencies (protobuf, flatbuffers, ml_dtypes, tqdm...), which its converter
tools use and its interpreter does not; the tests run a request from such a
package with nothing else on the path.

Wheels come from PyPI for the target runtime (``pip install --target
--only-binary=:all: --python-version 3.12 --platform manylinux...``), pinned to
the versions installed here; ``--from-venv`` copies this environment's own
files instead (no download, this machine's Python). ``--no-trim`` keeps the
parts of the wheels the function never loads, which are otherwise left out:
LiteRT's WebGPU accelerator, vendor compiler plugins, AOT and tools, and
numpy's test suites.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "build" / "models" / "digits" / "served" / "litert"
"""Where ``modelprep litert build/models/digits/served`` writes the demo's flavours."""
DEFAULT_OUT = ROOT / "build" / "litert" / "function.zip"
RUNTIME_DISTRIBUTIONS = ("ai-edge-litert", "numpy", "pillow", "werkzeug", "markupsafe")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
TRIM = ("ai_edge_litert/libLiteRtWebGpuAccelerator.so", "ai_edge_litert/vendors",
        "ai_edge_litert/aot", "ai_edge_litert/tools", "numpy/_core/tests", "numpy/lib/tests",
        "numpy/typing/tests", "numpy/tests", "numpy/f2py/tests", "numpy/linalg/tests",
        "numpy/ma/tests", "numpy/random/tests", "numpy/fft/tests", "numpy/polynomial/tests")
"""Never loaded by the litert function (the tests run a package without them)."""
LAMBDA_ZIP_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Package:
    zip_path: Path
    zip_bytes: int
    unzipped_bytes: int
    parts: dict[str, int]
    """Unzipped bytes per top-level entry, largest first."""

    def format(self) -> str:
        lines = [f"{self.zip_path}: {self.zip_bytes / MIB:.1f} MiB zipped "
                 f"({self.zip_bytes:,} bytes), {self.unzipped_bytes / MIB:.1f} MiB unzipped; "
                 f"Lambda allows {LAMBDA_ZIP_LIMIT // MIB} MiB zipped (direct upload) and "
                 f"{LAMBDA_UNZIPPED_LIMIT // MIB} MiB unzipped"]
        for name, size in list(self.parts.items())[:12]:
            lines.append(f"  {size / MIB:8.1f} MiB  {name}")
        return "\n".join(lines)


def pinned() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_DISTRIBUTIONS]


def install_from_pypi(target: Path, python_version: str) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
                    "--no-deps", "--only-binary=:all:", "--implementation", "cp",
                    "--python-version", python_version, *platforms, *pinned()], check=True)


def install_from_venv(target: Path) -> None:
    """This environment's installed files of the runtime distributions, as pip laid them."""
    for name in RUNTIME_DISTRIBUTIONS:
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for entry in dist.files or []:
            if ".." in entry.parts or "__pycache__" in entry.parts:
                continue
            source = base / entry
            if source.is_file():
                dest = target / entry
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


def add_project(target: Path, model_dir: Path, flavour: str) -> None:
    shutil.copytree(ROOT / "functions", target / "functions",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "modelmeta.py", target / "modelmeta.py")
    model = target / "model"
    model.mkdir()
    for suffix in ("tflite", "json"):
        source = model_dir / f"model_{flavour}.{suffix}"
        if not source.is_file():
            raise SystemExit(f"{source} is missing; export it with `modelprep litert`")
        shutil.copy2(source, model / source.name)


def trim(target: Path) -> None:
    for relative in TRIM:
        path = target / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def build(out: Path, model_dir: Path = DEFAULT_MODEL, *, flavour: str = "int8",
          python_version: str = "3.12", from_venv: bool = False, trimmed: bool = True,
          compresslevel: int = 9) -> Package:
    """Write the zip at ``out`` and measure it."""
    with tempfile.TemporaryDirectory(prefix="litert-package-") as tmp:
        target = Path(tmp) / "package"
        target.mkdir()
        if from_venv:
            install_from_venv(target)
        else:
            install_from_pypi(target, python_version)
        add_project(target, model_dir, flavour)
        if trimmed:
            trim(target)
        out.parent.mkdir(parents=True, exist_ok=True)
        parts: dict[str, int] = {}
        unzipped = 0
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED,
                             compresslevel=compresslevel) as archive:
            for path in sorted(p for p in target.rglob("*") if p.is_file()):
                relative = path.relative_to(target)
                archive.write(path, relative.as_posix())
                size = path.stat().st_size
                unzipped += size
                parts[relative.parts[0]] = parts.get(relative.parts[0], 0) + size
    ordered = dict(sorted(parts.items(), key=lambda item: -item[1]))
    return Package(out, out.stat().st_size, unzipped, ordered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="folder of the LiteRT flavours (default: the demo's, "
                        "build/models/digits/served/litert)")
    parser.add_argument("--flavour", choices=("float", "int8"), default="int8")
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--from-venv", action="store_true",
                        help="copy this environment's files instead of downloading wheels")
    parser.add_argument("--no-trim", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    package = build(args.out, args.model, flavour=args.flavour,
                    python_version=args.python_version, from_venv=args.from_venv,
                    trimmed=not args.no_trim)
    source = ("this environment" if args.from_venv
              else f"PyPI wheels for CPython {args.python_version} manylinux x86_64")
    print(f"litert function, {args.flavour} flavour, {source}, "
          f"{'untrimmed' if args.no_trim else 'trimmed'}: {', '.join(pinned())}")
    print(package.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
