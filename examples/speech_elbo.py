"""Speech: ELBO of MS-STCN on framed raw waveforms (Blizzard stand-ins).

The Blizzard 2013 corpus cannot be redistributed; the shared data folder
holds public-domain read speech in ``$SYSID_MSSTCN_DATA/blizzard/standin``
instead. The audio is decoded once into a clip cache (0.5 s clips at
16 kHz), split by file, standardised and framed with frame width 25 (320
frames per clip). A narrow version of the paper's ``blizzard_fw25`` model
is trained, with four bottom-up blocks per level instead of five so that
its receptive field (181 frames) fits in a clip: the estimator needs
records longer than its receptive field. The test ELBO is reported per
sequence, per step and in bits per dimension, with the KL divergence of
every level (the paper's Tables 1 and 2). Finally one clip is generated and
written as a WAV file. ``SYSID_MSSTCN_EXAMPLE_TINY=1`` trains for a few
seconds only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn._paths import default_data_dir
from sysid_msstcn.data import load_blizzard, unframe_clips
from sysid_msstcn.metrics import elbo_report

TINY = bool(os.environ.get("SYSID_MSSTCN_EXAMPLE_TINY"))
OUT = Path(os.environ.get("SYSID_MSSTCN_EXAMPLE_OUTPUT", "example_output"))
OUT = OUT / "speech_elbo"
FRAME_WIDTH = 25

cache = OUT / "clip_cache"  # decoded once, reused by later runs
data = load_blizzard(
    default_data_dir() / "blizzard" / "standin", cache, frame_width=FRAME_WIDTH
)
n_train = 8 if TINY else len(data.train)
train = list(data.train.take(np.arange(n_train)))
test = list(data.test.take(np.arange(min(4 if TINY else 64, len(data.test)))))
print(f"{len(train)} training clips, {len(test)} test clips of shape {train[0].shape}")

est = MSSTCNRegressor(
    preset="blizzard_fw25",
    channels=(8,) * 5 if TINY else (32, 32, 48, 64, 64),
    latent_dims=(2,) * 5 if TINY else (8, 8, 12, 16, 16),
    dilations=((1, 1, 1, 1),) * 4 + ((1, 2, 4, 8),),
    n_components=2 if TINY else 10,
    batch_size=4 if TINY else 16,
    max_iter=1 if TINY else 40,
    steps_per_epoch=2 if TINY else 50,
    random_state=0,
    verbose=0 if TINY else 1,
)
est.fit(None, train)

res = est.elbo(None, test)
rep = elbo_report(res["elbo_raw"], res["kl_per_level"], res["n_steps"], FRAME_WIDTH)
print(
    f"test ELBO per sequence {rep['elbo_per_sequence']:.1f} nats "
    f"({rep['bits_per_dim']:.3f} bits per dimension)"
)
print(
    "KL per level:",
    ", ".join(f"KL{i + 1} {k:.1f}" for i, k in enumerate(rep["kl_per_level"])),
)

frames = est.sample(1, train[0].shape[0], random_state=0)
wave = unframe_clips(frames)[0]
wave = 0.9 * wave / max(float(np.max(np.abs(wave))), 1e-9)
OUT.mkdir(parents=True, exist_ok=True)
sf.write(OUT / "generated.wav", wave, 16000, subtype="PCM_16")
print(f"wrote {OUT / 'generated.wav'}")
