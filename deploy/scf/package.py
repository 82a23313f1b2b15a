"""Build a Tencent SCF code package (Web or event function) and refuse one over SCF's limit.

    python deploy/scf/package.py web litert --model build/scf/model   # build/scf/web/
    python deploy/scf/package.py event tfserving                       # build/scf/event/
    python deploy/scf/package.py --check DIR                           # measure any folder

SCF runs a code package's Python under its own standard runtime, Python 3.10
(``/var/lang/python310/bin/python3.10``); nothing is installed for you. So the package is
the function's code (``functions/``, ``modelmeta.py``, ``main.py``), the variant's entry
(``scf_bootstrap`` for a Web function, ``index.py`` for an event function), the optional
model under ``model/``, and every dependency as Linux x86-64 wheels for CPython 3.10
(manylinux_2_27 or older), unpacked beside the code, which is on SCF's ``sys.path``.

SCF refuses code over 500 MB before compression (layers included). The check counts the
unpacked bytes, writes the zip SCF's console or ``sls deploy`` would upload, and exits 1
with a message in capitals when the package is over the limit: TensorFlow alone is about
1.3 GB installed, so the in-process flavour is an image function (deploy/scf/image/).
Exit codes: 0 fits, 1 too large, 2 bad arguments or a failed pip install.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LIMIT_BYTES = 500 * 1024 * 1024
"""SCF: at most 500 MB of code per function version before compression, layers included."""
PYTHON_VERSION = "3.10"
PLATFORMS = ("manylinux_2_27_x86_64", "manylinux2014_x86_64")
"""What SCF's x86-64 Linux runs; ai-edge-litert ships manylinux_2_27 wheels only."""
VARIANTS = ("web", "event")
FLAVOURS = ("litert", "tfserving")
CODE = ("functions", "modelmeta.py", "main.py")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def build(variant: str, flavour: str, out: Path, model: Path | None = None,
          pip_cache: Path | None = None) -> Path:
    """The package folder `out`, rebuilt from scratch; its zip beside it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in CODE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=SKIPPED)
        else:
            shutil.copy2(source, out / name)
    for entry in (HERE / variant).iterdir():
        if entry.name in ("scf_bootstrap", "index.py"):
            shutil.copy2(entry, out / entry.name)
    if variant == "web":
        bootstrap = out / "scf_bootstrap"
        bootstrap.chmod(bootstrap.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if model is not None:
        shutil.copytree(model, out / "model", ignore=SKIPPED)
    requirements = [HERE / f"requirements-{flavour}.txt"]
    if variant == "web":
        requirements.append(HERE / "requirements-web.txt")
    install(requirements, out, pip_cache)
    for cache in out.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return out


def install(requirements: list[Path], target: Path, pip_cache: Path | None) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
               "--python-version", PYTHON_VERSION, "--no-compile"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    if pip_cache is not None:
        command += ["--cache-dir", str(pip_cache)]
    for requirement in requirements:
        command += ["-r", str(requirement)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"pip could not install the package's dependencies:\n{result.stderr}",
              file=sys.stderr)
        raise SystemExit(2)


def measure(folder: Path) -> int:
    """Bytes of every file under `folder`, as SCF counts code before compression."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def zip_folder(folder: Path) -> Path:
    """``folder.zip``, entries relative to the folder, modes kept (scf_bootstrap stays 755)."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo.from_file(path, path.relative_to(folder).as_posix())
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return archive


def check(folder: Path, archive: Path | None = None) -> int:
    """Print the package's size against SCF's limit; 0 if it fits, 1 if not (loudly)."""
    size = measure(folder)
    zipped = f", {archive.stat().st_size / 2**20:.1f} MiB zipped ({archive})" if archive else ""
    print(f"{folder}: {size / 2**20:.1f} MiB unpacked{zipped}; SCF's limit is "
          f"{LIMIT_BYTES / 2**20:.0f} MiB of code before compression")
    if size > LIMIT_BYTES:
        print(f"TOO LARGE FOR AN SCF CODE PACKAGE: {size / 2**20:.1f} MiB is over SCF's "
              f"{LIMIT_BYTES / 2**20:.0f} MiB limit by {(size - LIMIT_BYTES) / 2**20:.1f} MiB. "
              "Deploy this flavour as an image function (deploy/scf/image/), or use the "
              "LiteRT or TF Serving flavour.", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", nargs="?", choices=VARIANTS,
                        help="web (scf_bootstrap on port 9000) or event (main_handler)")
    parser.add_argument("flavour", nargs="?", choices=FLAVOURS,
                        help="litert (the model runs in the function) or tfserving (it calls "
                             "a TF Serving)")
    parser.add_argument("--out", type=Path, help="default: build/scf/VARIANT")
    parser.add_argument("--model", type=Path,
                        help="a folder copied to model/ in the package (MODEL_URI="
                             "/var/user/model); default: none, the model comes from MODEL_URI")
    parser.add_argument("--pip-cache", type=Path, default=ROOT / "build" / "pip-cache")
    parser.add_argument("--check", type=Path, metavar="DIR",
                        help="only measure DIR against the limit")
    args = parser.parse_args(argv)
    if args.check is not None:
        if not args.check.is_dir():
            parser.error(f"--check {args.check}: not a folder")
        return check(args.check)
    if args.variant is None or args.flavour is None:
        parser.error("give a variant and a flavour, or --check DIR")
    out = args.out or ROOT / "build" / "scf" / args.variant
    folder = build(args.variant, args.flavour, out, args.model, args.pip_cache)
    return check(folder, zip_folder(folder))


if __name__ == "__main__":
    sys.exit(main())
