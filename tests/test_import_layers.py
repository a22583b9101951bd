"""Imports point one way: data and metrics never import the model or torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "sysid_msstcn"

# module -> internal modules (and third-party roots) it must not import
FORBIDDEN = {
    "exceptions": {"*internal*"},
    "_paths": {"*internal*"},
    "_provenance": {"*internal*", "torch", "sklearn"},
    "config": {"torch", "sklearn", "model", "layers", "training", "estimator"},
    "presets": {"torch", "sklearn", "model", "training", "estimator"},
    "metrics": {"torch", "sklearn", "model", "layers", "training", "estimator"},
    "residuals": {"torch", "sklearn", "model", "layers", "training", "estimator"},
    "data": {"torch", "model", "layers", "training", "estimator", "objectives"},
    "layers": {"sklearn", "model", "distributions", "training", "estimator"},
    "distributions": {"sklearn", "layers", "model", "training", "estimator"},
    "model": {"sklearn", "objectives", "training", "estimator", "data", "cli"},
    "streaming": {"sklearn", "training", "estimator", "data", "cli"},
    "objectives": {"sklearn", "training", "estimator", "cli"},
    "training": {"sklearn", "estimator", "cli"},
    "estimator": {"cli"},
    "_estimator_training": {"cli", "estimator"},
    "_estimator_parallel": {"cli", "estimator"},
    "_estimator_prediction": {"cli", "estimator"},
    "ensemble": {"cli", "benchmarking", "hybrid", "baselines"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                # relative import inside the package
                names.add("sysid_msstcn." + mod if mod else "sysid_msstcn")
                for alias in node.names:
                    names.add(f"sysid_msstcn.{mod}.{alias.name}".replace("..", "."))
            else:
                names.add(mod)
                for alias in node.names:
                    names.add(f"{mod}.{alias.name}")
    return names


def _violations(module_key: str, names: set[str]) -> list[str]:
    bad = []
    forbidden = FORBIDDEN[module_key]
    for name in names:
        parts = name.split(".")
        if "*internal*" in forbidden and parts[0] == "sysid_msstcn" and len(parts) > 1:
            bad.append(name)
            continue
        if parts[0] in forbidden:
            bad.append(name)
        if parts[0] == "sysid_msstcn" and len(parts) > 1 and parts[1] in forbidden:
            bad.append(name)
    return bad


def _files():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        key = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if key in FORBIDDEN:
            yield key, path


@pytest.mark.parametrize("key,path", list(_files()), ids=lambda p: str(p))
def test_import_direction(key, path):
    bad = _violations(key, _imports(path))
    assert not bad, f"{path.relative_to(PKG)} must not import {sorted(bad)}"
