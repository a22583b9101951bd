"""Seed statistics of the nonlinear benchmark results.

A result file ``nonlinear_<name>_seed<N>.json`` is a rerun of
``nonlinear_<name>.json`` with ``--seed N``. This script groups every such
family found in the results folder and reports, per model and test record,
the test RMSE of each seed with its mean, sample standard deviation, median
and range, the validation score of each seed (``validation_rmse``, the
kept epoch's free-run RMSE on the validation tails) and the seed that the
validation score would choose, with its test RMSE. It also lists the
MS-STCN settings that differ between the runs of a family other than the
seed (for example a ``max_time`` cap), so that a family that is not a pure
seed study says so.

Ensemble runs (``run_nonlinear.py --ensemble K``, rows with an ``ensemble``
entry) get a section of their own: the ensemble's test RMSE beside its
members' (mean, best, worst, and how many members the ensemble beats), with
the coverage and CRPS of its pooled Monte Carlo band.

Usage::

    python benchmarks/seed_statistics.py                 # benchmarks/results
    python benchmarks/seed_statistics.py --results-dir DIR --output OUT.json

Writes ``OUT.json`` and a Markdown table next to it (``OUT.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
_SEED_FILE = re.compile(r"^nonlinear_(?P<stem>.+)_seed(?P<seed>\d+)\.json$")
# keys of a model's config that may differ within a family of seeds
_SEED_KEYS = {"random_state", "seed"}


def _families(folder: Path) -> dict[str, list[Path]]:
    """``stem -> [base file (if any), seed files...]`` for every seed family."""
    families: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("nonlinear_*_seed*.json")):
        match = _SEED_FILE.match(path.name)
        if match:
            families.setdefault(match["stem"], []).append(path)
    for stem, paths in families.items():
        base = folder / f"nonlinear_{stem}.json"
        if base.exists():
            paths.insert(0, base)
    return families


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _differences(configs: list[dict]) -> tuple[list[str], list[str]]:
    """Config keys (seed keys aside) that differ, and those some runs lack.

    A key that only some runs record comes from a parameter added to the
    code between the runs (it had its default before); it is listed apart.
    """
    flat = [_flatten(c) for c in configs]
    common = set.intersection(*(set(f) for f in flat))
    differ = sorted(
        k
        for k in common
        if k.split(".")[-1] not in _SEED_KEYS
        and len({json.dumps(f[k], sort_keys=True) for f in flat}) > 1
    )
    return differ, sorted(set().union(*flat) - common)


def _row(doc: dict, model: str, test_set: str, path: Path) -> dict:
    for row in doc["results"]:
        if row["model"] == model and row["test_set"] == test_set:
            return row
    raise ValueError(f"{path.name} has no result of {model} on {test_set}")


def family_statistics(paths: list[Path]) -> dict:
    """Seed statistics of one family of result files (see the module docstring).

    Parameters
    ----------
    paths : list of Path
        Result files of the same benchmark and settings, one per seed.

    Returns
    -------
    dict
        ``benchmark``, ``files``, ``seeds``, ``hardware`` (CPU or GPU of each
        run), ``config_differences`` (settings that differ between the
        runs), ``config_recorded_by_some_runs`` (parameters newer than some
        of the runs) and ``models``: model -> test record ->
        ``rmse``, ``validation_rmse`` (lists in seed order), ``mean``,
        ``std`` (sample standard deviation), ``median``, ``min``, ``max``,
        ``n`` and, where every run has a validation score,
        ``chosen_by_validation`` (seed and its test RMSE); likewise
        ``train_rmse`` (the free run of the training records) and
        ``chosen_by_training``.
    """
    docs = [json.loads(p.read_text()) for p in paths]
    order = sorted(range(len(docs)), key=lambda i: docs[i]["seed"])
    docs, paths = [docs[i] for i in order], [paths[i] for i in order]
    seeds = [d["seed"] for d in docs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two files of one family share a seed: {seeds}")
    benchmarks = {d["benchmark"] for d in docs}
    if len(benchmarks) != 1:
        raise ValueError(f"one family holds several benchmarks: {sorted(benchmarks)}")
    models: dict[str, dict] = {}
    names = [r["model"] for r in docs[0]["results"] if "MS-STCN" in r["model"]]
    for model in dict.fromkeys(names):
        per_set: dict[str, dict] = {}
        for row in (r for r in docs[0]["results"] if r["model"] == model):
            test_set = row["test_set"]
            rows = [
                _row(d, model, test_set, path)
                for d, path in zip(docs, paths, strict=True)
            ]
            rmse = [r["rmse"] for r in rows]
            valid = [r.get("validation_rmse") for r in rows]
            train = [r.get("train_rmse") for r in rows]
            entry = {
                "rmse": rmse,
                "validation_rmse": valid,
                "train_rmse": train,
                "mean": statistics.fmean(rmse),
                "std": statistics.stdev(rmse) if len(rmse) > 1 else None,
                "median": statistics.median(rmse),
                "min": min(rmse),
                "max": max(rmse),
                "n": len(rmse),
                "units": rows[0].get("units"),
            }
            if all(v is not None for v in valid):
                best = min(range(len(valid)), key=valid.__getitem__)
                entry["chosen_by_validation"] = {
                    "seed": seeds[best],
                    "rmse": rmse[best],
                }
            if all(v is not None for v in train):
                best = min(range(len(train)), key=train.__getitem__)
                entry["chosen_by_training"] = {"seed": seeds[best], "rmse": rmse[best]}
            per_set[test_set] = entry
        models[model] = per_set
    configs = [{k: v for k, v in d["config"].items() if "MS-STCN" in k} for d in docs]
    differ, partly = _differences(configs)
    return {
        "benchmark": benchmarks.pop(),
        "files": [p.name for p in paths],
        "seeds": seeds,
        "hardware": [
            d["hardware"].get("gpu") or d["hardware"].get("cpu") for d in docs
        ],
        "config_differences": differ,
        "config_recorded_by_some_runs": partly,
        "models": models,
    }


def ensemble_statistics(folder: Path) -> dict:
    """``file stem -> model -> test set -> entry`` for every ensemble row."""
    out: dict[str, dict] = {}
    for path in sorted(folder.glob("nonlinear_*.json")):
        doc = json.loads(path.read_text())
        for row in doc.get("results", []):
            if not row.get("ensemble") or row.get("rmse") is None:
                continue
            members = [v for v in row["member_rmse"] if v is not None]
            stem = path.stem.removeprefix("nonlinear_")
            out.setdefault(stem, {}).setdefault(row["model"], {})[row["test_set"]] = {
                # with keep_best, "ensemble" counts the kept members only
                "n_members": row.get("ensemble_of") or row["ensemble"],
                "kept": row["ensemble"] if row.get("ensemble_of") else None,
                "selection": row.get("selection", "best")
                if row.get("ensemble_of")
                else None,
                # the mean of every member of the same run (selection runs)
                "all_members_rmse": row.get("all_members_rmse"),
                "seeds": row.get("member_seeds"),
                "rmse": row["rmse"],
                "member_rmse": row["member_rmse"],
                "member_mean": statistics.fmean(members) if members else None,
                "member_best": min(members, default=None),
                "member_worst": max(members, default=None),
                "members_beaten": sum(row["rmse"] < v for v in members),
                "members_diverged": len(row["member_rmse"]) - len(members),
                "coverage_90": row.get("coverage_90"),
                "crps": row.get("crps"),
                "units": row.get("units"),
                **_validation_choice(row),
            }
    return out


def _validation_choice(row: dict) -> dict:
    """The members two test-free scores pick, and how well they rank them all.

    ``chosen_by_validation``: seed and test RMSE of the member with the
    lowest ``member_validation_rmse``; ``validation_rho``: Spearman's rank
    correlation of the members' validation and test RMSE (None with fewer
    than three members scored on both, or when one of the two is constant).
    ``chosen_by_training`` and ``training_rho``: the same for
    ``member_train_rmse``, the free run of the training records (rows of
    older runs lack it: None).
    """
    out = {}
    for name, key in (
        ("validation", "member_validation_rmse"),
        ("training", "member_train_rmse"),
    ):
        pick, rho = _choice(row.get(key) or [], row)
        out[f"chosen_by_{name}"], out[f"{name}_rho"] = pick, rho
    return out


def _choice(scores: list, row: dict) -> tuple[dict | None, float | None]:
    scored = [
        (v, t, s)
        for v, t, s in zip(
            scores,
            row["member_rmse"],
            row.get("member_seeds") or range(len(row["member_rmse"])),
            strict=False,
        )
        if v is not None and t is not None
    ]
    if not scored:
        return None, None
    valid, test, seeds = zip(*scored, strict=True)
    k = min(range(len(valid)), key=valid.__getitem__)
    rho = None
    if len(scored) >= 3:
        rho = float(spearmanr(valid, test).statistic)
        rho = rho if math.isfinite(rho) else None  # tied constant scores
    return {"seed": seeds[k], "rmse": test[k]}, rho


def _ensemble_markdown(ensembles: dict) -> list[str]:
    lines = [
        "",
        "## Ensembles",
        "",
        "Runs with `--ensemble K`: the test RMSE of the mean of the members'",
        "free runs beside the members' own, and the coverage of the pooled",
        '90 % Monte Carlo band. "validation picks": the test RMSE of the',
        "member with the lowest validation score (`member_validation_rmse`),",
        "with its seed; rho: Spearman's rank correlation of the members'",
        'validation and test RMSE. "training picks" and its rho: the same for',
        "the free run of the training records (`member_train_rmse`; runs",
        "before the tenth session did not record it). A run with",
        "`--keep-best K` predicts with the K members of the best training",
        'free runs ("members": "K best of N"); one with `--selection greedy`',
        "with the members added one at a time while the mean of their",
        'training free runs improves ("K greedy of N"). Such runs also give',
        'the test RMSE of the mean of all N members ("all N: ...").',
        "",
        "| run | model | test | members | ensemble RMSE | members: mean (best-worst) |"
        " beats | validation picks | rho | training picks | rho |"
        " 90 % coverage | CRPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stem, models in ensembles.items():
        for model, per_set in models.items():
            for test_set, e in per_set.items():
                cov, crps = e["coverage_90"], e["crps"]
                picks = [
                    _pick(e.get(f"chosen_by_{n}"), e.get(f"{n}_rho"))
                    for n in ("validation", "training")
                ]
                members = (
                    f"{e['member_mean']:.4g} ({e['member_best']:.4g}-"
                    f"{e['member_worst']:.4g})"
                    if e["member_mean"] is not None
                    else "all diverged"
                )
                size = e["n_members"]
                ens_rmse = f"{e['rmse']:.4g}"
                if e.get("kept"):
                    size = f"{e['kept']} {e.get('selection') or 'best'} of {size}"
                if e.get("all_members_rmse") is not None:
                    ens_rmse += f" (all {e['n_members']}: {e['all_members_rmse']:.4g})"
                lines.append(
                    f"| `{stem}` | {model} | {test_set} | {size} | "
                    f"{ens_rmse} | {members} | "
                    f"{e['members_beaten']} of {e['n_members']} | "
                    + " | ".join(picks)
                    + " | "
                    + ("–" if cov is None else f"{cov:.2f}")
                    + " | "
                    + ("–" if crps is None else f"{crps:.4g}")
                    + " |"
                )
    return lines


def _pick(pick: dict | None, rho: float | None) -> str:
    """Two table cells: the picked member's test RMSE and seed, and rho."""
    cell = "–" if pick is None else f"{pick['rmse']:.4g} (seed {pick['seed']})"
    return cell + " | " + ("–" if rho is None else f"{rho:.2f}")


