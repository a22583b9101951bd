"""Prediction methods of the estimator: free runs, intervals, scores, ELBO.

Used by :class:`~sysid_msstcn.MSSTCNRegressor` through its private
``_PredictionMixin``; documented as the estimator's methods.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._estimator_params import is_int, is_real
from ._inputs import empty_columns
from ._utils import check_random_state_seed
from .data._validation import as_experiments, check_consistent_channels
from .objectives import elbo_terms
from .streaming import simulate as stream_simulate


class _PredictionMixin:
    """Simulation, scoring and sampling methods (a mixin of the estimator).

    Relies on the fitted attributes (``model_``, the scalers, ``device_``)
    and on the estimator's data checks and scaling methods.
    """

    def _predict_data(self, X, y_init):
        """Validated (inputs, lengths, warm-ups, is_list) for prediction."""
        check_is_fitted(self)
        name = type(self).__name__
        if isinstance(X, (list, tuple)) and len(X) == 0:
            raise ValueError("X is an empty list of experiments")
        if X is None:
            raise ValueError(
                "X is None: pass the inputs (or, for a model without inputs, an "
                "array of shape (n_timesteps, 0) giving the length; see also "
                "sample())"
            )
        if not self.n_features_in_ and empty_columns(X):
            items = X if isinstance(X, (list, tuple)) else [X]
            us = [None] * len(items)
            lengths = [int(np.asarray(a).shape[0]) for a in items]
            is_list = isinstance(X, (list, tuple))
        else:
            self._check_feature_names(X)
            data = self._experiments(X, None, fitting=False)
            check_consistent_channels(
                data, self.n_features_in_ or None, None, estimator_name=name
            )
            us, lengths, is_list = data.u, data.lengths, data.is_list
        inits: list[np.ndarray | None] = [None] * len(us)
        if y_init is not None:
            if isinstance(y_init, (list, tuple)) != is_list:
                raise ValueError("y_init must be a list exactly when X is a list")
            items = list(y_init) if is_list else [y_init]
            if len(items) != len(lengths):
                raise ValueError(
                    f"y_init has {len(items)} experiment(s) but X has "
                    f"{len(lengths)}; give one warm-up per experiment"
                )
            inits = []
            for i, (item, n) in enumerate(zip(items, lengths, strict=True)):
                yi = as_experiments(None, item, y_name="y_init").y[0]
                if yi.shape[1] != self.n_outputs_:
                    raise ValueError(
                        f"y_init has {yi.shape[1]} output channels but {name} was "
                        f"fitted with {self.n_outputs_}"
                    )
                if yi.shape[0] > n:
                    raise ValueError(
                        f"y_init of experiment {i} has {yi.shape[0]} samples, longer "
                        f"than the record ({n} samples)"
                    )
                inits.append(yi)
        return us, lengths, inits, is_list

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        if not np.all(np.abs(a) < 3e38):
            raise ValueError(
                "the (normalised) data are too large for float32 computation: "
                "values overflow; check the units and scaling of X and y"
            )
        return torch.as_tensor(a.T[None], dtype=torch.float32, device=self.device_)

    def _run(self, u, y0, n_steps, n_samples, latent, output, generator):
        """Simulate one experiment: returns (y, std) in model units."""
        model = self.model_
        model.eval()
        ut = None if u is None else self._tensor(u).expand(n_samples, -1, -1)
        yt = None
        if y0 is not None and y0.shape[0] > 0:
            yt = self._tensor(y0).expand(n_samples, -1, -1)
        ys, params = stream_simulate(
            model,
            n_steps,
            ut,
            yt,
            latent=latent,
            output=output,
            generator=generator,
            batch=n_samples,
        )
        std = model.likelihood.std(params)
        return (
            ys.permute(0, 2, 1).double().cpu().numpy(),
            std.permute(0, 2, 1).double().cpu().numpy(),
        )

    def _format(self, arrays: list[np.ndarray], is_list: bool):
        out = [a[..., 0] if self.y_1d_ else a for a in arrays]
        return out if is_list else out[0]

    def predict(self, X, y_init=None, return_std: bool = False):
        """Free-run simulation from the inputs (deterministic).

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y_init : array-like of shape (n_init, n_outputs), optional
            Measured outputs of the warm-up, returned unchanged at the head.
        return_std : bool, default=False
            Also return the one-step predictive standard deviation along the
            simulated trajectory (0 over the warm-up). For uncertainty that
            propagates through the simulation use :meth:`simulate` or
            :meth:`predict_interval`.

        Returns
        -------
        y_pred : ndarray of shape (n_timesteps,) or (n_timesteps, n_outputs)
        y_std : ndarray, same shape, only with ``return_std=True``
        """
        us, lengths, inits, is_list = self._predict_data(X, y_init)
        means, stds = [], []
        for u, n, y0 in zip(us, lengths, inits, strict=True):
            mean, sd = self._free_run(u, n, y0)
            means.append(mean)
            stds.append(sd)
        if return_std:
            return self._format(means, is_list), self._format(stds, is_list)
        return self._format(means, is_list)

    def _free_run(self, u, n: int, y0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic free run of one experiment in raw units: (mean, std)."""
        y0s = None if y0 is None or y0.shape[0] == 0 else self._scale_out(y0)
        with torch.no_grad():
            ys, sd = self._run(self._scale_in(u), y0s, n, 1, "prior_mean", "mean", None)
        mean = self._unscale_out(ys[0])
        n0 = 0 if y0s is None else y0.shape[0]
        if n0:
            mean[:n0] = y0
        sd = self._unscale_std(sd[0])
        sd[:n0] = 0.0
        return mean, sd

    def simulate(self, X, y_init=None, n_samples: int = 100, random_state=None):
        """Monte Carlo trajectories through the latent hierarchy.

        Latents are drawn from the prior and outputs from the predictive
        distribution at every step, then fed back.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y_init : array-like of shape (n_init, n_outputs), optional
        n_samples : int, default=100
        random_state : int, Generator or None

        Returns
        -------
        samples : ndarray of shape (n_samples, n_timesteps, n_outputs)
            Always three-dimensional (also for a 1-D ``y`` in ``fit``); a
            list of such arrays when ``X`` is a list. The warm-up rows hold
            ``y_init`` in every sample.
        """
        if not is_int(n_samples) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        us, lengths, inits, is_list = self._predict_data(X, y_init)
        gen = self._generator(random_state)
        out = []
        for u, n, y0 in zip(us, lengths, inits, strict=True):
            y0s = None if y0 is None else self._scale_out(y0)
            ys, _ = self._run(
                self._scale_in(u), y0s, n, int(n_samples), "prior", "sample", gen
            )
            ys = self._unscale_out(ys)
            if y0 is not None:
                ys[:, : y0.shape[0]] = y0
            out.append(ys)
        return out if is_list else out[0]

    def _generator(self, random_state) -> torch.Generator:
        seed = check_random_state_seed(random_state)
        gen = torch.Generator(device=self.device_)
        gen.manual_seed(seed)
        return gen

    def predict_interval(
        self,
        X,
        y_init=None,
        coverage: float = 0.9,
        n_samples: int = 200,
        random_state=None,
    ):
        """Central prediction interval from Monte Carlo simulation.

        Parameters
        ----------
        X, y_init : see :meth:`simulate`
        coverage : float, default=0.9
        n_samples : int, default=200
        random_state : int, Generator or None

        Returns
        -------
        lower, upper : ndarray of the shape of :meth:`predict`'s output
        """
        if not is_real(coverage) or not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        a = (1 - coverage) / 2
        q = self.predict_quantiles(
            X, y_init, alpha=(a, 1 - a), n_samples=n_samples, random_state=random_state
        )
        if isinstance(q, list):
            return [x[0] for x in q], [x[1] for x in q]
        return q[0], q[1]

    def predict_quantiles(
        self,
        X,
        y_init=None,
        alpha=(0.05, 0.5, 0.95),
        n_samples: int = 200,
        random_state=None,
    ):
        """Quantiles of the simulated output distribution.

        Parameters
        ----------
        X, y_init : see :meth:`simulate`
        alpha : float or sequence of float, default=(0.05, 0.5, 0.95)
        n_samples : int, default=200
        random_state : int, Generator or None

        Returns
        -------
        quantiles : ndarray of shape (n_alpha, n_timesteps[, n_outputs])
            The output axis is dropped when ``y`` was 1-D in ``fit``; a list
            when ``X`` is a list.
        """
        try:
            alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"alpha must be numbers in (0, 1), got {alpha!r}") from exc
        if alpha.size == 0 or alpha.ndim != 1:
            raise ValueError(f"alpha must be a non-empty 1-D sequence, got {alpha!r}")
        if not np.all((alpha > 0) & (alpha < 1)):
            raise ValueError(f"alpha values must be in (0, 1), got {alpha.tolist()}")
        sims = self.simulate(X, y_init, n_samples=n_samples, random_state=random_state)
        is_list = isinstance(sims, list)
        qs = [np.quantile(s, alpha, axis=0) for s in (sims if is_list else [sims])]
        return self._format(qs, is_list)

    def predict_ahead(self, X, y, steps: int = 1):
        """k-step-ahead prediction from measured outputs up to t - k.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y : array-like of shape (n_timesteps[, n_outputs]) or list
            Measured outputs.
        steps : int, default=1
            k. With k=1 one parallel pass gives the one-step-ahead
            prediction; larger k runs batched rollouts from every origin.

        Returns
        -------
        y_pred : ndarray like ``y``
            Element t predicts y_t from the inputs up to t and the measured
            outputs y_<=t-k, running the model free for the last k steps
            (latents at their prior means, means fed back). The first k
            elements have no measured output old enough and equal the free
            run from the start of the record (the :meth:`predict` of ``X``
            without ``y_init``).
        """
        data = self._eval_data(X, y)
        if not is_int(steps) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        out = []
        for u, yy in zip(data.u, data.y, strict=True):
            us, ys = self._scale_in(u), self._scale_out(yy)
            pred = self._ahead(us, ys, int(steps))
            out.append(self._unscale_out(pred))
        return self._format(out, data.is_list)

    @torch.no_grad()
    def _ahead(self, u, y, k: int) -> np.ndarray:
        model = self.model_.eval()
        T = y.shape[0]
        yt = self._tensor(y)
        ut = None if u is None else self._tensor(u)
        if k == 1:
            out = model(yt, ut, latent="prior_mean")
            return model.likelihood.mean(out.params)[0].T.double().cpu().numpy()
        D = self.network_config_.total_stride
        ctx = -(-(self.receptive_field_ + D) // D) * D
        pred = np.zeros_like(y)
        chunk = 256
        for o in range(0, T, chunk):  # origins o .. o+chunk-1 predict t = o+k-1
            origins = np.arange(o, min(o + chunk, T))
            start = (o // D) * D
            ws = max(0, start - ctx)
            stop = min(T, origins[-1] + k)
            n = stop - ws
            B = len(origins)
            teach = yt[..., ws:stop].expand(B, -1, -1)
            u_seg = None if ut is None else ut[..., ws:stop].expand(B, -1, -1)
            until = torch.as_tensor(origins - ws, device=self.device_)
            ys, _ = stream_simulate(
                model,
                n,
                u_seg,
                teach[..., : start - ws] if start > ws else None,
                latent="prior_mean",
                output="mean",
                batch=B,
                teacher=teach,
                teacher_until=until,
            )
            ys = ys.double().cpu().numpy()
            for b, org in enumerate(origins):
                t = org + k - 1
                if t < T:
                    pred[t] = ys[b, :, t - ws]
        head = min(k - 1, T)
        if head:  # no measured output is old enough: free run from the start
            ys, _ = self._run(
                None if u is None else u[:head],
                None,
                head,
                1,
                "prior_mean",
                "mean",
                None,
            )
            pred[:head] = ys[0]
        return pred

    def score(self, X, y, sample_weight=None):
        """R^2 of free-run simulation after a warm-up of ``n_init_`` samples.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y : array-like of shape (n_timesteps[, n_outputs]) or list
        sample_weight : None
            Not supported (must be None).

        Returns
        -------
        score : float
            Uniform average over output channels of R^2 computed on the
            samples after the warm-up of every experiment.
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported")
        data = self._eval_data(X, y)
        n0 = self.n_init_
        trues, preds = [], []
        for u, yy in zip(data.u, data.y, strict=True):
            if yy.shape[0] <= n0:
                raise ValueError(
                    f"a record of {yy.shape[0]} samples is not longer than the "
                    f"warm-up n_init_={n0}"
                )
            p, _ = self._free_run(u, yy.shape[0], yy[:n0])
            trues.append(yy[n0:])
            preds.append(p[n0:])
        yt, yp = np.concatenate(trues), np.concatenate(preds)
        ss_res = ((yt - yp) ** 2).sum(0)
        ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
        # sklearn's r2_score convention for a constant target: 1 if exact, else 0
        r2 = np.where(
            ss_tot > 0,
            1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
            np.where(ss_res == 0, 1.0, 0.0),
        )
        return float(np.mean(r2))

    def elbo(self, X, y=None, random_state=0) -> dict:
        """ELBO of records under the model (posterior latents), in nats.

        Parameters
        ----------
        X, y : see :meth:`fit`
        random_state : int, Generator or None, default=0
            Seed of the single reparameterised posterior draw (the ELBO is a
            one-sample Monte Carlo estimate of its expectation over q(z)).
            The default makes the result reproducible.

        Returns
        -------
        dict
            ``elbo`` (per sequence, array of n_experiments), ``elbo_per_step``,
            ``log_lik``, ``kl``, ``kl_per_level`` (n_experiments, n_levels; bottom
            level first), ``n_steps``. The likelihood is evaluated on the
            normalised outputs when ``normalize=True``; ``log_lik_raw`` and
            ``elbo_raw`` add the Jacobian of the scaling (raw units).
        """
        data = self._eval_data(X, y)
        gen = self._generator(random_state)
        model = self.model_.eval()
        param = next(model.parameters())
        rows = []
        with torch.no_grad():
            for u, yy in zip(data.u, data.y, strict=True):
                noise = [
                    torch.randn(
                        shape, generator=gen, device=param.device, dtype=param.dtype
                    )
                    for shape in model.latent_shapes(1, yy.shape[0])
                ]
                out = model(
                    self._tensor(self._scale_out(yy)),
                    None if u is None else self._tensor(self._scale_in(u)),
                    latent="posterior",
                    noise=noise if self.network_config_.use_latents else None,
                )
                rows.append(
                    {k: v.double().cpu().numpy()[0] for k, v in elbo_terms(out).items()}
                )
        res = {k: np.array([r[k] for r in rows]) for k in rows[0]}
        res["elbo_per_step"] = res["elbo"] / res["n_steps"]
        jac = np.sum(np.log(self.y_scaler_.scale_)) if self.normalize else 0.0
        res["log_lik_raw"] = res["log_lik"] - res["n_steps"] * jac
        res["elbo_raw"] = res["elbo"] - res["n_steps"] * jac
        return res

    def sample(self, n_sequences: int, length: int, X=None, random_state=None):
        """Generate sequences (unconditional, or driven by inputs X).

        Parameters
        ----------
        n_sequences : int
        length : int
        X : array-like of shape (length, n_inputs), optional
            Required when the model has inputs.
        random_state : int, Generator or None

        Returns
        -------
        samples : ndarray of shape (n_sequences, length, n_outputs)
        """
        check_is_fitted(self)
        for name, v in (("n_sequences", n_sequences), ("length", length)):
            if not is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        u = None
        if self.n_features_in_:
            if X is None:
                raise ValueError(
                    "this model has inputs: pass X of shape "
                    f"({length}, {self.n_features_in_})"
                )
            self._check_feature_names(X)
            data = self._experiments(X, None, fitting=False)
            check_consistent_channels(
                data, self.n_features_in_, None, estimator_name=type(self).__name__
            )
            if data.n_experiments != 1:
                raise ValueError("X must hold a single experiment in sample()")
            u = self._scale_in(data.u[0])
            if u.shape[0] != length:
                raise ValueError(f"X has {u.shape[0]} rows but length={length}")
        ys, _ = self._run(
            u,
            None,
            int(length),
            int(n_sequences),
            "prior",
            "sample",
            self._generator(random_state),
        )
        return self._unscale_out(ys)
