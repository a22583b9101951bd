"""Command-line entry point ``python -m sysid_msstcn.distributed``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Subset

from ..config import NetworkConfig, TrainConfig, config_from_dict
from ._common import logger
from ._data import _ArraySequences, synthetic_dataset
from ._process import is_main_process
from ._run import fit_distributed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sysid_msstcn.distributed",
        description="Train an MS-STCN preset (data-parallel under torchrun).",
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--network", default="{}", help="JSON NetworkConfig overrides")
    p.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic', an .npz/.npy of sequences (N, T, C) ('y', optional "
        "'u'), or a Blizzard audio folder (needs --cache-dir)",
    )
    p.add_argument("--cache-dir", help="clip cache folder for speech audio")
    p.add_argument("--length", type=int, default=1024, help="synthetic length")
    p.add_argument("--n-sequences", type=int, default=256, help="synthetic count")
    p.add_argument("--valid-fraction", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="decoupled weight decay (AdamW); 0: plain Adam",
    )
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-noise", action="store_true")
    p.add_argument("--float64", action="store_true")
    p.add_argument("--log-every", type=int, default=50)
    return p


def _datasets(args: argparse.Namespace, config: NetworkConfig) -> tuple:
    if args.data == "synthetic":
        items = synthetic_dataset(config, args.n_sequences, args.length, args.seed)
    elif args.data.endswith((".npz", ".npy")):
        arrays = np.load(args.data, mmap_mode="r")
        if args.data.endswith(".npy"):
            items = _ArraySequences(arrays)
        else:
            items = _ArraySequences(arrays["y"], arrays["u"] if "u" in arrays else None)
    else:
        from ..data.speech import load_blizzard
        from ..loaders import ClipDataset

        if args.cache_dir is None:
            raise SystemExit("--cache-dir is needed with an audio folder")
        data = load_blizzard(args.data, args.cache_dir, frame_width=config.n_outputs)
        return ClipDataset(data.train), ClipDataset(data.valid)
    n = len(items)
    n_valid = int(round(args.valid_fraction * n))
    if n_valid == 0:
        return items, None
    return Subset(items, range(n - n_valid)), Subset(items, range(n - n_valid, n))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring).

    Parameters
    ----------
    argv : sequence of str, optional

    Returns
    -------
    int
        Exit status.
    """
    from ..presets import preset_network_kwargs

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kw = preset_network_kwargs(args.preset)
    kw.update(json.loads(args.network))
    config = config_from_dict(kw)
    train = TrainConfig(
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        mixed_precision=args.mixed_precision,
    )
    train_set, valid_set = _datasets(args, config)
    result = fit_distributed(
        config,
        train,
        train_set,
        valid_set,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        accumulate=args.accumulate,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        device=args.device,
        compile=args.compile,
        num_workers=args.num_workers,
        seed=args.seed,
        sample_noise=args.sample_noise,
        dtype=torch.float64 if args.float64 else torch.float32,
        log_every=args.log_every,
    )
    if is_main_process() and result.checkpoint is not None:
        logger.info("final checkpoint: %s", result.checkpoint)
    if dist.is_initialized():
        # every rank has finished its collectives before any tears the group
        # down: a rank whose peer closed first could abort in Gloo's
        # destructor ("terminate called without an active exception", seen
        # once in a CI dry run)
        dist.barrier()
        dist.destroy_process_group()
    return 0
