"""HPCM: learned image compression with a hierarchical progressive context model.

Faithful re-implementation of HPCM-Base/Large (spec hpcm.md §3-§8) with the official state-dict names.
The context model is ONE step loop (:meth:`HPCM.context_pass`) shared by training, evaluation,
encoding and decoding; a small coder strategy is the only mode-dependent piece:

- :class:`LikelihoodCoder`: rounds (eval) or straight-through rounds (training) ``y - μ`` and
  accumulates the residuals and scales for the GGM likelihood;
- :class:`EncodeCoder`: rounds ``y - μ`` and appends the packed symbols with their integer
  scale-table indexes to one symbol encoder, and each step's decision syndrome to the side stream;
- :class:`DecodeCoder`: resolves the step's decisions and decodes the packed symbols; it never sees y.

The coders live in :mod:`hpcm.entropy.conditional` and share every rule (μ grid, index rule, quantize,
ŷ = q + μ) through the model's :class:`ConditionalGGM` (``entropy_estimation``). Because everything except
``coder.code`` is the same code and every float → integer decision is resolved by the side stream, the
decoded ŷ equals the encoder's (and the eval forward's) ŷ bit for bit on any thread count, CPU or GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from hpcm.entropy.conditional import (  # noqa: F401 (re-exported: the step coders)
    CODING_VERSIONS,
    SIDE_FORMAT,
    ConditionalGGM,
    DecodeCoder,
    EncodeCoder,
    LikelihoodCoder,
    SideReader,
    SideWriter,
    StepCoder,
    latent_checksum,
    ste_round,
)
from hpcm.layers.conv import (
    MEMORY_LAYOUTS,
    PConvRB,
    conv1x1,
    conv2x2_down,
    conv4x4_down,
    deconv2x2_up,
    deconv4x4_up,
    run_in_layout,
)
from hpcm.layers.gain import QualityGains
from hpcm.models import schedule as S
from hpcm.models.config import HPCMConfig

#: Official names of the entropy-table buffers; they are rebuilt by ``update()`` and are therefore not
#: part of our state dict. Incoming state dicts (official checkpoints) may carry them; they are ignored.
OFFICIAL_TABLE_KEYS = (
    "scale_table",
    "quantized_cdf_z",
    "cdf_length_z",
    "offset_z",
    "quantized_cdf_y",
    "cdf_length_y",
    "offset_y",
)


# --- transforms (§3.2) ----------------------------------------------------------------------------


def _pconv_stack(ch: int, depth: int, cfg: HPCMConfig) -> list[nn.Module]:
    return [PConvRB(ch, partial_ratio=cfg.partial_ratio, mlp_ratio=cfg.mlp_ratio) for _ in range(depth)]


class AnalysisTransform(nn.Module):
    """g_a: (B, 3, H, W) -> y (B, M, H/16, W/16)."""

    def __init__(self, cfg: HPCMConfig) -> None:
        super().__init__()
        c1, c2, c3 = cfg.g_channels
        d1, d2, d3 = cfg.g_depths
        self.branch = nn.Sequential(
            conv4x4_down(3, c1), *_pconv_stack(c1, d1, cfg),
            conv2x2_down(c1, c2), *_pconv_stack(c2, d2, cfg),
            conv2x2_down(c2, c3), *_pconv_stack(c3, d3, cfg),
            conv2x2_down(c3, cfg.M),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return run_in_layout(self.branch, x)


class SynthesisTransform(nn.Module):
    """g_s: ŷ (B, M, h, w) -> x̂ (B, 3, 16h, 16w), not clamped."""

    def __init__(self, cfg: HPCMConfig) -> None:
        super().__init__()
        c1, c2, c3 = cfg.g_channels
        d1, d2, d3 = cfg.g_depths
        self.branch = nn.Sequential(
            deconv2x2_up(cfg.M, c3), *_pconv_stack(c3, d3, cfg),
            deconv2x2_up(c3, c2), *_pconv_stack(c2, d2, cfg),
            deconv2x2_up(c2, c1), *_pconv_stack(c1, d1, cfg),
            deconv4x4_up(c1, 3),
        )  # fmt: skip

    def forward(self, y: Tensor, layout: str = "channels_last") -> Tensor:
        """``layout``: the memory layout to run in (``MEMORY_LAYOUTS``); "contiguous" is how hpcm decoded
        before the channels-last synthesis (it reproduces the reconstruction checksums written then)."""
        return run_in_layout(self.branch, y, layout)


class HyperAnalysis(nn.Module):
    """h_a: y (B, M, h, w) -> z (B, N, h/4, w/4)."""

    def __init__(self, cfg: HPCMConfig) -> None:
        super().__init__()
        d0, d1 = cfg.h_a_depths
        self.branch = nn.Sequential(
            *_pconv_stack(cfg.M, d0, cfg), conv2x2_down(cfg.M, cfg.N),
            *_pconv_stack(cfg.N, d1, cfg), conv2x2_down(cfg.N, cfg.N),
        )  # fmt: skip

    def forward(self, y: Tensor) -> Tensor:
        return self.branch(y)


class HyperSynthesis(nn.Module):
    """h_s: ẑ (B, N, h, w) -> params (B, 2M, 4h, 4w) = [scales | means]."""

    def __init__(self, cfg: HPCMConfig) -> None:
        super().__init__()
        d0, d1 = cfg.h_s_depths
        self.branch = nn.Sequential(
            deconv2x2_up(cfg.N, cfg.N), *_pconv_stack(cfg.N, d0, cfg),
            deconv2x2_up(cfg.N, 2 * cfg.M), *_pconv_stack(2 * cfg.M, d1, cfg),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.branch(z)


# --- coder strategies: hpcm.entropy.conditional (re-exported here) -------------------------------------

# --- the memory seam ------------------------------------------------------------------------------


class ContextMemory(Protocol):
    """What the step loop needs from ``HPCM.memory`` (``hpcm.layers.memory_bank.HierarchicalMemoryManager``).

    The module holds weights only; ``new_state()`` makes the per-pass state (entries, ids, logs) that the
    step loop carries through one forward, compress or decompress and then drops.
    """

    def new_state(self) -> Any: ...

    def write_initial(self, state: Any, step: S.Step, context: Tensor) -> None: ...

    def __call__(self, state: Any, step: S.Step, context: Tensor) -> Tensor: ...


# --- the model ------------------------------------------------------------------------------------



@dataclass(frozen=True)
class DecodedLatent:
    """One decode's ŷ (1, M, h, w) and the number of decisions its side stream corrected (0 for format v1
    and wherever the decoder computed like the encoder)."""

    y_hat: Tensor
    corrections: int = 0

@dataclass(frozen=True)
class LatentStatistics:
    """What the context pass makes of one latent y (B, M, h, w), as the encoder would code it: ŷ, the
    per-element μ (on the format's grid) and σ of its entropy model, and the bits of its hyper latent ẑ.
    Symbols are ``round(y − mu)`` and ``y_hat = symbols + mu``. The latent refinement
    (:mod:`hpcm.codec.refine`) optimises y against these, held fixed between re-evaluations."""

    y_hat: Tensor
    mu: Tensor
    scales: Tensor
    z_bits: Tensor


class HPCM(nn.Module):
    """HPCM image codec built from an :class:`HPCMConfig` (official attribute names, §9)."""

    #: file-format versions whose coding rules ``forward``/``compress``/``decompress`` take as
    #: ``format_version`` (hpcm.models.protocol.format_versions)
    format_versions = CODING_VERSIONS
    #: memory layouts ``decompress`` runs g_s in, taken as ``synthesis_layout`` (protocol.synthesis_layouts)
    synthesis_layouts = tuple(MEMORY_LAYOUTS)

    def __init__(self, config: HPCMConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else HPCMConfig()
        self.config = cfg
        M, N = cfg.M, cfg.N
        self.M, self.N = M, N
        self.means_hyper = nn.Parameter(torch.zeros(1, N, 1, 1))
        self.scales_hyper = nn.Parameter(torch.ones(1, N, 1, 1))
        # entropy tables: rebuilt by update(), not part of the state dict
        self._z_table: Any = None
        self._z_table_key: Tensor | None = None
        self.entropy_estimation = ConditionalGGM(cfg.ggm_beta, cfg.scale_bound, cfg.likelihood_bound,
                                                 scale_table=cfg.scale_table)
        self.g_a = AnalysisTransform(cfg)
        self.g_s = SynthesisTransform(cfg)
        self.h_a = HyperAnalysis(cfg)
        self.h_s = HyperSynthesis(cfg)
        # one adaptor per step of a scale and one quant-step vector per network step: the schedule's counts
        n1, n2, n3 = S.ADAPTORS_PER_SCALE
        self.y_spatial_prior_adaptor_list_s1 = nn.ModuleList([conv1x1(3 * M, 3 * M) for _ in range(n1)])
        self.y_spatial_prior_adaptor_list_s2 = nn.ModuleList([conv1x1(3 * M, 3 * M) for _ in range(n2)])
        self.y_spatial_prior_adaptor_list_s3 = nn.ModuleList([conv1x1(3 * M, 3 * M) for _ in range(n3)])
        # context components: each spec is a registered kind that builds itself (hpcm.models.components)
        self.y_spatial_prior_s1_s2 = cfg.prior_s12.build(M)
        self.y_spatial_prior_s3 = cfg.prior_s3.build(M)
        # created on the default (CPU) device; the official code hard-codes CUDA here (§9.3)
        self.adaptive_params_list = nn.ParameterList(
            [nn.Parameter(torch.ones(1, 3 * M, 1, 1)) for _ in range(S.NUM_QUANT_PARAMS)]
        )
        self.attn_s1 = cfg.cells[0].build(2 * M)
        self.attn_s2 = cfg.cells[1].build(2 * M)
        self.attn_s3 = cfg.cells[2].build(2 * M)
        self.context_net = nn.ModuleList([spec.build(2 * M) for spec in cfg.context_nets])
        # Seam for a multi-reference memory bank (multiref, hpcm.layers.memory_bank; see ContextMemory):
        # every context pass makes state = memory.new_state(), stores step 1's hyper context
        # C = [sigma1 | mu1] with memory.write_initial(state, step, C) and runs C = memory(state, step, C)
        # after every cell update (steps 2..10; step 11's would never be read). Built from ``config.memory``
        # when given, else None; assignable (any module with those three methods).
        self.memory: nn.Module | None = None
        if cfg.memory is not None:
            from hpcm.layers.memory_bank import HierarchicalMemoryManager

            self.memory = HierarchicalMemoryManager(2 * M, cfg.memory)
        # Variable-rate models (config.rate_lambdas): quality-conditioned gains on y (hpcm.layers.gain).
        self.quality_gains: QualityGains | None = (
            QualityGains(cfg.rate_lambdas, M) if cfg.rate_lambdas else None
        )
        # provenance (hpcm.models.protocol.CodingModel): filled by hpcm.models.io.load_model
        self.weights_info: dict[str, Any] = {}
        self.preset: str | None = None

    # -- geometry --------------------------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """Image H and W must be multiples of this (64).

        The transforms need 64 (g_a /16, h_a /4); the schedule needs y (H/16) to be a multiple of 4
        (its periodic masks are cropped from 4x4 tiles, the s2-hyper copy then pairs equal counts),
        which 64 also gives. Attention windows pad grids that they do not divide, so they add nothing.
        On multiples of 256 (the official constraint) every step is identical to the official model.
        """
        return 64

    def _check_size(self, x: Tensor) -> None:
        m = self.size_multiple
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"H and W must be multiples of {m} (pad first), got {tuple(x.shape[-2:])}")

    # -- the step loop ---------------------------------------------------------------------------

    def _cells(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.attn_s1, self.attn_s2, self.attn_s3

    def _adaptor(self, step: S.Step) -> nn.Module:
        lists = (
            self.y_spatial_prior_adaptor_list_s1,
            self.y_spatial_prior_adaptor_list_s2,
            self.y_spatial_prior_adaptor_list_s3,
        )
        return lists[step.scale - 1][step.adaptor]

    def context_pass(self, params: Tensor, coder: StepCoder, y: Tensor | None = None) -> Tensor:
        """Run the 11 coding steps (§4.4). params (B, 2M, H, W) = h_s(ẑ); y (B, M, H, W) or None.

        Returns ŷ (B, M, H, W).
        """
        M = self.M
        _, _, H, W = params.shape
        scales_all, means_all = params[:, :M], params[:, M:]
        latents: dict[int, Tensor | None] = {1: None, 2: None, 3: y}
        if y is not None:
            latents[2] = S.gather_y_to_s2(y)
            latents[1] = S.gather_s2_to_s1(latents[2])
        memory = self.memory
        state = memory.new_state() if memory is not None else None  # per pass, carried like the coder
        coder.bind(self.entropy_estimation)
        cells = self._cells()
        y_hat: Tensor | None = None
        C: Tensor | None = None
        for step in S.STEPS:
            if step.index == 1:
                sigma, mu = S.gather_y_to_s1(scales_all), S.gather_y_to_s1(means_all)
                C = torch.cat((sigma, mu), dim=1)
                y_hat = torch.zeros_like(sigma)
                if memory is not None:
                    memory.write_initial(state, step, C)  # decoder-side (from z-hat only): s1 gets an entry
            else:
                if step.starts_scale:
                    C, y_hat = self._transition(step.scale, C, y_hat, scales_all, means_all, coder)
                prior = self.y_spatial_prior_s1_s2 if step.scale < 3 else self.y_spatial_prior_s3
                psi = prior(self._adaptor(step)(torch.cat((C, y_hat), dim=1)),
                            self.adaptive_params_list[step.param])
                if step is not S.LAST_STEP:  # the last step's context update would never be read
                    C = cells[step.scale - 1](psi, C)
                    if memory is not None:  # multi-reference memory bank seam
                        C = memory(state, step, C)
                sigma, mu = psi[:, :M], psi[:, M:]
            h, w = S.grid_shape(step.scale, H, W)
            mask = S.step_mask(step, M, h, w, params.device, params.dtype)
            y_hat = y_hat + coder.code(step, sigma, mu, mask, latents[step.scale])
        return y_hat

    def _transition(
        self, scale: int, C: Tensor, y_hat: Tensor, scales_all: Tensor, means_all: Tensor, coder: StepCoder
    ) -> tuple[Tensor, Tensor]:
        """Scatter C and ŷ to the grid of ``scale``, add the hyper term, apply the context net."""
        if scale == 2:
            scatter = S.scatter_s1_to_s2
            hyper = torch.cat((S.s2_hyper(scales_all), S.s2_hyper(means_all)), dim=1)
        else:
            scatter = S.scatter_s2_to_y
            hyper = torch.cat((S.s3_hyper(scales_all), S.s3_hyper(means_all)), dim=1)
        coder.next_scale(scatter)
        C = S.scatter_pair(C, scatter) + hyper
        C = self.context_net[scale - 2](C)
        return C, scatter(y_hat)

    # -- forward ---------------------------------------------------------------------------------

    # -- variable rate ---------------------------------------------------------------------------

    @property
    def variable_rate(self) -> bool:
        """True when one set of weights codes every quality in ``quality_range`` (gain vectors)."""
        return self.quality_gains is not None

    def _gains(self, quality: float | Tensor | None, batch: int) -> tuple[Tensor, Tensor] | None:
        """(gain, inverse gain) (B, M, 1, 1) for ``quality`` (a number or (B,)); None for fixed rate."""
        if self.quality_gains is None:
            if quality is not None:
                raise ValueError("this model has a fixed rate: it takes no quality argument")
            return None
        if quality is None:
            raise ValueError(f"variable-rate model: give a quality in {self.quality_gains.quality_range}")
        if not isinstance(quality, Tensor):
            quality = torch.full((batch,), self.quality_gains.check_quality(quality))
        if quality.numel() == 1:
            quality = quality.reshape(-1).expand(batch)
        return self.quality_gains.gains(quality)

    def rate_lambda(self, quality: float) -> float | None:
        """The λ (MSE, ``λ·255²·MSE + bpp``) this model was trained with at ``quality``; None when the
        model does not know it (fixed-rate weights)."""
        if self.quality_gains is None:
            return None
        q = torch.tensor([self.quality_gains.check_quality(quality)])
        return float(self.quality_gains.lmbda(q)[0])

    # -- the latent ------------------------------------------------------------------------------

    def _analyse(self, x: Tensor, gains: tuple[Tensor, Tensor] | None) -> Tensor:
        y = self.g_a(x)
        return y if gains is None else y * gains[0]

    def analyse(self, x: Tensor, quality: float | None = None) -> Tensor:
        """x (B, 3, H, W) -> the latent y (B, M, H/16, W/16) the context pass codes: g_a(x), times the
        gain of ``quality`` for variable-rate models."""
        self._check_size(x)
        return self._analyse(x, self._gains(quality, x.shape[0]))

    def synthesise(self, y_hat: Tensor, quality: float | None = None,
                   layout: str = "channels_last") -> Tensor:
        """ŷ (B, M, h, w) -> x̂ (B, 3, 16 h, 16 w), not clamped: the inverse gain of ``quality``, then g_s."""
        gains = self._gains(quality, y_hat.shape[0])
        if gains is not None:
            y_hat = y_hat * gains[1].to(y_hat.dtype)
        return self.g_s(y_hat, layout)

    @torch.no_grad()
    def latent_statistics(self, y: Tensor, format_version: int = SIDE_FORMAT) -> LatentStatistics:
        """The entropy model of latent y (B, M, h, w) as :meth:`compress` would code it (ẑ = round(h_a(y)),
        μ on the grid of ``format_version``)."""
        z_sym = torch.round(self.h_a(y) - self.means_hyper)
        params = self.h_s(z_sym + self.means_hyper)
        coder = LikelihoodCoder(False, self.entropy_estimation, format_version)
        y_hat = self.context_pass(params, coder, y)
        mu = y_hat - torch.round(coder.residual)  # exact: ŷ = round(y − μ) + μ element-wise
        z_bits = -torch.log2(self.entropy_estimation.likelihood(z_sym, self.scales_hyper)).sum()
        return LatentStatistics(y_hat=y_hat, mu=mu, scales=coder.scales, z_bits=z_bits)

    # -- forward ---------------------------------------------------------------------------------

    def forward(
        self, x: Tensor, training: bool | None = None, quality: float | Tensor | None = None,
        format_version: int = SIDE_FORMAT, latent: Tensor | None = None,
    ) -> dict[str, Any]:
        """x (B, 3, H, W) in [0, 1] -> {"x_hat": (B, 3, H, W), "likelihoods": {"y", "z"}} (§8.1).

        ``quality`` (a number or (B,) per image) is required by variable-rate models and refused by others.
        ``format_version``: whose μ rule to follow (1: the official μ; 2, 3: μ on the grid, the default).
        ``latent``: code this y (B, M, H/16, W/16) instead of :meth:`analyse` of x (a refined latent).
        """
        training = self.training if training is None else training
        self._check_size(x)
        gains = self._gains(quality, x.shape[0])
        y = self._analyse(x, gains) if latent is None else latent
        z = self.h_a(y)
        z_res = z - self.means_hyper
        if training:
            z_hat = ste_round(z_res) + self.means_hyper
            z_values = z_res + torch.empty_like(z_res).uniform_(-0.5, 0.5)
        else:
            z_values = torch.round(z_res)
            z_hat = z_values + self.means_hyper
        params = self.h_s(z_hat)
        coder = LikelihoodCoder(training, self.entropy_estimation, format_version)
        y_hat = self.context_pass(params, coder, y)
        res, scales = coder.residual, coder.scales
        y_values = res + torch.empty_like(res).uniform_(-0.5, 0.5) if training else torch.round(res)
        ggm = self.entropy_estimation
        likelihoods = {
            "y": ggm.likelihood(y_values, scales),
            "z": ggm.likelihood(z_values, self.scales_hyper),
        }
        if gains is not None:
            y_hat = y_hat * gains[1]
        return {"x_hat": self.g_s(y_hat), "likelihoods": likelihoods}

    # -- entropy coding --------------------------------------------------------------------------

    def update(self, force: bool = False) -> bool:
        """Build the y and z CDF tables (§7.1). Returns True if anything was (re)built.

        The y tables belong to ``entropy_estimation`` (:class:`ConditionalGGM`). The z table is rebuilt
        automatically whenever ``scales_hyper`` changed since the last build.
        """
        from hpcm.entropy import tables

        cfg = self.config
        built = self.entropy_estimation.update(force)
        key = self.scales_hyper.detach().flatten().to("cpu", torch.float64).clone()
        stale = self._z_table_key is None or not torch.equal(key, self._z_table_key)
        if force or self._z_table is None or stale:
            z_scales = self.scales_hyper.detach().flatten().float().cpu()
            self._z_table = tables.build_ggm_cdf_table(
                z_scales, beta=cfg.ggm_beta, scale_bound=cfg.scale_bound
            )
            self._z_table_key = key
            built = True
        return built

    @property
    def scale_table(self) -> Tensor:
        """The y scale table (built by :meth:`update`)."""
        return self.entropy_estimation.scale_table

    @property
    def _y_table(self) -> Any:
        return self.entropy_estimation.table

    def _z_indexes(self, h: int, w: int) -> Tensor:
        return torch.arange(self.N, dtype=torch.int32).view(1, self.N, 1, 1).expand(1, self.N, h, w)

    @torch.no_grad()
    def compress(self, x: Tensor, quality: float | None = None,
                 format_version: int = SIDE_FORMAT, latent: Tensor | None = None) -> dict[str, Any]:
        """x (1, 3, H, W), H, W multiples of ``size_multiple`` -> {"strings": [y, z, side],
        "shape": (h_z, w_z), "latent_crc": CRC-32 of ŷ (:func:`latent_checksum`)}.

        The side stream holds each step's decision syndrome in the layout of ``format_version`` (3, the
        default, or 2; docs/format.md). Format 1 (the official μ), or a model whose
        ``entropy_estimation.mean_grid_bits`` is None, has no side stream: strings [y, z].
        ``quality``: required by variable-rate models (the decoder needs the same value); the checksum
        covers the coded (gained) ŷ, before the inverse gain. ``latent``: code this y (1, M, H/16, W/16)
        instead of :meth:`analyse` of x (a refined latent, :mod:`hpcm.codec.refine`).
        """
        from hpcm.entropy.coder import SymbolEncoder

        self._check_size(x)
        if x.shape[0] != 1:
            raise ValueError("compress codes one image at a time (batch size 1)")
        gains = self._gains(quality, 1)
        self.update()
        y = self._analyse(x, gains) if latent is None else latent
        z = self.h_a(y)
        z_sym = torch.round(z - self.means_hyper)
        h_z, w_z = z.shape[-2:]
        z_enc = SymbolEncoder(self._z_table)
        z_enc.encode(z_sym.to(torch.int32).cpu().numpy(), self._z_indexes(h_z, w_z).numpy())
        z_bytes = z_enc.finish()
        params = self.h_s(z_sym + self.means_hyper)
        em = self.entropy_estimation
        y_enc = SymbolEncoder(em.table)
        side = em.side_writer(format_version) if em.grid_bits(format_version) is not None else None
        y_hat = self.context_pass(params, EncodeCoder(y_enc, em, side, format_version), y)
        y_bytes = y_enc.finish()
        coded = len(y_bytes) + len(z_bytes)
        strings = [y_bytes, z_bytes] + ([side.finish(coded)] if side is not None else [])
        return {"strings": strings, "shape": (int(h_z), int(w_z)), "latent_crc": latent_checksum(y_hat)}

    @torch.no_grad()
    def decompress(
        self, strings: list[bytes], shape: tuple[int, int], quality: float | None = None,
        format_version: int = SIDE_FORMAT, synthesis_layout: str = "channels_last",
    ) -> dict[str, Any]:
        """Inverse of :meth:`compress` -> {"x_hat": (1, 3, 64 h_z, 64 w_z) in [0, 1], "latent_crc",
        "corrections" (decisions the side stream corrected)}.

        ``synthesis_layout``: the memory layout g_s runs in ("contiguous" for files whose reconstruction
        checksum was taken that way: ``Header.recon_layout``); ŷ does not depend on it."""
        self._gains(quality, 1)  # checks the quality before decoding
        latent = self.decode_latent(strings, shape, format_version)
        crc = latent_checksum(latent.y_hat)
        x_hat = self.synthesise(latent.y_hat, quality, synthesis_layout).clamp_(0, 1)
        return {"x_hat": x_hat, "latent_crc": crc, "corrections": latent.corrections}

    @torch.no_grad()
    def decompress_latent(self, strings: list[bytes], shape: tuple[int, int],
                          format_version: int = SIDE_FORMAT) -> Tensor:
        """Decode ŷ (1, M, 4 h_z, 4 w_z) from [y, z, side] (the side stream in the layout of
        ``format_version``, 3 or 2) or [y, z] (format v1: official μ, whatever ``format_version`` says)."""
        return self.decode_latent(strings, shape, format_version).y_hat

    @torch.no_grad()
    def decode_latent(self, strings: list[bytes], shape: tuple[int, int],
                      format_version: int = SIDE_FORMAT) -> DecodedLatent:
        """:meth:`decompress_latent` with what the decode did: ŷ and the side stream's corrections."""
        from hpcm.entropy.coder import SymbolDecoder

        if len(strings) not in (2, 3):
            raise ValueError(f"expected 2 or 3 streams, got {len(strings)}")
        self.update()
        h_z, w_z = (int(s) for s in shape)
        dev, dtype = self.means_hyper.device, self.means_hyper.dtype
        z_idx = self._z_indexes(h_z, w_z)
        z_sym = SymbolDecoder(self._z_table, strings[1]).decode(z_idx.numpy())
        z_sym = torch.as_tensor(z_sym).reshape(1, self.N, h_z, w_z).to(device=dev, dtype=dtype)
        params = self.h_s(z_sym + self.means_hyper)
        em = self.entropy_estimation
        y_dec = SymbolDecoder(em.table, strings[0])
        if len(strings) == 2:  # format v1: the official, unquantised μ
            return DecodedLatent(self.context_pass(params, DecodeCoder(y_dec, em, version=1), None))
        side = em.side_reader(strings[2], format_version)
        y_hat = self.context_pass(params, DecodeCoder(y_dec, em, side, format_version), None)
        side.finish()
        y_dec.finish()
        return DecodedLatent(y_hat, side.corrections)

    # -- state dict ------------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # type: ignore[override]
        # official checkpoints carry (empty) entropy-table buffers; ours are rebuilt by update()
        for key in OFFICIAL_TABLE_KEYS:
            state_dict.pop(prefix + key, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
