"""Variational inference for any symzoo network: Gaussian posteriors over its trainable entries.

The posterior lives on the flat vector of the network's *trainable parameter entries* (the
``ParamLayout`` trainable mask restricted to parameters). Fixed W-Asym entries, FiGLU matrices and
other buffers are constants: never sampled, zero variance, no KL. Entries are grouped by the module
that owns them (a layer's weight and bias, a norm's gain and shift); groups are independent and each
is ``N(μ, diag(σ²) + V Vᵀ / k)`` — ELRG (Tomczak et al. 2020) with a rank-``k`` factor ``V`` — or
``N(μ, diag(σ²))`` (mean field). The prior is ``N(0, 1/τ)`` per entry, with ``τ`` the prior
precision, times the layer's fan-in by default (so the prior keeps its scale as layers widen).

Training uses the local reparameterisation trick on every ``Linear`` layer (W-Asym ones included):
the layer runs its own forward on the mean weights, and a forward hook adds Gaussian noise with the
per-example output variance ``x² σ²ᵀ`` plus, for ELRG, ``Σ_j z_j x V_jᵀ / √k`` with ``z`` drawn per
example. Each example thus sees its own weight sample, at about ``2 + k`` times the cost of a plain
forward pass (``2`` with ``low_rank_noise="per_batch"``, where the low-rank part is one weight
sample per batch). The other groups (norms, and convolutions unless ``local_conv``) get one
explicit weight sample per batch, which is exact. Prediction averages the class probabilities of
explicit whole-network weight samples.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from generators.augment import augment_batch
from generators.data import ImageData
from generators.recipe import Augment
from zoo.errors import SpecError
from zoo.layout import ParamLayout, TensorSlot
from zoo.nets import ArchSpec
from zoo.symmetry import permutation_spec
from zoo.weightspace import WeightTensor, weight_space_from_spec

__all__ = [
    "POSTERIORS",
    "PosteriorConfig",
    "ParamGroup",
    "VariationalPosterior",
    "VITrainConfig",
    "VIResult",
    "fit_variational",
    "classification_metrics",
    "expected_calibration_error",
]

POSTERIORS = ("mean_field", "elrg")
LOW_RANK_NOISE = ("per_example", "per_batch")
ECE_BINS = 15


@dataclass(frozen=True)
class PosteriorConfig:
    """The variational family and the prior.

    Attributes:
        kind: ``elrg`` (diagonal + rank-``rank`` factor per group) or ``mean_field``.
        rank: ``k`` of ELRG (the paper: 4); unused by ``mean_field``.
        prior_precision: ``τ`` of the prior ``N(0, 1/τ)`` (the paper's code: 0.01).
        prior_fan_in: multiply ``τ`` by each layer's fan-in (norm groups: by 1).
        init_logvar: initial ``log σ²`` of every entry (the paper's code: −10).
        learn_diag: train ``σ²``; else it stays at ``exp(init_logvar)``. None (default): fixed for
            ELRG (the paper's code: only the mean and the low-rank factor learn), learned for
            mean field (which has nothing else to learn a variance with).
        factor_init: ``V`` starts as ``N(0, (factor_init · std(W₀))² / k)`` per group, ``W₀`` the
            group's initial weights (std floored at 0.01).
        low_rank_noise: ``per_example`` (local reparameterisation of the low-rank part too) or
            ``per_batch`` (one low-rank weight sample per batch: cheaper, noisier gradients).
        local_conv: local reparameterisation on ``Conv2d`` layers too, as the paper's code does.
            It draws the noise of every output position independently although the positions
            share one kernel, so it is an approximation (pooled features get too little
            variance); the default samples conv weights once per batch, which is exact.
    """

    kind: str = "elrg"
    rank: int = 4
    prior_precision: float = 0.01
    prior_fan_in: bool = True
    init_logvar: float = -10.0
    learn_diag: bool | None = None
    factor_init: float = 0.5
    low_rank_noise: str = "per_example"
    local_conv: bool = False

    def __post_init__(self) -> None:
        if self.kind not in POSTERIORS:
            raise SpecError(f"posterior '{self.kind}' is unknown; expected one of {', '.join(POSTERIORS)}")
        if self.kind == "elrg" and self.rank < 1:
            raise SpecError(f"elrg needs rank >= 1, got {self.rank}")
        if self.prior_precision <= 0:
            raise SpecError(f"prior precision must be > 0, got {self.prior_precision}")
        if self.low_rank_noise not in LOW_RANK_NOISE:
            raise SpecError(f"low_rank_noise '{self.low_rank_noise}' is unknown; expected one of {', '.join(LOW_RANK_NOISE)}")

    @property
    def learns_diag(self) -> bool:
        return self.kind == "mean_field" if self.learn_diag is None else self.learn_diag

    @property
    def effective_rank(self) -> int:
        return self.rank if self.kind == "elrg" else 0


@dataclass(frozen=True)
class ParamGroup:
    """One module's trainable entries: ``[start, stop)`` of the variational vector."""

    module: str
    start: int
    stop: int
    prior_var: float
    local: bool  # local reparameterisation in training (Linear; Conv2d with local_conv)
    first_size: int  # trainable entries of its first tensor (the weight)

    @property
    def size(self) -> int:
        return self.stop - self.start


def _param_groups(slots: list[TensorSlot], layers: dict[str, WeightTensor], config: PosteriorConfig) -> tuple[ParamGroup, ...]:
    """One group per module with trainable entries (its tensors are consecutive in state_dict
    order). ``layers``: the weight space's layers by module name (Linear and Conv weights), which
    give the fan-in of the prior and which groups are sampled per example (local
    reparameterisation: Linear layers, and convolutions with ``local_conv``); norm groups have
    fan-in 1 and are sampled per batch."""
    groups, start = [], 0
    for owner, members in itertools.groupby(slots, key=lambda s: s.name.rpartition(".")[0]):
        members = list(members)
        size = sum(s.trainable for s in members)
        if size == 0:  # e.g. a fully fixed W-Asym stem without bias
            continue
        layer = layers.get(owner)
        fan = layer.n_in * layer.kernel_size if layer is not None and config.prior_fan_in else 1
        local = layer is not None and (len(layer.shape) == 2 or config.local_conv)
        groups.append(ParamGroup(owner, start, start + size, 1.0 / (config.prior_precision * fan), local,
                                 members[0].trainable))
        start += size
    return tuple(groups)


def _apply_layer(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The layer's linear map with another weight and bias (its stride, padding, ... kept)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)  # type: ignore[operator]


class VariationalPosterior(nn.Module):
    """A Gaussian posterior over ``network``'s trainable entries; see the module docstring.

    Variational parameters: ``mean`` (P,), ``log_var`` (P,) and, for ELRG, ``factor`` (P, k),
    with P the number of trainable parameter entries. ``network`` only provides the forward pass,
    the masks and the fixed values; its own parameters are never used after construction.
    """

    def __init__(self, network: nn.Module, config: PosteriorConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.rank = config.effective_rank
        self.network = network.requires_grad_(False)
        self.layout = ParamLayout.from_module(network)
        params = dict(network.named_parameters())
        self._slots = [s for s in self.layout.slots if s.name in params]
        trainable = torch.cat([self.layout.trainable_mask[s.offset : s.stop] for s in self._slots])
        self._all_trainable = bool(trainable.all())
        self.register_buffer("_param_index", torch.nonzero(trainable).squeeze(1), persistent=False)
        layout_index = torch.cat([torch.arange(s.offset, s.stop) for s in self._slots])[trainable]
        self.register_buffer("_layout_index", layout_index, persistent=False)
        initial = torch.cat([params[s.name].detach().reshape(-1).float() for s in self._slots])[trainable]

        space = weight_space_from_spec(permutation_spec(network), self.layout)
        layers = {w.name.rpartition(".")[0]: w for w in space.weights}
        self.groups = _param_groups(self._slots, layers, config)
        sizes = torch.tensor([g.size for g in self.groups])
        per_entry = lambda values: torch.repeat_interleave(torch.tensor(values), sizes)  # noqa: E731
        self.register_buffer("_group_of", per_entry(list(range(len(self.groups)))), persistent=False)
        self.register_buffer("_prior_var", per_entry([g.prior_var for g in self.groups]), persistent=False)
        local = per_entry([g.local for g in self.groups])
        self.register_buffer("_shared", torch.nonzero(~local).squeeze(1), persistent=False)  # sampled per batch

        self.mean = nn.Parameter(initial.clone())
        log_var = torch.full_like(initial, config.init_logvar)
        if config.learns_diag:
            self.log_var = nn.Parameter(log_var)
        else:
            self.register_buffer("log_var", log_var)
        self.factor: nn.Parameter | None = None
        if self.rank:
            generator = torch.Generator().manual_seed(int(seed))
            scale = torch.empty(len(initial))
            for g in self.groups:
                first = initial[g.start : g.start + g.first_size]
                std = float(first.std()) if first.numel() > 1 else 0.0
                scale[g.start : g.stop] = config.factor_init * max(std, 1e-2) / math.sqrt(self.rank)
            self.factor = nn.Parameter(scale[:, None] * torch.randn(len(initial), self.rank, generator=generator))

    # -- sizes and parameters -------------------------------------------------------------------
    @property
    def num_variational(self) -> int:
        """Entries with a posterior (the network's trainable parameter entries)."""
        return self.mean.numel()

    def variational_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.mean, self.log_var, self.factor) if isinstance(p, nn.Parameter)]

    # -- flat vectors <-> network parameters ----------------------------------------------------
    def _to_param_space(self, vector: Tensor) -> Tensor:
        """(P,) or (P, k) over trainable entries -> the same over all parameter entries (fixed: 0)."""
        if self._all_trainable:
            return vector
        return vector.new_zeros((sum(s.numel for s in self._slots), *vector.shape[1:])).index_copy(0, self._param_index, vector)

    def params_from(self, vector: Tensor) -> dict[str, Tensor]:
        """Network parameters (for ``functional_call``) with trainable entries from ``vector``.

        Fixed W-Asym slots hold 0 here; the layers compute with their own fixed values."""
        return self._views(self._to_param_space(vector))

    def _views(self, full: Tensor) -> dict[str, Tensor]:
        # split (not slicing) so that backward is one concatenation, not a zero-filled buffer per tensor
        parts = full.split([s.numel for s in self._slots])
        extra = tuple(full.shape[1:])
        return {s.name: part.view(*s.shape, *extra) for s, part in zip(self._slots, parts)}

    def to_layout(self, vector: Tensor) -> Tensor:
        """The full flat vector (``ParamLayout`` order, effective weights) with trainable entries
        from ``vector``: fixed entries and buffers are the network's own."""
        flat = self.layout.flatten(self.network).to(vector.device)
        flat[self._layout_index] = vector.detach().float()
        return flat

    # -- the distribution -----------------------------------------------------------------------
    def _low_rank(self, z: Tensor) -> Tensor:
        """``V_g z_g / √k`` for every group at once: z is ``(groups, k)``."""
        assert self.factor is not None
        return (self.factor * z[self._group_of]).sum(1) / math.sqrt(self.rank)

    def sample_vector(self, generator: torch.Generator | None = None) -> Tensor:
        """One explicit sample of the trainable entries."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        sample = self.mean + (0.5 * self.log_var).exp() * eps
        if self.rank:
            z = torch.randn(len(self.groups), self.rank, generator=generator, device=self.mean.device)
            sample = sample + self._low_rank(z)
        return sample

    def sample_layout(self, generator: torch.Generator | None = None) -> Tensor:
        """One sample as a full flat vector (fixed entries and buffers included, never sampled)."""
        return self.to_layout(self.sample_vector(generator))

    def variance(self) -> Tensor:
        """Marginal variance of every entry of the full flat vector (0 for fixed entries, buffers)."""
        var = self.log_var.detach().exp()
        if self.rank:
            var = var + self.factor.detach().pow(2).sum(1) / self.rank  # type: ignore[union-attr]
        full = torch.zeros(self.layout.size, device=var.device)
        full[self._layout_index] = var
        return full

    def kl(self) -> Tensor:
        """``KL(q ‖ prior)`` summed over the trainable entries (exact, matrix determinant lemma):
        per group ``½[tr(Σ)/s² + |μ|²/s² − n + n log s² − log det Σ]`` with ``Σ = D + VVᵀ/k`` and
        ``log det Σ = log det D + log det(I + VᵀD⁻¹V/k)``."""
        var = self.log_var.exp()
        total = 0.5 * (((var + self.mean.pow(2)) / self._prior_var).sum() - self.log_var.sum())
        total = total + 0.5 * sum(g.size * (math.log(g.prior_var) - 1.0) for g in self.groups)
        if not self.rank:
            return total
        sizes = [g.size for g in self.groups]
        eye = torch.eye(self.rank, device=var.device)
        for g, v, d in zip(self.groups, self.factor.split(sizes), var.split(sizes)):  # type: ignore[union-attr]
            trace = v.pow(2).sum() / (self.rank * g.prior_var)
            total = total + 0.5 * (trace - torch.logdet(eye + (v / d[:, None]).T @ v / self.rank))
        return total

    # -- forward passes -------------------------------------------------------------------------
    def forward_sample(self, x: Tensor, vector: Tensor) -> Tensor:
        """The network's output with trainable entries ``vector`` (one weight sample for the batch)."""
        return functional_call(self.network, self.params_from(vector), (x,))

    def forward_local(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Training forward pass: local reparameterisation on Linear/Conv2d layers (each example
        its own weight sample), one weight sample per batch for the other groups."""
        device = self.mean.device
        sd = (0.5 * self.log_var).exp()
        per_example = bool(self.rank) and self.config.low_rank_noise == "per_example"
        # Weight-level noise, one draw for the batch: every part of the non-local groups (norms),
        # and the low-rank part of the local ones unless that is drawn per example.
        shared = self._shared
        vector = self.mean.index_add(0, shared, sd[shared] * torch.randn(len(shared), generator=generator, device=device))
        if self.rank:
            z = torch.randn(len(self.groups), self.rank, generator=generator, device=device)
            if per_example:
                low = (self.factor[shared] * z[self._group_of[shared]]).sum(1) / math.sqrt(self.rank)  # type: ignore[index]
                vector = vector.index_add(0, shared, low)
            else:
                vector = vector + self._low_rank(z)
        variances = self._views(self._to_param_space(sd * sd))
        factors = self._views(self._to_param_space(self.factor)) if per_example else {}
        modules = dict(self.network.named_modules())
        handles = []
        for g in self.groups:
            if not g.local:
                continue
            hook = _LocalNoise(g.module, variances, factors, self.rank, generator)
            handles.append(modules[g.module].register_forward_hook(hook))
        try:
            return functional_call(self.network, self.params_from(vector), (x,))
        finally:
            for handle in handles:
                handle.remove()

    def neg_elbo(self, x: Tensor, y: Tensor, num_train: int, generator: torch.Generator | None = None,
                 kl_weight: float = 1.0) -> tuple[Tensor, dict[str, float]]:
        """Per-example negative ELBO ``NLL(x, y) + kl_weight · KL / num_train`` and its parts."""
        nll = F.cross_entropy(self.forward_local(x, generator).float(), y)
        kl = self.kl()
        loss = nll + kl_weight * kl / num_train
        return loss, {"nll": float(nll.detach()), "kl_per_example": float(kl.detach()) / num_train}

    @torch.no_grad()
    def predict(self, x: Tensor, samples: int = 25, generator: torch.Generator | None = None,
                chunk: int = 2048) -> Tensor:
        """Posterior predictive class probabilities: the mean of ``samples`` weight samples' softmax."""
        was_training = self.network.training
        self.network.eval()
        probs = None
        for _ in range(samples):
            vector = self.sample_vector(generator)
            p = torch.cat([torch.softmax(self.forward_sample(x[i : i + chunk], vector).float(), -1)
                           for i in range(0, len(x), chunk)])
            probs = p if probs is None else probs + p
        self.network.train(was_training)
        assert probs is not None
        return probs / samples


class _LocalNoise:
    """Forward hook of one Linear/Conv2d layer: adds the output noise of its weight posterior."""

    def __init__(self, module: str, variances: dict[str, Tensor], factors: dict[str, Tensor], rank: int,
                 generator: torch.Generator | None) -> None:
        self.weight, self.bias = f"{module}.weight", f"{module}.bias"
        self.variances, self.factors, self.rank, self.generator = variances, factors, rank, generator

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        x = args[0]
        var = _apply_layer(module, x * x, self.variances[self.weight], self.variances.get(self.bias))
        out = out + var.clamp_min(1e-16).sqrt() * self._randn(var.shape, out)
        if self.factors:
            k = self.rank
            v_w = self.factors[self.weight].movedim(-1, 0)  # (k, out, ...)
            v_b = self.factors.get(self.bias)
            stacked = _apply_layer(module, x, v_w.reshape(-1, *v_w.shape[2:]),
                                   None if v_b is None else v_b.T.reshape(-1))
            channel = -1 if isinstance(module, nn.Linear) else 1
            stacked = stacked.unflatten(channel, (k, -1))  # rank axis just before the channels
            z = self._randn((x.shape[0], k), out)
            rank_axis = stacked.ndim - 2 if channel == -1 else 1
            z = z.view(x.shape[0], *([1] * (rank_axis - 1)), k, *([1] * (stacked.ndim - rank_axis - 1)))
            out = out + (stacked * z).sum(rank_axis) / math.sqrt(k)
        return out

    def _randn(self, shape: tuple[int, ...] | torch.Size, like: Tensor) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=like.device, dtype=like.dtype)


# -- metrics ----------------------------------------------------------------------------------------
def expected_calibration_error(probs: Tensor, target: Tensor, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width confidence bins ``(i/bins, (i+1)/bins]``:
    ``Σ_b (n_b / N) · |accuracy_b − mean confidence_b|``."""
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == target).double()
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1
    hits = torch.zeros(bins, dtype=torch.float64).index_add_(0, index.cpu(), correct.cpu())
    conf = torch.zeros(bins, dtype=torch.float64).index_add_(0, index.cpu(), confidence.double().cpu())
    return float((hits - conf).abs().sum() / max(len(target), 1))


def classification_metrics(probs: Tensor, target: Tensor) -> dict[str, float]:
    """NLL of the predictive probabilities, accuracy and 15-bin ECE."""
    nll = -torch.log(probs.gather(-1, target[:, None]).squeeze(-1).double().clamp_min(1e-12)).mean()
    acc = (probs.argmax(-1) == target).double().mean()
    return {"nll": float(nll), "acc": float(acc), "ece": expected_calibration_error(probs, target)}


# -- training -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VITrainConfig:
    """ELBO training with Adam (no schedule, as in the paper's code) and evaluation settings.

    Attributes:
        epochs, batch_size, lr: Adam on the variational parameters.
        kl_weight: multiplies ``KL / N`` in the loss (1 = the ELBO).
        eval_samples: posterior samples of the final test evaluation (the paper: 25).
        curve_samples, curve_test_size: the per-epoch test evaluation (learning curves) uses
            ``curve_samples`` samples on the first ``curve_test_size`` test examples (None: all).
        augment: on-the-fly augmentation of training batches.
    """

    epochs: int = 10
    batch_size: int = 250
    lr: float = 5e-4
    kl_weight: float = 1.0
    eval_samples: int = 25
    curve_samples: int = 25
    curve_test_size: int | None = None
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_samples", "curve_samples"):
            if getattr(self, name) <= 0:
                raise SpecError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.kl_weight < 0:
            raise SpecError("lr must be > 0 and kl_weight >= 0")
        if self.curve_test_size is not None and self.curve_test_size <= 0:
            raise SpecError(f"curve test size must be positive, got {self.curve_test_size}")


CURVES = ("neg_elbo", "train_nll", "kl_per_example", "test_nll", "test_acc", "test_ece")


@dataclass
class VIResult:
    """One trained posterior: final test metrics, per-epoch curves, sizes and time."""

    metrics: dict[str, float]
    curves: dict[str, list[float]]
    status: str
    num_variational: int
    num_fixed: int
    seconds: float


def fit_variational(spec: ArchSpec, data: ImageData, posterior: PosteriorConfig, train: VITrainConfig, *,
                    seed: int = 0, device: torch.device | str = "cpu",
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                    on_step: Callable[[], None] | None = None) -> VIResult:
    """Train a variational posterior over ``spec``'s network on ``data``; evaluate it after every
    epoch (learning curves) and at the end with ``train.eval_samples`` samples on the whole test
    set. ``seed`` sets the initial means (``spec.build(init_seed=seed)``), the data order and all
    noise; a non-finite loss stops training and marks the result ``diverged``."""
    started = time.perf_counter()
    device = torch.device(device)
    data = data.to(device)
    model = VariationalPosterior(spec.build(init_seed=seed), posterior, seed=seed).to(device)
    optimizer = torch.optim.Adam(model.variational_parameters(), lr=train.lr)
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    eval_gen = torch.Generator(device=device)
    n = len(data.x_train)
    curve_x, curve_y = data.x_test[: train.curve_test_size], data.y_test[: train.curve_test_size]
    curves: dict[str, list[float]] = {c: [] for c in CURVES}
    status, step = "ok", 0
    seeds = torch.tensor([seed], device=device)
    for epoch in range(train.epochs):
        model.network.train()
        order = torch.randperm(n, generator=order_gen).to(device)
        sums = {"neg_elbo": 0.0, "nll": 0.0, "kl_per_example": 0.0}
        batches = 0
        for start in range(0, n, train.batch_size):
            index = order[start : start + train.batch_size]
            x = augment_batch(data.x_train[index][None], train.augment, seeds, step)[0]
            loss, parts = model.neg_elbo(x, data.y_train[index], n, noise_gen, train.kl_weight)
            if not math.isfinite(float(loss.detach())):
                status = "diverged"
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sums["neg_elbo"] += float(loss.detach())
            sums["nll"] += parts["nll"]
            sums["kl_per_example"] += parts["kl_per_example"]
            batches += 1
            step += 1
            if on_step is not None:
                on_step()
        if status != "ok":
            break
        eval_gen.manual_seed(seed + 2)
        test = classification_metrics(model.predict(curve_x, train.curve_samples, eval_gen), curve_y)
        point = {"neg_elbo": sums["neg_elbo"] / batches, "train_nll": sums["nll"] / batches,
                 "kl_per_example": sums["kl_per_example"] / batches,
                 "test_nll": test["nll"], "test_acc": test["acc"], "test_ece": test["ece"]}
        for name in CURVES:
            curves[name].append(point[name])
        if on_epoch is not None:
            on_epoch(epoch + 1, point)
    if status == "ok":
        eval_gen.manual_seed(seed + 3)
        final = classification_metrics(model.predict(data.x_test, train.eval_samples, eval_gen), data.y_test)
        metrics = {f"test_{k}": v for k, v in final.items()}
    else:
        metrics = {"test_nll": math.nan, "test_acc": math.nan, "test_ece": math.nan}
    return VIResult(metrics, curves, status, model.num_variational, model.layout.num_fixed,
                    time.perf_counter() - started)
