"""Constants and the logger shared by the scale-out training modules."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger("sysid_msstcn.distributed")

CHECKPOINT_FORMAT = "sysid_msstcn.distributed/1"
_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")
_TERMS = ("loss", "elbo", "log_lik", "kl")
_N_STATS = 6  # the terms, then sequences and skipped steps
