"""``frontier``: a Pareto-front search that uses what a generic sampler cannot see.

A generic sampler (Optuna's TPE, GP, NSGA-II) searches a box of integers. knobscope knows more:

* **The grid is finite and ordered.** Every feasible configuration is a candidate; the search
  scores each one and measures the best unmeasured one, so it never asks for a configuration it
  has measured or one a constraint forbids.
* **Objectives are often monotone in a knob** (more blocks cost more and are more accurate).
  Declared in the option ``monotone`` (per objective, per knob: ``increasing``, ``decreasing``
  or ``none`` for "does not depend on it"), this turns measured configurations into bounds on
  unmeasured ones: ``f(c) >= f(a)`` when ``a`` is below ``c`` on every declared knob and equal on
  the undeclared ones. A configuration whose best possible values are dominated by a measured
  one cannot improve the front and is never measured; when none is left the front is
  *decided* and the search stops, budget or not. Bounds use a measurement's confidence interval
  where the store has one. The declarations are checked against every measurement (pairs that
  differ in one knob only); a declaration the data contradict is dropped with a warning.
* **Earlier runs of the same space** (option ``prior``: run directories, any workload): the
  Pareto-optimal configurations among those they measured, greatest hypervolume contribution
  first (values within 1e-7 of their range alike, a tie broken by the seed), are the first
  design, ``knobs + 3`` of them by default (two more than a design without a prior: they cost
  nothing to choose, and the later ones of a front reach the expensive end, which the model
  underrates until something there is measured). (Their values as the surrogate's mean, scaled
  to the new run by least squares, did worse on ``benchmarks/search_efficiency.py``'s table than
  starting from their front alone; the front of their values smoothed first by an additive model
  (of the knobs, or of the knobs and their pairs) was better on some tables and worse on others.
  So they only choose where to start.)
* **Bounded metrics** (a cosine in [-1, 1], an accuracy in [0, 1]: the workload's
  ``Metric(range=...)``, which the runner puts on the goal's objectives): modelled on the logit of
  their position in the range, so a prediction never leaves it and a cosine's differences close
  to 1 are stretched rather than squeezed against the bound. On
  ``benchmarks/search_efficiency.py``'s first table this took the median search to 99% of the
  hypervolume from 20 to 19 evaluations (100 seeds; with ``monotone`` from 19.5 to 18, and no
  search left short of 99% in 40 where three were), the searches from a prior run from 19 to 16
  (with ``monotone`` 15); on the second, with ``monotone``, from 29 to 21.5 (30 seeds).

The surrogate is a Gaussian process per objective (Matern 5/2, one length scale per knob,
hyperparameters by maximum marginal likelihood) on value positions scaled to [0, 1]
(categorical knobs one-hot; a knob declared ``none`` for an objective is not an input of its
model), fitted to a Yeo-Johnson transform of the results (option ``warp``), which evens out
skewed results such as a cosine crowding towards 1. The next configuration maximises the expected hypervolume
improvement over the measured front: each objective's posterior at a candidate is ``samples``
equally likely quantiles (clipped to the monotone bounds), and with two objectives the
expectation over all their pairs is exact (:func:`expected_hypervolume_improvement`); objectives
are scaled by their range over the measured values and the open configurations' posterior
medians, and the reference point is ``reference_margin`` of that range beyond its worst end (so
an end of the front nothing measured reaches yet still counts). Without a prior the first
design is the anchors the declarations imply (the configuration best on each fully declared
objective) and a Latin hypercube, ``knobs + 1`` configurations in all, in a seeded random order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy.linalg import cho_solve, solve_triangular
from scipy.linalg.lapack import dpotrf as potrf, dtrtri as trtri
from scipy.special import expit

from knobscope.analysis.pareto import pareto_mask
from knobscope.errors import SpecError
from knobscope.goals import Goal, column_for
from knobscope.search import AdaptiveStrategy, Observation, _AdaptiveOptions, _ordinal, proposal_seed
from knobscope.space import Config, Space

__all__ = ["Frontier", "MonotoneModel", "GaussianProcess", "hypervolume_improvement", "expected_hypervolume_improvement",
           "range_logit"]

log = logging.getLogger("knobscope")
Direction = Literal["increasing", "decreasing", "none"]
SIGN = {"increasing": 1, "decreasing": -1, "none": 0}


class _FrontierOptions(_AdaptiveOptions):
    n_trials: int = Field(40, ge=1, description="configurations to measure at most (results already in the run count)")
    initial_size: int | None = Field(None, ge=1, description="first design (default: knobs + 1; from a prior: knobs + 3)")
    monotone: dict[str, dict[str, Direction]] = Field(
        default_factory=dict,
        description="per objective, per knob: increasing, decreasing or none (does not depend on it)",
    )
    prior: list[str] = Field(default_factory=list, description="run directories of earlier runs of the same space")
    samples: int = Field(32, ge=8, description="posterior quantiles per objective and candidate for the expected improvement")
    reference_margin: float = Field(
        0.01, ge=0, description="reference point of the hypervolume: this fraction of each range beyond the worst "
        "value measured or predicted (the open configurations' posterior medians)"
    )
    warp: bool = Field(True, description="model each objective through a fitted Yeo-Johnson transform")
    max_grid: int = Field(200_000, ge=1, description="largest grid scored exhaustively")


# --------------------------------------------------------------------------- surrogate
class GaussianProcess:
    """A zero-mean GP with a Matern 5/2 ARD kernel on standardised targets; hyperparameters
    (log length scales, log signal and noise variances) by L-BFGS on the marginal likelihood."""

    BOUNDS_LS = (math.log(0.03), math.log(30.0))
    BOUNDS_SF = (math.log(0.05), math.log(20.0))
    BOUNDS_SN = (math.log(1e-6), math.log(0.5))

    def __init__(self, theta: np.ndarray | None = None) -> None:
        self.theta = theta

    @staticmethod
    def _kernel(a: np.ndarray, b: np.ndarray, ls: np.ndarray, sf2: float) -> np.ndarray:
        """The Matern 5/2 kernel between the rows of ``a`` and ``b``; squared distances as
        |a|^2 + |b|^2 - 2 a.b (one matrix product: the broadcast difference cost more than the
        rest of a proposal's posterior)."""
        a, b = a / ls, b / ls
        r2 = np.maximum(np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2 * a @ b.T, 0)
        s5r = np.sqrt(5.0 * r2)
        return sf2 * (1 + s5r + s5r**2 / 3.0) * np.exp(-s5r)

    def _nll(self, theta: np.ndarray, sq: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log marginal likelihood and its gradient; ``sq`` (n * n, d): the inputs'
        squared differences per dimension, flattened (computed once per fit).

        Written for small n (tens of points), where call overheads outweigh the arithmetic: the
        scaled distances and the length-scale gradient are matrix-vector products with ``sq``,
        and the inverse comes from LAPACK's triangular inverse of the Cholesky factor."""
        d = sq.shape[1]
        n = len(y)
        sf2, sn2 = math.exp(theta[d]), math.exp(theta[d + 1])
        inv_ls2 = np.exp(-2 * theta[:d])
        s5r = np.sqrt(5.0 * (sq @ inv_ls2))
        e = np.exp(-s5r)
        k = (sf2 * (1 + s5r + s5r**2 / 3.0) * e).reshape(n, n)
        chol, info = potrf(k + (sn2 + 1e-9) * np.eye(n), lower=1, clean=1)
        if info != 0:
            return 1e10, np.zeros_like(theta)
        chol_inv, info = trtri(chol, lower=1)
        if info != 0:
            return 1e10, np.zeros_like(theta)
        inv = chol_inv.T @ chol_inv
        alpha = inv @ y
        nll = 0.5 * y @ alpha + np.log(np.diag(chol)).sum() + 0.5 * n * math.log(2 * math.pi)
        w = np.outer(alpha, alpha) - inv  # d nll / d K = -w / 2
        common = sf2 * 5.0 / 3.0 * (1 + s5r) * e  # d K / d log ls_j = common * scaled diff2_j
        grad = np.empty_like(theta)
        grad[:d] = -0.5 * inv_ls2 * ((w.reshape(-1) * common) @ sq)
        grad[d] = -0.5 * np.sum(w * k)
        grad[d + 1] = -0.5 * sn2 * np.trace(w)
        # A weak log-normal prior on the length scales keeps a handful of points from
        # collapsing them to the bounds.
        prior = 0.5 * np.sum((theta[:d] - math.log(0.5)) ** 2) / 1.5**2
        grad[:d] += (theta[:d] - math.log(0.5)) / 1.5**2
        return float(nll + prior), grad

    def fit(self, x: np.ndarray, y: np.ndarray, *, warp: bool = False,
            bounds: tuple[float, float] | None = None) -> GaussianProcess:  # fmt: skip
        """Fit to ``y`` at ``x``; ``bounds``: the values ``y`` can take (both ends finite): model
        the logit of its position in that range, so draws stay inside it and differences close to
        an end (a cosine near 1) are stretched; ``warp``: then model the Yeo-Johnson transform of
        the standardised targets (its lambda by maximum likelihood), which evens out skew."""
        from scipy.optimize import minimize

        self.bounds = bounds
        if bounds is not None:
            y = range_logit(y, bounds)
        self.x = x
        self.mean, self.scale = float(y.mean()), float(y.std()) or 1.0
        self.y = (y - self.mean) / self.scale
        d = x.shape[1]
        warm = self.theta is not None and len(self.theta) == d + 2
        # Hyperparameters (the warp's lambda too) settle as data come in: refit every time while
        # there are 20 points or fewer, then every fifth, from the last fit (at 10 and 20 points
        # from the default as well; restarting from it at every tenth found fronts no faster on
        # benchmarks/search_efficiency.py's three tables and took 4-7% longer per proposal).
        # Refitting every time only up to 12 saved another 7% and found those fronts as fast, but
        # from a first design at the cheap end it never reached the expensive one
        # (tests/test_frontier.py); only up to 10 was slower from a prior run's front (a clustered
        # first design): 19-25 evaluations instead of 17-19 on two tables.
        # (Keeping them also where the new points lie only at inputs the model already had, such as
        # SketchWalk's speedup bound at another sketch setting of a measured cell, took about 12% off
        # the time per proposal but made the search slower to its front: 20 evaluations instead
        # of 18, 30 seeds on benchmarks/search_efficiency.py's first table with `monotone`.)
        refit = not warm or len(y) <= 20 or len(y) % 5 == 0
        lmbda = getattr(self, "lmbda", None)
        self.lmbda, self.w_mean, self.w_scale = None, 0.0, 1.0
        if warp and len(y) >= 5 and np.ptp(self.y) > 0:
            self.lmbda = _yeojohnson_lambda(self.y) if refit or lmbda is None else lmbda
            warped = _yeojohnson(self.y, self.lmbda)
            self.w_mean, self.w_scale = float(warped.mean()), float(warped.std()) or 1.0
            self.y = (warped - self.w_mean) / self.w_scale
        bounds = [self.BOUNDS_LS] * d + [self.BOUNDS_SF, self.BOUNDS_SN]
        default = np.r_[np.full(d, math.log(0.5)), 0.0, math.log(1e-2)]
        if refit:
            sq = ((x[:, None, :] - x[None, :, :]) ** 2).reshape(-1, d)
            starts = [self.theta] if warm else []
            if not warm or len(y) in (10, 20):
                starts.append(default)
            best = None
            for start in starts:
                res = minimize(self._nll, start, args=(sq, self.y), jac=True, method="L-BFGS-B", bounds=bounds,
                               options={"maxiter": 50, "ftol": 1e-4})  # fmt: skip
                if best is None or res.fun < best.fun:
                    best = res
            self.theta = best.x  # type: ignore[union-attr]
        assert self.theta is not None
        ls, sf2, sn2 = np.exp(self.theta[:d]), math.exp(self.theta[d]), math.exp(self.theta[d + 1])
        k = self._kernel(x, x, ls, sf2)
        np.fill_diagonal(k, sf2)  # exactly: the expansion leaves rounding on the diagonal
        self._chol = np.linalg.cholesky(k + (sn2 + 1e-9) * np.eye(len(x)))
        self._alpha = cho_solve((self._chol, True), self.y, check_finite=False)
        self._ls, self._sf2 = ls, sf2
        return self

    def draw(self, xs: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Posterior draws at ``xs`` from standard normal ``z`` (S, 1) or (S, n): (S, n), in the
        targets' units (through the inverse warp and logit, where there are)."""
        ks = self._kernel(xs, self.x, self._ls, self._sf2)
        mean = ks @ self._alpha
        v = solve_triangular(self._chol, ks.T, lower=True, check_finite=False)
        std = np.sqrt(np.maximum(self._sf2 - (v**2).sum(0), 1e-12))
        latent = mean[None, :] + std[None, :] * z
        if self.lmbda is not None:
            latent = _yeojohnson_inverse(latent * self.w_scale + self.w_mean, self.lmbda)
        out = self.mean + self.scale * latent
        if self.bounds is not None:
            lo, hi = self.bounds
            out = lo + (hi - lo) * expit(out)
        return out

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent function, in the targets' units
        (of a model fitted without ``warp`` and ``bounds``)."""
        ks = self._kernel(xs, self.x, self._ls, self._sf2)
        mean = ks @ self._alpha
        v = solve_triangular(self._chol, ks.T, lower=True, check_finite=False)
        var = np.maximum(self._sf2 - (v**2).sum(0), 1e-12)
        return self.mean + self.scale * mean, self.scale * np.sqrt(var)


def range_logit(y: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """The logit of ``y``'s position in ``bounds``, as a bounded metric's model sees it (a value
    at an end clipped 1e-6 of the range inside, so it stays finite)."""
    lo, hi = bounds
    share = np.clip((np.asarray(y, dtype=float) - lo) / (hi - lo), 1e-6, 1 - 1e-6)
    return np.log(share) - np.log1p(-share)


def _yeojohnson(x: np.ndarray, lmbda: float) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = np.log1p(x[pos]) if abs(lmbda) < 1e-9 else (np.power(x[pos] + 1, lmbda) - 1) / lmbda
    out[~pos] = -np.log1p(-x[~pos]) if abs(lmbda - 2) < 1e-9 else -(np.power(1 - x[~pos], 2 - lmbda) - 1) / (2 - lmbda)
    return out


def _yeojohnson_lambda(x: np.ndarray) -> float:
    """The maximum-likelihood Yeo-Johnson lambda in [-3, 5] (scipy.stats.yeojohnson's criterion,
    without its per-call overhead: this runs on every refit)."""
    from scipy.optimize import minimize_scalar

    jacobian = np.sum(np.sign(x) * np.log1p(np.abs(x)))

    def nll(lmbda: float) -> float:
        var = np.var(_yeojohnson(x, lmbda))
        return np.inf if var <= 0 else 0.5 * len(x) * math.log(var) - (lmbda - 1) * jacobian

    return float(minimize_scalar(nll, bounds=(-3.0, 5.0), method="bounded", options={"xatol": 1e-3}).x)


def _yeojohnson_inverse(y: np.ndarray, lmbda: float) -> np.ndarray:
    out = np.empty_like(y)
    pos = y >= 0
    if abs(lmbda) < 1e-9:
        out[pos] = np.expm1(y[pos])
    else:
        out[pos] = np.power(np.maximum(lmbda * y[pos] + 1, 1e-12), 1 / lmbda) - 1
    if abs(lmbda - 2) < 1e-9:
        out[~pos] = -np.expm1(-y[~pos])
    else:
        out[~pos] = 1 - np.power(np.maximum(1 - (2 - lmbda) * y[~pos], 1e-12), 1 / (2 - lmbda))
    return out


# --------------------------------------------------------------------------- hypervolume
def hypervolume_improvement(points: np.ndarray, front: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Hypervolume each of ``points`` (n, m) would add to ``front`` (k, m); every objective
    maximised, ``reference`` the lower corner. Exact; vectorised for two objectives."""
    points = np.maximum(points, reference)
    front = np.maximum(front.reshape(-1, points.shape[1]), reference)
    if points.shape[1] == 1:  # one objective: the improvement on the best so far
        return np.clip(points[:, 0] - max(front[:, 0].max() if len(front) else reference[0], reference[0]), 0, None)
    if points.shape[1] == 2:
        starts, ends, heights = _staircase(front, reference)
        widths = np.clip(np.minimum(points[:, :1], ends[None, :]) - starts[None, :], 0, None)
        return (widths * np.clip(points[:, 1:2] - heights[None, :], 0, None)).sum(1)
    import moocore

    base = moocore.hypervolume(front, ref=reference, maximise=True) if len(front) else 0.0
    return np.array([moocore.hypervolume(np.vstack([front, p]), ref=reference, maximise=True) - base for p in points])


def expected_hypervolume_improvement(nodes: np.ndarray, front: np.ndarray, reference: np.ndarray,
                                     rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Expected hypervolume each of n candidates adds to ``front`` (k, m), every objective
    maximised, ``reference`` the lower corner. ``nodes`` (K, n, m): K equally likely values of
    each objective at each candidate (posterior quantiles), the objectives independent.

    One or two objectives: exact for that distribution. The improvement of a point is a sum over
    the front's staircase of width x height, and with independent objectives the expectation of
    each product is the product of two one-dimensional expectations ``E[(v - t)+]``, so K values
    per objective stand for all K x K pairs. More objectives: the K values paired at random (a
    Latin hypercube over the objectives) and the exact improvement of each pair averaged."""
    front = np.maximum(front.reshape(-1, nodes.shape[2]), reference)

    def excess(v: np.ndarray, thresholds: np.ndarray) -> np.ndarray:  # E[(v - t)+]: (n, len(thresholds))
        gaps = v[:, :, None] - thresholds[None, None, :]
        return np.maximum(gaps, 0, out=gaps).mean(0)

    if nodes.shape[2] == 1:
        best = max(front[:, 0].max() if len(front) else reference[0], reference[0])
        return excess(nodes[:, :, 0], np.array([best]))[:, 0]
    if nodes.shape[2] == 2:
        starts, ends, heights = _staircase(front, reference)
        # ends are starts shifted by one, closed by +inf, where the excess is 0: one pass for both.
        at_starts = excess(nodes[:, :, 0], starts)
        widths = at_starts - np.c_[at_starts[:, 1:], np.zeros(len(at_starts))]
        return (widths * excess(nodes[:, :, 1], heights)).sum(1)
    k, n, m = nodes.shape
    paired = np.stack([nodes[rng.permutation(k), :, j] for j in range(m)], axis=-1)
    return hypervolume_improvement(paired.reshape(-1, m), front, reference).reshape(k, n).mean(0)


def _staircase(front: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A two-objective front's dominated region as a staircase: on (starts[i], ends[i]] of
    objective 1 it reaches heights[i] of objective 2 (the best of the points at or beyond ends[i])."""
    f = front[np.argsort(front[:, 0])]
    suffix_best = np.maximum.accumulate(f[::-1, 1])[::-1] if len(f) else np.empty(0)
    starts = np.r_[reference[0], f[:, 0]]
    ends = np.r_[f[:, 0], np.inf]
    heights = np.maximum(np.r_[suffix_best, reference[1]], reference[1])
    return starts, ends, heights


# --------------------------------------------------------------------------- monotonicity
class MonotoneModel:
    """The declared monotonicity of each objective: bounds on unmeasured configurations from
    measured ones, and the check of the declarations against measured pairs."""

    def __init__(self, space: Space, declared: Mapping[str, Mapping[str, str]]) -> None:
        self.space = space
        self.signs: dict[str, np.ndarray] = {}  # objective -> per knob: 1, -1, 0 (independent), nan (undeclared)
        for objective, knobs in declared.items():
            unknown = sorted(set(knobs) - set(space.names))
            if unknown:
                raise SpecError(f"strategy 'frontier' option 'monotone': {objective}.{unknown[0]} is not a knob; "
                                f"knobs: {', '.join(space.names)}")  # fmt: skip
            for name in knobs:
                if not _ordinal(space.knob(name).values) and knobs[name] != "none":
                    raise SpecError(f"strategy 'frontier' option 'monotone': {objective}.{name} is categorical, so it "
                                    "has no order; declare it 'none' or leave it out")  # fmt: skip
            self.signs[objective] = np.array([SIGN[knobs[k.name]] if k.name in knobs else np.nan for k in space.knobs])
        self.dropped: set[tuple[str, str]] = set()
        self._relation: tuple[np.ndarray, frozenset, dict[str, np.ndarray]] | None = None  # see relation

    CACHED_GRID = 4096  # the largest grid whose relation (grid x grid booleans, 16 MB) is kept

    def inputs(self, objective: str) -> np.ndarray:
        """Per knob, whether ``objective`` may depend on it (not declared ``none``, or dropped)."""
        signs = self.signs.get(objective)
        if signs is None:
            return np.ones(len(self.space.knobs), dtype=bool)
        return np.array([s != 0 or (objective, k.name) in self.dropped for k, s in zip(self.space.knobs, signs)])

    def below(self, objective: str, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(len(a), len(c)): whether f(a) <= f(c) follows from the declarations (value indices)."""
        signs = self.signs[objective]
        ok = np.ones((len(a), len(c)), dtype=bool)
        for j, s in enumerate(signs):
            if (objective, self.space.knobs[j].name) in self.dropped or np.isnan(s):
                ok &= a[:, None, j] == c[None, :, j]
            elif s > 0:
                ok &= a[:, None, j] <= c[None, :, j]
            elif s < 0:
                ok &= a[:, None, j] >= c[None, :, j]
        return ok

    def relation(self, objective: str, grid: np.ndarray) -> np.ndarray:
        """``below(objective, grid, grid)``, kept until a declaration is dropped: a search asks
        for it on every proposal, and the grid does not change."""
        dropped = frozenset(self.dropped)
        if self._relation is None or self._relation[0] is not grid or self._relation[1] != dropped:
            self._relation = (grid, dropped, {})
        cached = self._relation[2]
        if objective not in cached:
            cached[objective] = self.below(objective, grid, grid)
        return cached[objective]

    def bounds(self, objective: str, measured: np.ndarray, low: np.ndarray, high: np.ndarray,
               grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Lower and upper bounds of ``objective`` at every configuration of ``grid`` (value
        indices; -inf/inf where none follows), from the measured configurations (rows of the grid)
        and their interval ends ``low`` / ``high``."""
        if objective not in self.signs or len(measured) == 0:
            return np.full(len(grid), -np.inf), np.full(len(grid), np.inf)
        if len(grid) <= self.CACHED_GRID:
            relation = self.relation(objective, grid)
            under, over = relation[measured], relation[:, measured].T
        else:
            under = self.below(objective, grid[measured], grid)  # f(measured) <= f(candidate)
            over = self.below(objective, grid, grid[measured]).T  # f(candidate) <= f(measured)
        lower = np.where(under, low[:, None], -np.inf).max(0)
        upper = np.where(over, high[:, None], np.inf).min(0)
        return lower, upper

    def check(self, objective: str, measured: np.ndarray, values: np.ndarray, low: np.ndarray, high: np.ndarray,
              configs: Sequence[Config]) -> None:  # fmt: skip
        """Drop (with a warning) each declaration a pair of measurements contradicts: two
        configurations that differ in one knob only, whose intervals (or, without one, values
        more than 1% of the observed range apart) say the objective moved the other way."""
        if objective not in self.signs or len(values) < 2:
            return
        spread = float(values.max() - values.min()) or 1.0
        lo = np.where(high > low, low, values - 0.01 * spread)
        hi = np.where(high > low, high, values + 0.01 * spread)
        differ = measured[:, None, :] != measured[None, :, :]
        one_knob = differ.sum(-1) == 1  # pairs that differ in one knob only
        for j, s in enumerate(self.signs[objective]):
            name = self.space.knobs[j].name
            if np.isnan(s) or (objective, name) in self.dropped:
                continue
            same = one_knob & (measured[:, None, j] < measured[None, :, j])
            first, second = np.nonzero(same)  # first has the smaller value of the knob
            if s > 0:
                wrong = lo[first] > hi[second]
            elif s < 0:
                wrong = hi[first] < lo[second]
            else:
                wrong = (lo[first] > hi[second]) | (hi[first] < lo[second])
            if wrong.any():  # reported with the first contradicting pair
                a, b = first[wrong][0], second[wrong][0]
                self.dropped.add((objective, name))
                word = {1: "increase", -1: "decrease"}.get(int(s), "stay the same")
                log.warning("frontier: %s was declared to %s with %s, but %s gives %.6g and %s gives %.6g; that "
                            "declaration is no longer used", objective, word, name, dict(configs[a]), values[a],
                            dict(configs[b]), values[b])  # fmt: skip


# --------------------------------------------------------------------------- the strategy
class Frontier(AdaptiveStrategy):
    name = "frontier"
    summary = "Pareto-front search on the finite grid: monotone bounds prune, expected hypervolume improvement picks; run only"
    Options = _FrontierOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._grid: tuple[Space, list[Config], np.ndarray, np.ndarray] | None = None
        self._gps: dict[str, GaussianProcess] = {}
        self._monotone: MonotoneModel | None = None
        # per objective, the prior runs' value at each configuration (NaN where none measured it)
        self._priors: dict[str, np.ndarray] | None = None
        self._design: tuple[Space, list[int]] | None = None
        self.decided_after: int | None = None  # configurations known when the front was decided
        self._blas: Any = None  # threadpoolctl's controller, made on the first proposal
        self._read: dict[tuple[int, int], tuple[Observation, list[float] | None, dict]] = {}  # see _values
        from scipy.special import ndtri

        self._quantiles = ndtri((np.arange(self.options.samples) + 0.5) / self.options.samples)[:, None]
        for run in self.options.prior:  # checked now: a run that never starts creates nothing
            if not (Path(run) / "results.db").exists():
                raise SpecError(f"strategy 'frontier' option 'prior': {run} is not a knobscope run directory (no results.db)")

    def goal(self, spec_objectives: Any) -> Goal:
        goal = super().goal(spec_objectives)
        unknown = sorted(set(self.options.monotone) - {o.column for o in goal.objectives})
        if unknown:
            raise SpecError(f"strategy 'frontier' option 'monotone' names {unknown[0]!r}, which is not an objective; "
                            f"objectives: {', '.join(o.column for o in goal.objectives)}")  # fmt: skip
        return goal

    def check(self, space: Space) -> None:
        if space.grid_size > self.options.max_grid:
            raise SpecError(f"strategy 'frontier' scores every configuration, and the grid has {space.grid_size:,} "
                            f"(max_grid: {self.options.max_grid:,}); raise max_grid, or use 'bayesian' or 'nsga2'")  # fmt: skip
        MonotoneModel(space, self.options.monotone)  # raises on a knob it cannot take

    # ----------------------------------------------------------------- the grid, once
    def grid(self, space: Space) -> tuple[list[Config], np.ndarray, np.ndarray]:
        """Feasible configurations, their value indices and their features (computed once)."""
        if self._grid is None or self._grid[0] is not space:
            self.check(space)
            configs = space.product()
            index = np.array([[k.values.index(c[k.name]) for k in space.knobs] for c in configs], dtype=float)
            columns, owner = [], []
            for j, k in enumerate(space.knobs):
                if _ordinal(k.values):
                    columns.append(index[:, j:j + 1] / max(len(k.values) - 1, 1))
                else:
                    columns.append(np.eye(len(k.values))[index[:, j].astype(int)])
                owner += [j] * columns[-1].shape[1]
            self._feature_knob = np.array(owner)  # the knob each feature column encodes
            self._position = {c.canonical: i for i, c in enumerate(configs)}
            self._grid = (space, configs, index, np.hstack(columns))
            self._distinct: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # see _settings
            self._monotone = MonotoneModel(space, self.options.monotone)
        return self._grid[1], self._grid[2], self._grid[3]

    def propose(self, space: Space, history: Sequence[Observation], goal: Goal) -> Config | None:
        # The matrices are small (tens of measured configurations): with BLAS threads on a busy
        # machine they spin and wait on each other, and a proposal took 35 ms instead of 10 with
        # two other processes running (benchmarks/search_efficiency.py); one thread is as fast idle.
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        with self._blas.limit(limits=1, user_api="blas"):
            return self._propose(space, history, goal)

    def _propose(self, space: Space, history: Sequence[Observation], goal: Goal) -> Config | None:
        configs, index, _ = self.grid(space)
        assert self._monotone is not None
        position = self._position
        spare = np.ones(len(configs), dtype=bool)
        spare[[position[o.config.canonical] for o in history if o.config.canonical in position]] = False
        if not spare.any():
            return None
        rng = np.random.default_rng(proposal_seed(self.options.seed, self.name, len(history)))
        scored = [(o, v) for o in history if (v := self._values(o, goal)) is not None and o.config.canonical in position]
        live = {(id(o), id(goal)) for o in history}  # the cache holds this history only (the runner rebuilds it)
        self._read = {key: hit for key, hit in self._read.items() if key in live}
        design = self.initial_design(space, goal, configs, index)
        if len(scored) < len(design) or len(scored) < 2:
            for i in design:
                if spare[i]:
                    return configs[i]
        if len(scored) < 2:  # the design is measured but (nearly) everything failed: draw at random
            return configs[int(rng.choice(np.flatnonzero(spare)))]

        rows = np.array([position[o.config.canonical] for o, _ in scored])
        values = np.array([v for _, v in scored])
        maximise = np.array([o.maximise for o in goal.objectives]) if goal.kind == "objectives" else np.array([True])
        columns = [o.column for o in goal.objectives] if goal.kind == "objectives" else ["score"]
        low, high = self._interval(scored, goal, columns, values)

        # Bounds under the declared monotonicity (checked first), then the candidates that can
        # still improve the front.
        lower = np.full((len(configs), len(columns)), -np.inf)
        upper = np.full((len(configs), len(columns)), np.inf)
        for j, name in enumerate(columns):
            self._monotone.check(name, index[rows], values[:, j], low[:, j], high[:, j], [o.config for o, _ in scored])
            lower[:, j], upper[:, j] = self._monotone.bounds(name, rows, low[:, j], high[:, j], index)
        sign = np.where(maximise, 1.0, -1.0)
        best_case = np.where(maximise, upper, -lower)  # maximised orientation
        worst_measured = np.where(maximise, low, -high)
        open_ = spare & ~_weakly_dominated(best_case, worst_measured)
        if not open_.any():
            if self.decided_after is None:
                self.decided_after = len(history)
                log.info("frontier: the front is decided after %d configurations: no unmeasured configuration can "
                         "improve it under the declared monotonicity", len(history))  # fmt: skip
            return None

        # Surrogate per objective, in the maximised orientation.
        candidates = np.flatnonzero(open_)
        oriented = values * sign
        # Each objective's posterior at a candidate as K equally likely values: its quantiles at
        # the midpoints of K equal slices of probability (through the warp: it is monotone).
        ranges = [None if o.range is None else tuple(sorted(np.multiply(o.range, sign[j])))
                  for j, o in enumerate(goal.objectives)] if goal.kind == "objectives" else [None]  # fmt: skip
        nodes = np.empty((self.options.samples, len(candidates), len(columns)))
        for j, name in enumerate(columns):
            nodes[:, :, j] = self.posterior(name, rows, oriented[:, j], candidates, ranges[j])

        # Expected hypervolume improvement over the measured front. Objectives are scaled by their
        # range over the measured configurations and the open ones (their posterior medians),
        # and the reference point lies below both: a reference from the measured values alone
        # would give no weight to an end of the front nothing measured yet reaches (a first
        # design from a prior run's front, say, leaves the slowest, most accurate end unvalued).
        clip_lo = np.where(maximise, lower, -upper)[candidates] * 1.0
        clip_hi = np.where(maximise, upper, -lower)[candidates] * 1.0
        nodes = np.clip(nodes, clip_lo[None], clip_hi[None])  # (K, n, m)
        median = nodes[len(nodes) // 2]
        lo_o = np.minimum(oriented.min(0), median.min(0))
        hi_o = np.maximum(oriented.max(0), median.max(0))
        span = np.where(hi_o > lo_o, hi_o - lo_o, 1.0)
        reference = np.full(len(columns), -self.options.reference_margin)
        scale = lambda v: (v - lo_o) / span  # noqa: E731
        front = scale(oriented[pareto_mask(oriented, True)])
        nodes = scale(nodes)
        gain = expected_hypervolume_improvement(nodes, front, reference, rng)
        best = np.flatnonzero(gain >= gain.max() - 1e-15)
        if gain.max() <= 0:  # nothing promises a gain: the most uncertain open configuration
            spread = nodes.std(0).sum(1)
            best = np.flatnonzero(spread >= spread.max() - 1e-15)
        return configs[int(candidates[int(rng.choice(best))])]

    # ----------------------------------------------------------------- parts
    def posterior(self, name: str, rows: np.ndarray, target: np.ndarray, candidates: np.ndarray,
                  bounds: tuple[float, float] | None, z: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Objective ``name``'s model, fitted to ``target`` (maximised orientation) at grid
        positions ``rows``: its posterior quantiles at grid positions ``candidates``, (samples,
        len(candidates)); ``z``: standard normal quantiles (S, 1) to draw at instead of the
        ``samples`` equally likely ones. (benchmarks/search_efficiency.py's ``--known`` puts a
        table's true values here, to count the evaluations each model costs, and
        benchmarks/search_calibration.py asks it how sure it was.)"""
        z = self._quantiles if z is None else z
        features = self._grid[3]  # type: ignore[index]
        # A knob the objective is declared not to depend on is not an input of its model.
        used = self._monotone.inputs(name)[self._feature_knob]  # type: ignore[union-attr]
        used = used if used.any() else ~used  # declared constant: let the model see that
        gp = self._gps.setdefault(name, GaussianProcess()).fit(features[rows][:, used], target, warp=self.options.warp,
                                                               bounds=bounds)  # fmt: skip
        # Where the model has fewer inputs than the grid has knobs, candidates share settings (the
        # speedup bound of SketchWalk: 24 (block size, top-k) cells among 384): draw once per setting.
        settings, setting_of = self._settings(used)
        if len(settings) < len(candidates):
            return gp.draw(settings, z)[:, setting_of[candidates]]
        return gp.draw(features[candidates][:, used], z)

    def _settings(self, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of the grid's features in the columns ``used``, and each
        configuration's row among them (computed once per set of columns: per proposal,
        ``np.unique`` cost what drawing once per setting saves)."""
        key = used.tobytes()
        hit = self._distinct.get(key)
        if hit is None:
            features = self._grid[3][:, used]  # type: ignore[index]
            hit = self._distinct[key] = np.unique(features, axis=0, return_inverse=True)
        return hit[0], hit[1].reshape(-1)

    def initial_design(self, space: Space, goal: Goal, configs: list[Config], index: np.ndarray) -> list[int]:
        """Grid positions of the first design: the prior runs' front (``knobs + 3`` by default),
        else the monotone anchors and a Latin hypercube (``knobs + 1``, in a seeded random order)."""
        if self._design is not None and self._design[0] is space:
            return self._design[1]
        self._design = (space, self._initial_design(space, goal, configs, index))
        return self._design[1]

    def _initial_design(self, space: Space, goal: Goal, configs: list[Config], index: np.ndarray) -> list[int]:
        from_prior = bool(self.options.prior) and goal.kind == "objectives"
        # From a prior, two more: on benchmarks/search_efficiency.py's three tables (monotone and
        # prior, priors at 80%) knobs + 1 (5) needed 16, 16 and 13 evaluations to 99% of the
        # hypervolume over seeds 30-59, knobs + 3 (7) 13, 14 and 13, worse on no table (chosen
        # among 3 to 10 on seeds 0-29: 6 as good or better on two tables, worse on the third; 3, 4,
        # 8 and 10 worse). Without monotone it moved both ways: 20.5, 16 and 15 against 17, 19 and
        # 15. On a fourth table, measured after this choice, 11 (docs/search.md).
        default = len(space.knobs) + (3 if from_prior else 1)
        size = min(self.options.initial_size or default, len(configs))
        rng = np.random.default_rng(proposal_seed(self.options.seed, "frontier-design", 0))
        picked: list[int] = []
        if from_prior:
            return self._prior_front(space, goal, configs, size)
        for o in goal.objectives if goal.kind == "objectives" else ():
            signs = self._monotone.signs.get(o.column) if self._monotone else None
            if signs is None:
                continue
            # The best corner of a fully declared objective (free knobs drawn at random).
            want = signs * (1 if o.maximise else -1)
            target = [len(k.values) - 1 if w > 0 else 0 if w < 0 else int(rng.integers(len(k.values)))
                      for k, w in zip(space.knobs, np.nan_to_num(want))]  # fmt: skip
            if np.isnan(signs).any():
                continue
            hit = np.flatnonzero((index == np.array(target)).all(1))
            if len(hit) and int(hit[0]) not in picked:
                picked.append(int(hit[0]))
        if len(picked) < size:
            from knobscope.strategies import get_strategy

            lhs = get_strategy("lhs", {"size": size, "seed": self.options.seed}).select(space)
            where = {c.canonical: i for i, c in enumerate(configs)}
            extra = [where[c.canonical] for c in lhs if where[c.canonical] not in picked]
            picked += [extra[i] for i in rng.permutation(len(extra))][: size - len(picked)]
        return picked

    def _values(self, obs: Observation, goal: Goal) -> list[float] | None:
        """``goal.values(obs)``, read once per observation while the caller passes the same
        observations again (a search reads its whole history on every proposal). The runner
        builds a new history from the store each time, so there every read misses; the cache is
        pruned to the history at hand, so it never grows beyond it. (The observation is kept with
        its entry, so its id cannot be reused while it is cached.)"""
        key = (id(obs), id(goal))
        hit = self._read.get(key)
        if hit is None or hit[0] is not obs:
            hit = self._read[key] = (obs, goal.values(obs), {})
        return hit[1]

    def _interval(self, scored: list, goal: Goal, columns: list[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each measured value's interval ends from the store (``{column}_ci_low/_high``), else the value."""
        low, high = values.copy(), values.copy()
        for i, (obs, _) in enumerate(scored):
            ends = self._read[(id(obs), id(goal))][2]
            if not ends:
                for name in columns:
                    column = column_for(name, obs.row) or name
                    lo, hi = obs.row.get(f"{column}_ci_low"), obs.row.get(f"{column}_ci_high")
                    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi))
                    ends[name] = (lo, hi) if ok else None
            for j, name in enumerate(columns):
                if ends[name] is not None:
                    lo, hi = ends[name]
                    low[i, j], high[i, j] = min(lo, values[i, j]), max(hi, values[i, j])
        return low, high

    def _load_priors(self, space: Space, names: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
        """Per name (a result column, or a metric whose mean column is meant), (grid position,
        value) pairs from the prior run directories."""
        from knobscope.results import summary_columns
        from knobscope.store import Store

        configs, _, _ = self.grid(space)
        where = self._position
        out: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
        for run in self.options.prior:
            with Store.open(run) as store:
                for config, values in summary_columns(store, names):
                    if set(config) != set(space.names):
                        continue
                    position = where.get(Config((n, config[n]) for n in space.names).canonical)
                    if position is None:
                        continue
                    for name in names:
                        value = values[name]
                        if isinstance(value, (int, float)) and math.isfinite(value):
                            out[name].append((position, float(value)))
        if not any(out.values()):
            raise SpecError(f"strategy 'frontier' option 'prior': no finished configuration of this space (knobs "
                            f"{', '.join(space.names)}) in {', '.join(self.options.prior)}")  # fmt: skip
        return out

    TIE = 1e-7  # prior values closer than this share of their range are one value (see _prior_front)

    def _prior_front(self, space: Space, goal: Goal, configs: list[Config], size: int) -> list[int]:
        """``size`` of the Pareto-optimal configurations among those the prior runs measured (a
        configuration in several runs: its mean), greatest hypervolume contribution first (picked
        greedily, so the cost grows with the prior's front times ``size``, not its square).

        Only measured ones: filling the others in with a GP fitted to the prior (as an earlier
        version did) took 0.25 s once per search from a prior that lacked a fifth of the space,
        nearly doubling the time per proposal of a 60-evaluation search (first proposal: 270 ms
        instead of 28)."""
        if self._priors is None:
            columns = [o.column for o in goal.objectives]
            points = self._load_priors(space, columns)
            missing = [name for name in columns if not points[name]]
            if missing:
                raise SpecError(f"strategy 'frontier' option 'prior': the prior runs have no column {missing[0]!r}")
            means = []
            for name in columns:
                rows = np.array([p for p, _ in points[name]])
                vals = np.array([v for _, v in points[name]])
                full = np.full(len(configs), np.nan)
                rows, inverse = np.unique(rows, return_inverse=True)
                full[rows] = np.bincount(inverse, weights=vals) / np.bincount(inverse)  # several runs: their mean
                means.append(full)
            self._priors = {name: mean for name, mean in zip(columns, means)}
        sign = np.array([1.0 if o.maximise else -1.0 for o in goal.objectives])
        values = np.column_stack([self._priors[o.column] for o in goal.objectives]) * sign
        measured = np.flatnonzero(np.isfinite(values).all(1))
        if not len(measured):
            raise SpecError(f"strategy 'frontier' option 'prior': no configuration of this space has every objective "
                            f"({', '.join(o.column for o in goal.objectives)}) in {', '.join(self.options.prior)}")  # fmt: skip
        values = values[measured]
        lo, hi = values.min(0), values.max(0)
        scaled = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
        # Values within 1e-7 of the range are one value, and a tie is broken by the seed. Sketch
        # settings that select the same blocks give the same cosine but for rounding, and when the
        # rounding chose, every seed of benchmarks/search_efficiency.py started from the same one
        # of them: moving the prior's cosines by one part in 1e9 changed 11-19 of 30 searches from
        # a prior by 2-3 evaluations each, a shared factor that no interval over seeds could show.
        scaled = np.round(scaled / self.TIE) * self.TIE
        rng = np.random.default_rng(proposal_seed(self.options.seed, "frontier-prior", 0))
        front = list(np.flatnonzero(pareto_mask(scaled, True)))  # ties all kept
        reference = np.full(values.shape[1], -0.1)
        order: list[int] = []
        while front and len(order) < size:  # greedy: the configuration that adds the most hypervolume next
            chosen = scaled[order] if order else np.empty((0, values.shape[1]))
            gains = hypervolume_improvement(scaled[front], chosen, reference)
            order.append(front.pop(int(rng.choice(np.flatnonzero(gains >= gains.max() - 1e-12)))))
        return [int(measured[i]) for i in order]


def _weakly_dominated(best_case: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Whether each candidate's best case (maximised orientation) is matched or beaten on every
    objective by some measured configuration's worst case: it cannot add hypervolume."""
    bounded = np.isfinite(best_case).all(1)  # an unbounded best case is never dominated
    out = np.zeros(len(best_case), dtype=bool)
    if len(measured) == 0 or not bounded.any():
        return out
    out[bounded] = (measured[None, :, :] >= best_case[bounded, None, :]).all(-1).any(1)
    return out
