"""Names shared by the command-line modules: models, errors, messages."""

from __future__ import annotations

import sys

PROG = "sysid-msstcn"
_NOT_FLAGS = {"preset", "device", "random_state", "verbose", "warm_start"}
_MODELS = {
    "arx": "ARX",
    "narx": "polynomial NARX",
    "mlp": "MLP NARX",
    "msstcn": "MS-STCN",
    "msstcn+arx": "MS-STCN + ARX",  # LinearResidualRegressor on the ARX
    "greybox": "grey-box",  # GreyBoxRegressor (tanks, emps, wh)
    "msstcn+greybox": "MS-STCN + grey-box",  # ... on the grey-box residual
}
_DEFAULT_MODELS = ("arx", "narx", "mlp", "msstcn")
# the models with a Monte Carlo band
_NETWORKS = ("msstcn", "msstcn+arx", "msstcn+greybox")
_SPEECH_PRESETS = {200: "blizzard_fw200", 25: "blizzard_fw25", 2: "blizzard_fw2"}


class UsageError(ValueError):
    """A bad command-line argument (reported without a traceback)."""


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)
