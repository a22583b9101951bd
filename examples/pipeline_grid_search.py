"""MS-STCN in a scikit-learn Pipeline, tuned with GridSearchCV.

The inputs are standardised by a ``StandardScaler`` step and the grid
searches the learning rate and the latent size. The folds come from
``TimeSeriesSplit``: every validation fold is a contiguous block after its
training block (never shuffled), and ``score`` simulates it free-run after a
warm-up of ``n_init_`` measured samples (R^2). The data are the simulated
Wiener-Hammerstein system of the demo, so no download is needed.
``SYSID_MSSTCN_EXAMPLE_TINY=1`` shrinks the grid and the training.
"""

from __future__ import annotations

import os

from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.data import io_arrays, make_wiener_hammerstein
from sysid_msstcn.metrics import fit_index

TINY = bool(os.environ.get("SYSID_MSSTCN_EXAMPLE_TINY"))

train, test = make_wiener_hammerstein(800 if TINY else 3000, random_state=0)
u, y = io_arrays(train[0])
y = y[:, 0]

pipe = Pipeline(
    [
        ("scale", StandardScaler()),
        (
            "msstcn",
            MSSTCNRegressor(
                preset="sysid_small",
                max_iter=1 if TINY else 15,
                steps_per_epoch=2 if TINY else 25,
                n_init=64,
                random_state=0,
            ),
        ),
    ]
)
grid = {
    "msstcn__learning_rate": [3e-3] if TINY else [1e-3, 3e-3],
    "msstcn__latent_dims": [(1, 1, 1), (2, 2, 2)],
}
search = GridSearchCV(pipe, grid, cv=TimeSeriesSplit(n_splits=2 if TINY else 3))
search.fit(u, y)

for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True
):
    print(f"R2 {score:7.3f}  {params}")
print("best:", search.best_params_)

u_test, y_test = io_arrays(test[0])
n = test[0].attrs["n_init"]
# Pipeline.predict passes y_init on to the final step (the estimator).
y_sim = search.best_estimator_.predict(u_test, y_init=y_test[:n, 0])
fit = fit_index(y_test[:, 0], y_sim, n_init=n)
print(f"test fit of the refitted best pipeline: {fit:.1f} %")
