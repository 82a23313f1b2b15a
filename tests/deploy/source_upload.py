"""What `gcloud functions deploy --source .` / `gcloud run deploy --source .` upload.

gcloud reads .gcloudignore with gitignore's rules (patterns in order, ``!`` re-including,
``/`` anchoring, a folder left out taking everything below it). No gcloud here, so the
matching is git's own: ``git ls-files --others --exclude-from=.gcloudignore`` in a
throwaway repository over the tree lists exactly the files those rules keep.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


def committed_tree(repo: Path, into: Path, commit: str = "HEAD") -> Path:
    """``git archive COMMIT`` unpacked into `into`: the committed tree alone."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "tree.tar"
        subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", "-o", str(archive),
                        commit], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return into


def uploaded_files(tree: Path) -> list[str]:
    """The files under `tree` that .gcloudignore lets through, as relative POSIX paths."""
    with tempfile.TemporaryDirectory() as git_dir:
        subprocess.run(["git", "init", "-q", "--bare", git_dir], check=True)
        result = subprocess.run(
            ["git", f"--git-dir={git_dir}", f"--work-tree={tree}", "ls-files", "--others",
             f"--exclude-from={tree / '.gcloudignore'}", "-z"],
            cwd=tree, capture_output=True, check=True)
    return sorted(p.decode() for p in result.stdout.split(b"\0") if p)


def upload(tree: Path, workspace: Path) -> list[str]:
    """Copy what gcloud would upload from `tree` into `workspace` (the function's source
    directory on the platform: /workspace); the files copied."""
    files = uploaded_files(tree)
    for name in files:
        target = workspace / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tree / name, target)
    return files
