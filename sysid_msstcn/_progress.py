"""Epoch summaries and the optional progress bar of ``MSSTCNRegressor.fit``."""

from __future__ import annotations

import numpy as np

__all__ = ["epoch_row", "progress"]


def epoch_row(rows: list[dict], epoch: int, n_skipped: int, seconds: float) -> dict:
    """Average the step rows of one epoch into its history row.

    Parameters
    ----------
    rows : list of dict
        The trainer's step rows; skipped (non-finite) steps are left out
        unless every step was skipped.
    epoch : int
    n_skipped : int
        Steps skipped so far (the trainer's count).
    seconds : float
        Wall-clock time since the fit started.

    Returns
    -------
    dict
    """
    good = [r for r in rows if not r["skipped"]] or rows
    n_steps = np.mean([r["n_steps"] for r in good])
    elbo = float(np.mean([r["elbo"] for r in good]))
    extra = {}
    if "rollout" in good[0]:  # simulation-error term, per window
        extra["rollout"] = float(np.mean([r["rollout"] for r in good]))
    return {
        "epoch": epoch,
        "loss": float(np.mean([r["loss"] for r in good])),
        "elbo": elbo,
        "elbo_per_step": elbo / max(n_steps, 1.0),
        "log_lik": float(np.mean([r["log_lik"] for r in good])),
        "kl": float(np.mean([r["kl"] for r in good])),
        "kl_per_level": np.mean([r["kl_per_level"] for r in good], axis=0).tolist()
        if good[0]["kl_per_level"]
        else [],
        "lr": rows[-1]["lr"],
        "threshold": rows[-1]["threshold"],
        "n_skipped": n_skipped,
        "seconds": seconds,
        **extra,
    }


class _NoBar:
    def update(self, row):
        pass

    def close(self):
        pass


class _Bar:
    def __init__(self, total):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="MS-STCN", unit="epoch")

    def update(self, row):
        post = {
            "loss": f"{row['loss']:.4g}",
            "elbo/step": f"{row['elbo_per_step']:.4g}",
        }
        if "val_elbo_per_step" in row:
            post["val elbo/step"] = f"{row['val_elbo_per_step']:.4g}"
        if "val_sim_rmse" in row:
            post["val sim rmse"] = f"{row['val_sim_rmse']:.4g}"
        if "record_sim_rmse" in row:
            post["record sim rmse"] = f"{row['record_sim_rmse']:.4g}"
        self.bar.set_postfix(post)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def progress(total: int, verbose) -> _Bar | _NoBar:
    """A tqdm bar over ``total`` epochs when ``verbose``, else a silent one."""
    return _Bar(total) if verbose else _NoBar()
