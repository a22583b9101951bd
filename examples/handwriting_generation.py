"""Handwriting generation: MS-STCN on IAM-OnDB pen strokes.

Loads the IAM-OnDB lines in ``$SYSID_MSSTCN_DATA/iam_ondb`` (the shared
folder holds a small fixture; point it at the full database for real
training) as rows ``(pen, dx, dy)``, trains the paper's handwriting
configuration (preset ``iam_ondb``: a mixture of Gaussians for the offsets
and a Bernoulli pen bit; narrower here so that it runs on a CPU), reports
the validation ELBO and draws generated samples next to real lines.
``SYSID_MSSTCN_EXAMPLE_TINY=1`` trains for a few seconds only.
"""

from __future__ import annotations

import os
from pathlib import Path

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn._paths import default_data_dir
from sysid_msstcn.data import load_iam_ondb
from sysid_msstcn.metrics import elbo_report
from sysid_msstcn.plotting import plot_handwriting, save_figure

TINY = bool(os.environ.get("SYSID_MSSTCN_EXAMPLE_TINY"))
OUT = Path(os.environ.get("SYSID_MSSTCN_EXAMPLE_OUTPUT", "example_output"))
OUT = OUT / "handwriting_generation"

data = load_iam_ondb(default_data_dir() / "iam_ondb", missing="ignore")
train, valid = data["train"], data["valid"]
if TINY:
    train, valid = [s[:300] for s in train[:4]], [s[:300] for s in valid[:2]]
print(f"{len(train)} training lines, {len(valid)} validation lines")

est = MSSTCNRegressor(
    preset="iam_ondb",
    channels=(8,) * 5 if TINY else (32,) * 5,
    n_components=2 if TINY else 10,
    window=128 if TINY else 512,
    batch_size=4 if TINY else 16,
    max_iter=1 if TINY else 60,
    steps_per_epoch=2 if TINY else 50,
    random_state=0,
    verbose=0 if TINY else 1,
)
est.fit(None, train)

res = est.elbo(None, valid)
rep = elbo_report(res["elbo_raw"], res["kl_per_level"], res["n_steps"], n_dims=3)
print(
    f"validation ELBO {rep['elbo_per_step']:.3f} nats per step; KL per level "
    + ", ".join(f"{k:.1f}" for k in rep["kl_per_level"])
)

samples = est.sample(3, 150 if TINY else 700, random_state=0)
real = valid[:3]
fig = plot_handwriting(
    list(real) + list(samples),
    titles=[f"real line {i + 1}" for i in range(len(real))]
    + [f"generated {i + 1}" for i in range(len(samples))],
)
OUT.mkdir(parents=True, exist_ok=True)
save_figure(fig, OUT / "handwriting.png")
print(f"wrote {OUT / 'handwriting.png'}")
