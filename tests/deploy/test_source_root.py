"""The repository root as Cloud Functions / Cloud Run source: main.py, requirements.txt
generated from the lock, .gcloudignore. Fast checks; tests/deploy/test_cloud_functions.py
rehearses the deploy itself."""

from __future__ import annotations

import ast
import shutil

from infra import requirements as generator
from tests.conftest import ROOT
from tests.deploy.source_upload import uploaded_files


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        line = line.split(";")[0].split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[generator.canonical(name)] = version
    return found


def test_requirements_txt_is_what_the_lock_gives():
    """Regenerate with `.venv/bin/python -m infra.requirements` after changing the lock."""
    assert (ROOT / "requirements.txt").read_text() == generator.render()
    assert generator.main(["--check"]) == 0


def test_every_pin_is_the_locks():
    locked = {name: version for name, (_, version) in generator.locked().items()}
    listed = pins((ROOT / "requirements.txt").read_text())
    assert {name: locked.get(name) for name in listed} == listed


def test_requirements_txt_holds_what_the_function_imports_and_no_tools():
    listed = pins((ROOT / "requirements.txt").read_text())
    assert {"functions-framework", "tensorflow-cpu", "google-cloud-storage", "numpy",
            "pillow", "werkzeug"} <= set(listed)
    assert not {"pytest", "scikit-learn", "moto", "boto3", "playwright", "ruff",
                "gcp-storage-emulator", "tensorflow"} & set(listed)


def test_root_main_exposes_predict_from_the_function_package():
    tree = ast.parse((ROOT / "main.py").read_text())
    imports = [(n.module, [a.name for a in n.names]) for n in tree.body
               if isinstance(n, ast.ImportFrom)]
    assert ("functions.main", ["predict"]) in imports


def test_gcloudignore_uploads_the_function_and_the_bundled_model(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("main.py", "requirements.txt", "modelmeta.py", ".gcloudignore", "README.md",
                 "pyproject.toml", "template.yaml", "Dockerfile"):
        shutil.copy2(ROOT / name, tree / name)
    for folder in ("functions", "tests/deploy", "bench", "modelprep"):
        shutil.copytree(ROOT / folder, tree / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "functions" / "__pycache__").mkdir()
    (tree / "functions" / "__pycache__" / "app.cpython-312.pyc").write_bytes(b"x")
    for path in ("build/models/digits/served/saved_model.pb",
                 "build/models/digits/served/variables/variables.index",
                 "build/models/digits/original/saved_model.pb", "build/pip-cache/x.whl",
                 "build/models/mobilenet/served/saved_model.pb", "model/saved_model.pb",
                 ".venv/bin/python", ".venv-py3.13/bin/python"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(b"x")
    files = uploaded_files(tree)
    outside = sorted({f.split("/")[0] for f in files})
    assert outside == ["build", "functions", "main.py", "model", "modelmeta.py",
                       "requirements.txt"]
    assert [f for f in files if f.startswith("build/")] == [
        "build/models/digits/served/saved_model.pb",
        "build/models/digits/served/variables/variables.index"]
    assert not [f for f in files if "__pycache__" in f]
    python_files = {f for f in files if f.startswith("functions/") and f.endswith(".py")}
    tracked = {str(p.relative_to(ROOT)) for p in (ROOT / "functions").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert python_files == tracked
