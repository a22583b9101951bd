"""Estimator flags generated from get_params, and --config files."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ._common import _NOT_FLAGS, UsageError


def _estimator_defaults() -> dict[str, Any]:
    from ..estimator import MSSTCNRegressor

    return MSSTCNRegressor().get_params(deep=False)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _parse_value(text: str) -> Any:
    """A flag value: JSON (lists become tuples), none/true/false, else a str."""
    lowered = text.strip().lower()
    if lowered in ("none", "null", "true", "false"):
        return {"true": True, "false": False}.get(lowered)
    try:
        return _tuples(json.loads(text))
    except json.JSONDecodeError:
        return text


def _add_estimator_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "estimator parameters",
        "MSSTCNRegressor parameters as JSON values (e.g. --channels [16,16,16]); "
        "they override --config",
    )
    group.add_argument(
        "--config",
        metavar="FILE|PRESET",
        help="JSON file of estimator parameters, or a preset name "
        "(see `sysid-msstcn presets`)",
    )
    docs = _parameter_docs()
    for name, default in sorted(_estimator_defaults().items()):
        if name not in _NOT_FLAGS:
            text = docs.get(name, "").replace("%", "%%")
            group.add_argument(
                "--" + name.replace("_", "-"),
                dest="est_" + name,
                type=_parse_value,
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=f"{text} (default: {default!r})".strip(),
            )


def _parameter_docs() -> dict[str, str]:
    """First sentence of each parameter in the estimator's numpydoc docstring."""
    from ..estimator import MSSTCNRegressor

    lines = (MSSTCNRegressor.__doc__ or "").splitlines()
    docs: dict[str, str] = {}
    names: list[str] = []
    section = ""
    for prev, line in zip([""] + lines, lines, strict=False):
        text = line.strip()
        if set(text) == {"-"}:
            section = prev.strip()
            continue
        if section != "Parameters" or not text:
            continue
        if line.startswith("    ") and not line.startswith("        "):
            names = [n.strip() for n in text.split(" : ")[0].split(",")]
        elif names:
            for n in names:
                docs[n] = (docs.get(n, "") + " " + text).strip()
    plain = {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "")
             for k, v in docs.items()}  # fmt: skip
    return {k: v.split(". ")[0].rstrip(".") for k, v in plain.items()}


def _read_config(spec: str | None) -> dict[str, Any]:
    from ..presets import preset_names

    if spec is None:
        return {}
    path = Path(spec)
    if path.is_file():
        try:
            params = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(params, dict):
            raise UsageError(f"{path}: expected a JSON object of estimator parameters")
        unknown = sorted(set(params) - set(_estimator_defaults()))
        if unknown:
            raise UsageError(
                f"{path}: unknown estimator parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(_estimator_defaults()))}"
            )
        return {k: _tuples(v) for k, v in params.items()}
    if spec in preset_names():
        return {"preset": spec}
    raise UsageError(
        f"--config {spec!r} is neither a file nor a preset name "
        f"(presets: {', '.join(preset_names())})"
    )


def _estimator_params(args: argparse.Namespace, preset: str | None = None) -> dict:
    params: dict[str, Any] = {} if preset is None else {"preset": preset}
    params.update(_read_config(args.config))
    params.update({k[4:]: v for k, v in vars(args).items() if k.startswith("est_")})
    params.update(device=args.device, random_state=args.seed)
    params["verbose"] = 0 if args.quiet else 1
    return params


def _make_estimator(params: dict):
    from ..estimator import MSSTCNRegressor

    est = MSSTCNRegressor(**params)
    est._resolved()  # a bad preset name fails here, before any training
    return est
