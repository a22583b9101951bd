"""Quick start: MS-STCN on the Cascaded Tanks benchmark.

Fits the ``sysid_small`` preset on the official training record, simulates
the test record free-run after its 50-sample warm-up (the benchmark
protocol), draws a 90% Monte Carlo interval, prints the RMSE next to an ARX
baseline and saves the model and two figures.

The data are read from ``$SYSID_MSSTCN_DATA/nonlinear_benchmarks`` (default
``../shared/data``). ``SYSID_MSSTCN_EXAMPLE_TINY=1`` trains for a few
seconds only.
"""

from __future__ import annotations

import os
from pathlib import Path

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.baselines import ARXRegressor
from sysid_msstcn.data import io_arrays, load_benchmark
from sysid_msstcn.metrics import fit_index, interval_coverage, rmse
from sysid_msstcn.plotting import plot_learning_curves, plot_simulation, save_figure

TINY = bool(os.environ.get("SYSID_MSSTCN_EXAMPLE_TINY"))
OUT = Path(os.environ.get("SYSID_MSSTCN_EXAMPLE_OUTPUT", "example_output"))
OUT = OUT / "quickstart_cascaded_tanks"

train, test = load_benchmark("cascaded_tanks")
u, y = io_arrays(train[0])
u_test, y_test = io_arrays(test[0])
n_init = test[0].attrs["n_init"]
if TINY:  # a shorter test record: simulation runs step by step
    u_test, y_test = u_test[:300], y_test[:300]

est = MSSTCNRegressor(
    preset="sysid_small",
    max_iter=2 if TINY else 40,  # a small budget: a few minutes on a CPU
    steps_per_epoch=2 if TINY else 25,
    learning_rate=3e-3,
    random_state=0,
    verbose=0 if TINY else 1,
)
est.fit(u, y)

y_sim = est.predict(u_test, y_init=y_test[:n_init])
lower, upper = est.predict_interval(
    u_test,
    y_init=y_test[:n_init],
    coverage=0.9,
    n_samples=20 if TINY else 200,
    random_state=0,
)
arx = ARXRegressor(na=4, nb=4).fit(u, y)
y_arx = arx.predict(u_test, y_init=y_test[:n_init])

avg = {"n_init": n_init, "multioutput": "uniform_average"}  # one output: a float
for name, pred in (("MS-STCN", y_sim), ("ARX", y_arx)):
    print(
        f"{name:8s} test RMSE {rmse(y_test, pred, **avg):.4f} V, "
        f"fit {fit_index(y_test, pred, **avg):.1f} %"
    )
cover = interval_coverage(y_test, lower, upper, **avg)
print(f"90% interval of MS-STCN covers {100 * cover:.0f} % of the test samples")

OUT.mkdir(parents=True, exist_ok=True)
est.save(OUT / "cascaded_tanks.safetensors")
fig = plot_simulation(
    y_test,
    {"MS-STCN": y_sim, "ARX": y_arx},
    lower=lower,
    upper=upper,
    n_init=n_init,
    sampling_time=test[0].attrs["sampling_time"],
    title="Cascaded Tanks: test record",
)
save_figure(fig, OUT / "simulation.png")
save_figure(plot_learning_curves(est.history_), OUT / "learning_curves.png")
print(f"wrote {OUT}")