def _markdown(result: dict) -> str:
    lines = [
        "# Seed statistics",
        "",
        "Written by `benchmarks/seed_statistics.py` from the families of",
        "`nonlinear_<name>_seed<N>.json` result files (with their seed-0 file",
        "`nonlinear_<name>.json`). Test RMSE in the benchmark's units; s.d. is",
        "the sample standard deviation; the last columns are the seeds that the",
        "validation score and the free run of the training records would pick,",
        "with their test RMSE.",
        "",
        "| family | model | test | seeds | RMSE per seed | mean | s.d. | median |"
        " chosen by validation | chosen by training free run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stem, fam in result["families"].items():
        for model, per_set in fam["models"].items():
            for test_set, e in per_set.items():
                chosen = e.get("chosen_by_validation")
                by_train = e.get("chosen_by_training")
                lines.append(
                    f"| `{stem}` | {model} | {test_set} | {e['n']} | "
                    + ", ".join(f"{v:.4g}" for v in e["rmse"])
                    + f" | {e['mean']:.4g} | "
                    + (f"{e['std']:.3g}" if e["std"] is not None else "–")
                    + f" | {e['median']:.4g} | "
                    + " | ".join(
                        "–" if c is None else f"seed {c['seed']}: {c['rmse']:.4g}"
                        for c in (chosen, by_train)
                    )
                    + " |"
                )
    notes = []
    for stem, fam in result["families"].items():
        parts = []
        if fam["config_differences"]:
            parts.append(
                "settings that differ between its runs: "
                + ", ".join(f"`{k}`" for k in fam["config_differences"])
            )
        if fam["config_recorded_by_some_runs"]:
            parts.append(
                "recorded by some of its runs only: "
                + ", ".join(f"`{k}`" for k in fam["config_recorded_by_some_runs"])
            )
        if parts:
            notes.append(f"- `{stem}`: " + "; ".join(parts))
    if notes:
        lines += ["", *notes]
    if result.get("ensembles"):
        lines += _ensemble_markdown(result["ensembles"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results-dir", type=Path, default=ROOT / "benchmarks" / "results"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    output = args.output or args.results_dir / "seed_statistics.json"
    families = _families(args.results_dir)
    ensembles = ensemble_statistics(args.results_dir)
    if not families and not ensembles:
        raise SystemExit(
            f"no nonlinear_*_seed<N>.json files or ensemble runs in {args.results_dir}"
        )
    result = {
        "benchmark": "seed_statistics",
        "description": "test RMSE over seeds of the nonlinear benchmark runs, "
        "and of ensembles against their members",
        "families": {
            stem: family_statistics(paths) for stem, paths in families.items()
        },
        "ensembles": ensembles,
    }
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(_markdown(result))
    print(f"wrote {output} and {output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
