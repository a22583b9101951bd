"""Which code produced a result: the package's git commit."""

from __future__ import annotations

import os
import subprocess

__all__ = ["git_commit"]


def _git(*args: str) -> str:
    """Output of a git command run in the package's folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        ["git", *args], capture_output=True, text=True, timeout=10, cwd=here
    )
    return out.stdout.strip()


def git_commit() -> str | None:
    """Short hash of the package's git commit, ``-dirty`` when its files differ.

    Returns
    -------
    str or None
        None outside a git checkout (an installed wheel) or without git.
    """
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        if commit and _git("status", "--porcelain", "--untracked-files=no", "."):
            commit += "-dirty"
        return commit or None
    except (OSError, subprocess.SubprocessError):
        return None
