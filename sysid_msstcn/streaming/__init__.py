"""Cached streaming inference: free-run simulation linear in the record length.

Every level updates at its own rate: a level of cumulative stride D runs its
bottom-up blocks when the level below has finished a block, and its top-down
blocks (mixer, latent from the prior, which only sees the delayed features,
and decoder) at the first fine step of each of its blocks; the upsampled
output serves the next D fine steps. A causal convolution keeps, for each
step, the contributions of past inputs to the steps that will read them
(fast Wavenet queues), so no history is recomputed.

A time step of a system-identification model is a few dozen products of
tiny matrices, so the fixed cost of each torch call dominates, and the
simulator is built to make few of them (44 per step for ``sysid_small``):

* The weights are read once and each level's chain of blocks is compiled
  into fixed lists of torch calls on preallocated buffers and views. A
  gated block costs one ``tanh_`` and one ``addcmul_``, both in place
  (sigmoid(b) = (1 + tanh(b / 2)) / 2, the halves folded into the
  weights), and one or two ``addmm``.
* A causal convolution keeps, for each future step, the sum of its past
  taps (fast Wavenet queues); the entry of a step is the bias of the
  ``addmm`` that computes its pre-activation, which also starts the entry
  of a later step.
* Between two gates a chain is affine, so consecutive weights can be
  composed (in float64) when the simulator is made: a block's output
  projection then becomes part of the product that computes the next
  block's pre-activation, and in a top-down chain (1x1 convolutions) the
  ``addmm`` after each gate updates the partial pre-activations of all
  later gates and the chain's output (the output head, and the prior mean
  for deterministic latents). This saves calls but costs multiply-adds, so
  each chain is fused only when a rough cost model (calls against
  multiply-adds times the batch) says it is faster: narrow models and
  small batches; wide models and large batches keep one product per
  block's pre-activation and one per output.
* Fed-back outputs, the features d of each level and the exogenous input
  are kept in per-step rows, read as matrices by the first block of each
  level and by the top-down entries. The output of the level above enters
  a top-down entry as a bias, already multiplied by the weights that read
  it; the terms of the known input u are computed for a chunk of steps at
  a time.

All of this is exact algebra (sums are only reassociated): the tests compare
every step with the parallel forward pass.

A teacher-forced warm-up fills the caches with one parallel pass of the
bottom-up network over the aligned part of ``y_init`` and replays at most
``total_stride - 1`` steps one by one.

Shape legend: ``B`` batch (Monte Carlo samples x experiments), ``C``
channels, ``T`` steps, ``W`` width of a row of a buffer.
"""

from __future__ import annotations

from ._simulate import simulate
from ._simulator import StreamingSimulator

__all__ = ["StreamingSimulator", "simulate"]
