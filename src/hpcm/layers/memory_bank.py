"""Multi-reference memory bank for HPCM's progressive context model (spec multiref.md §7).

A per-image bank of compact references written by earlier coding steps, retrieved by cosine similarity
and fused into the current context through a gated residual whose last projection starts at zero, so that
a freshly built bank leaves HPCM unchanged (output == input, bitwise).

Pieces
------
``FullContextMemoryBank`` (one scale):
  - write ``x`` (B, C, h, w) -> key (B, Ck) = mean_hw(GroupNorm(conv1x1_{C->Ck}(x)))
                                value (B, Cv, R, R) = adaptive_avg_pool_R(GELU(conv1x1_{C->Cv}(dwconv3x3(x))))
    with Ck = Cv = max(2, C // compress_ratio) and R = value_resolution. Entries go into a FIFO buffer of
    ``max_refs`` entries (oldest evicted first).
  - read ``cur`` (B, C, h, w): query (B, Ck) = mean_hw(GroupNorm(conv1x1(cur))); score_n = cos(query, key_n)
    per sample; order = stable sort of (-score) (ties: lowest buffer index, i.e. the oldest entry, wins);
    ``topk`` mode keeps the first k of that order, ``soft`` mode keeps all entries; weights =
    softmax(score / tau) over the kept entries; reading = sum_n w_n value_n (B, Cv, R, R).
  - decode + upsample: the reading goes through the value decoder (conv1x1 Cv->Cv, GELU) at R x R and is
    then brought to (h, w) by **integer nearest-neighbour replication**: output cell (i, j) copies stored cell
    (floor(i*R/h), floor(j*R/w)). It is an index gather computed with integer arithmetic from the shapes only
    (no interpolation weights, no align_corners), so encoder and decoder get identical tensors. Being
    pointwise-compatible, decoding at R x R before upsampling equals decoding after it.
  - fuse: hidden = GELU(conv1x1_{C+Cv->Cv}([cur, read])); delta = conv1x1_{Cv->C}(hidden) (weight and bias
    zero at init); gate = sigmoid(conv1x1_{Cv->C}(hidden)). The output is
    ``gate*fusion + (1-gate)*cur`` with ``fusion = cur + delta``, evaluated as ``cur + gate*delta`` so that a
    zero delta returns ``cur`` exactly. An empty bank also returns ``cur`` unchanged.
  - tau = clamp(exp(log_tau), tau_min, tau_max), learnable (init 0.1, range [0.02, 1]).

``HierarchicalMemoryManager`` (one bank per enabled scale s1/s2/s3) and the step protocol. The modules hold
weights only; everything that depends on the image (entries, write ids, read log, batch size) is a
``MemoryBankState`` made for each pass and carried by the step loop beside the coder::

    state = mem.new_state(B)                       # every forward / compress / decompress, before step 1
    mem.write(state, "s1", C1)                     # optional: step 1's hyper context (HPCM does this)
    for step in schedule:                          # static schedule, identical in all three modes
        if step starts a new scale:                # after the last step of the previous scale
            mem.transfer(state, scale)             # s1 -> s2 -> s3 entry transfer
        ... psi = prior(...); C = cell(psi, C) ...
        C = mem.read_and_fuse(state, scale, C)     # reads entries written at EARLIER steps only
        mem.write(state, scale, psi)               # the step's context psi, before fusion; commit point
        ... code the step's symbols with split(psi) ...

``mem.step(state, scale, C, psi)`` does the last two lines in that order (any decodable tensor may be
stored). A single ``FullContextMemoryBank`` works the same way on a plain list of entries
(``bank.write(entries, x)``, ``bank.read_and_fuse(entries, cur, log)``).

HPCM's seam (``hpcm.models.hpcm.HPCM.context_pass``, one code path for forward, compress and decompress)::

    state = mem.new_state()                        # batch size bound on first use
    step 1:      C = [sigma1 | mu1] (gathered h_s(z-hat));  mem.write_initial(state, step, C)  # s1, no read
    steps 2..11: psi = prior(...); C = cell(psi, C); C = mem(state, step, C)
                 # transfer if step.starts_scale, read_and_fuse(C), write C (before fusion)
                 # (step 11 skips the last two: nothing reads the context after the last step)

What the model stores, and why it is decodable: the **context C right after the step's cell**, before the
bank's own fusion (C_t = cell(psi_t, C_{t-1}), psi_t = prior(adaptor([C_{t-1}, y-hat_{<t}]))), and at step 1
the hyper context. Each is a function of z-hat, of the y-hat of steps < t and of fixed weights (in the
training forward the STE y-hat is zero wherever no earlier step coded, since each step adds
``round((y - mu) * mask)``); the step-t symbols are coded after C_t exists, with psi_t's sigma and mu.
C rather than psi is stored because (a) C_t already holds psi_t mixed with the earlier context by the cell,
(b) the step-1 entry must be C (there is no psi at step 1), so all entries are of one kind, and (c) the
seam passes only C.
The step-1 write gives s1's only read (step 2) an entry, so every bank's read side is in the autograd graph
(no unused parameters under DDP). With a single kept reference (``topk_refs`` = 1, or one stored entry) the
softmax weight is the constant 1, so the query/key encoders and tau then get an exactly zero gradient from
that read (top-1 selection is not differentiable); they are still in the graph.

The fixed commit point is "right after the read of the same step", so a read never sees its own step's
entry, and the order is the same in forward, compress and decompress; the write order, capacities,
eviction, tie-breaking and transfer times are static functions of the schedule, not of the data.

Transfer (``enable_hierarchical_transfer``): ``transfer(to_scale)`` **moves** every entry held by the banks of
coarser scales (s1 before s2, each oldest first) into the target bank by pushing them one at a time through
the target's FIFO: when they do not fit, the oldest ones are evicted (the most recent ``max_refs`` survive).
Keys are globally pooled and values are stored at R x R, so entries move unchanged (no resampling). The
coarser banks are left empty. If ``to_scale`` has no bank the call does nothing (coarser entries wait for the
next scale that has one). With transfer disabled the call only drops coarser entries (they can never be read
again), so each scale starts with an empty bank.

Per-image state: every tensor keeps the batch dimension and every operation (GroupNorm, pooling,
similarity, sort, softmax, weighted sum) is per sample, so an image alone and inside a batch give the same
result. No BatchNorm, no dropout, no noise. Similarity is an elementwise product and sum in float32 (no
matmul, hence no TF32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpcm.layers.memory_config import (  # noqa: F401 (re-exported)
    MEMORY_PRESETS,
    MODES,
    MULTIREF_ACCURATE,
    MULTIREF_DEFAULT,
    MULTIREF_LIGHT,
    SCALES,
    MemoryBankConfig,
)


def compressed_width(channels: int, compress_ratio: int) -> int:
    """Key/value width ``channels // compress_ratio``, at least 2 (and at most ``channels``).

    A ratio that does not divide ``channels`` rounds down; tiny widths are raised to 2 so that the key's
    GroupNorm has at least two channels per group (see ``_key_groups``).
    """
    return min(channels, max(2, channels // compress_ratio)) if channels >= 2 else channels


def _key_groups(width: int, max_groups: int = 8) -> int:
    """Largest group count <= ``max_groups`` dividing ``width`` with >= 2 channels per group (else 1).

    GroupNorm followed by global average pooling cancels each group's mean: with one channel per group the
    pooled key would be the constant GroupNorm bias and carry no information, hence the >= 2 rule.
    """
    for g in range(min(max_groups, width // 2), 0, -1):
        if width % g == 0:
            return g
    return 1


def nearest_index(out_size: int, in_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Source index per output position for integer nearest replication: ``floor(i * in_size / out_size)``."""
    return torch.div(torch.arange(out_size, device=device) * in_size, out_size, rounding_mode="floor")


def upsample_nearest_exact(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, R, S) -> (B, C, h, w): out[..., i, j] = x[..., floor(i*R/h), floor(j*S/w)] (shape-only)."""
    h, w = size
    r, s = x.shape[-2:]
    if (r, s) == (h, w):
        return x
    x = x.index_select(-2, nearest_index(h, r, x.device))
    return x.index_select(-1, nearest_index(w, s, x.device))


# ---------------------------------------------------------------------------------------------------------
# single-scale bank
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MemoryEntry:
    """One stored reference: key (B, Ck), value (B, Cv, R, R), global write id, scale it was written at."""

    key: torch.Tensor
    value: torch.Tensor
    entry_id: int
    origin: str = ""


@dataclass
class ReadRecord:
    """One read: buffer positions (B, k) (oldest = 0), their entry ids (B, k) and weights (B, k)."""

    scale: str
    indices: torch.Tensor
    entry_ids: torch.Tensor
    weights: torch.Tensor


def entries_bytes(entries: list[MemoryEntry]) -> int:
    """Bytes held by the keys and values of ``entries``."""
    return sum(e.key.numel() * e.key.element_size() + e.value.numel() * e.value.element_size()
               for e in entries)


@dataclass
class MemoryBankState:
    """The per-pass state of a :class:`HierarchicalMemoryManager`: everything that depends on the image.

    Made by ``manager.new_state()`` at the start of every forward, compress and decompress and carried by
    the step loop beside the coder; the modules hold weights only, so no image's entries outlive its pass.
    ``entries[scale]``: that bank's FIFO, oldest first (one list per bank); ``next_id``: the id of the next
    write (writes so far); ``read_log``: every read, in call order; ``batch_size``: bound on first use when
    not given.
    """

    entries: dict[str, list[MemoryEntry]]
    batch_size: int | None = None
    next_id: int = 0
    read_log: list[ReadRecord] = field(default_factory=list)

    @property
    def last_indices(self) -> list[torch.Tensor]:
        """Buffer positions (B, k) retrieved by each read of this pass, in call order."""
        return [r.indices for r in self.read_log]

    @property
    def last_entry_ids(self) -> list[torch.Tensor]:
        """Global write ids (B, k) retrieved by each read of this pass (write order, from 0)."""
        return [r.entry_ids for r in self.read_log]

    @property
    def num_writes(self) -> int:
        """Writes committed in this pass (ids handed out so far)."""
        return self.next_id

    def num_entries(self) -> dict[str, int]:
        """Entries currently held per scale."""
        return {s: len(e) for s, e in self.entries.items()}

    def memory_bytes(self) -> int:
        """Bytes held by all stored keys and values."""
        return sum(entries_bytes(e) for e in self.entries.values())


class _PooledEncoder(nn.Module):
    """conv1x1 (no bias) -> GroupNorm -> global mean: (B, C, h, w) -> (B, Ck)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, width, kernel_size=1, bias=False)
        self.norm = nn.GroupNorm(_key_groups(width), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x)).mean(dim=(-2, -1))


class FullContextMemoryBank(nn.Module):
    """One scale's bank: FIFO of (key, value) references, cosine top-k/soft retrieval, gated residual fusion.

    channels: C of the context (2M in HPCM). See the module docstring for the exact computation.
    ``forward(cur)`` is ``read_and_fuse(cur)``: (B, C, h, w) -> (B, C, h, w).
    """

    def __init__(
        self,
        channels: int,
        max_refs: int = 4,
        topk: int = 2,
        value_resolution: int = 8,
        compress_ratio: int = 4,
        mode: str = "topk",
        temperature: float = 0.1,
        temperature_range: tuple[float, float] = (0.02, 1.0),
        learnable_temperature: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        if max_refs < 1 or topk < 1 or value_resolution < 1:
            raise ValueError("max_refs, topk and value_resolution must be >= 1")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.channels = channels
        self.max_refs = max_refs
        self.topk = topk
        self.value_resolution = value_resolution
        self.mode = mode
        self.name = name
        self.key_dim = compressed_width(channels, compress_ratio)
        self.value_dim = self.key_dim
        self.temperature_range = (float(temperature_range[0]), float(temperature_range[1]))
        log_tau = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau)

        cv = self.value_dim
        self.key_encoder = _PooledEncoder(channels, self.key_dim)
        self.query_encoder = _PooledEncoder(channels, self.key_dim)
        self.value_encoder = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels),
            nn.Conv2d(channels, cv, kernel_size=1),
            nn.GELU(),
        )
        self.value_decoder = nn.Sequential(nn.Conv2d(cv, cv, kernel_size=1), nn.GELU())
        self.fusion_in = nn.Sequential(nn.Conv2d(channels + cv, cv, kernel_size=1), nn.GELU())
        self.fusion_out = nn.Conv2d(cv, channels, kernel_size=1)
        self.gate = nn.Conv2d(cv, channels, kernel_size=1)
        nn.init.zeros_(self.fusion_out.weight)
        nn.init.zeros_(self.fusion_out.bias)

    @property
    def temperature(self) -> torch.Tensor:
        """Clamped softmax temperature tau (0-dim tensor)."""
        lo, hi = self.temperature_range
        return self.log_temperature.exp().clamp(lo, hi)

    # ---- write -------------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, entry_id: int = 0, origin: str = "") -> MemoryEntry:
        """Build an entry from x (B, C, h, w): key (B, Ck), value (B, Cv, R, R)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, h, w), got {tuple(x.shape)}")
        key = self.key_encoder(x)
        r = self.value_resolution
        value = F.adaptive_avg_pool2d(self.value_encoder(x), (r, r))
        return MemoryEntry(key=key, value=value, entry_id=entry_id, origin=origin or self.name)

    def push(self, entries: list[MemoryEntry], entry: MemoryEntry) -> MemoryEntry | None:
        """Append ``entry`` to this bank's FIFO ``entries`` (in place); if it is then over ``max_refs`` the
        oldest entry is evicted and returned."""
        if entries and entry.key.shape[0] != entries[0].key.shape[0]:
            raise ValueError("entry batch size differs from the stored entries")
        if entry.key.shape[-1] != self.key_dim or entry.value.shape[1:] != (
            self.value_dim, self.value_resolution, self.value_resolution
        ):
            raise ValueError("entry key/value shapes do not match this bank")
        entries.append(entry)
        if len(entries) > self.max_refs:
            return entries.pop(0)
        return None

    def write(self, entries: list[MemoryEntry], x: torch.Tensor, entry_id: int | None = None) -> MemoryEntry:
        """Encode x (B, C, h, w) and push it onto ``entries`` (FIFO). Returns the new entry.

        ``entry_id`` None: one more than the newest entry's (0 for an empty list).
        """
        if entry_id is None:
            entry_id = entries[-1].entry_id + 1 if entries else 0
        entry = self.encode(x, entry_id)
        self.push(entries, entry)
        return entry

    # ---- read --------------------------------------------------------------------------------------------

    def select(self, scores: torch.Tensor) -> torch.Tensor:
        """Deterministic ranking: scores (B, N) -> positions (B, k), best first, ties to the lowest index.

        ``topk`` mode keeps k = min(topk, N); ``soft`` mode keeps all N.
        """
        order = torch.sort(-scores, dim=1, stable=True).indices
        k = scores.shape[1] if self.mode == "soft" else min(self.topk, scores.shape[1])
        return order[:, :k]

    def retrieve(
        self, entries: list[MemoryEntry], cur: torch.Tensor
    ) -> tuple[torch.Tensor, ReadRecord] | None:
        """Weighted reading (B, Cv, R, R) of ``entries`` and its record for query cur (B, C, h, w); None if
        there are no entries."""
        if not entries:
            return None
        b = cur.shape[0]
        if entries[0].key.shape[0] != b:
            raise ValueError(f"batch size {b} differs from the stored {entries[0].key.shape[0]}")
        keys = torch.stack([e.key for e in entries], dim=1).float()  # (B, N, Ck)
        values = torch.stack([e.value for e in entries], dim=1)  # (B, N, Cv, R, R)
        ids = torch.tensor([e.entry_id for e in entries], device=cur.device)
        query = self.query_encoder(cur).float()  # (B, Ck)
        eps = 1e-8
        qn = query / query.norm(dim=-1, keepdim=True).clamp_min(eps)
        kn = keys / keys.norm(dim=-1, keepdim=True).clamp_min(eps)
        scores = (qn.unsqueeze(1) * kn).sum(dim=-1)  # (B, N) cosine similarity
        idx = self.select(scores.detach())  # (B, k)
        weights = torch.softmax(scores.gather(1, idx) / self.temperature, dim=1)  # (B, k)
        picked = values[torch.arange(b, device=cur.device).unsqueeze(1), idx]  # (B, k, Cv, R, R)
        reading = (weights.to(picked.dtype)[:, :, None, None, None] * picked).sum(dim=1)
        record = ReadRecord(self.name, idx, ids[idx], weights.detach())
        return reading, record

    def fuse(self, cur: torch.Tensor, reading: torch.Tensor) -> torch.Tensor:
        """Gated residual: cur (B, C, h, w), reading (B, Cv, R, R) -> cur + gate * delta (B, C, h, w)."""
        decoded = upsample_nearest_exact(self.value_decoder(reading), cur.shape[-2:])
        hidden = self.fusion_in(torch.cat([cur, decoded], dim=1))
        delta = self.fusion_out(hidden)
        gate = torch.sigmoid(self.gate(hidden))
        return cur + gate * delta

    def read_and_fuse(
        self, entries: list[MemoryEntry], cur: torch.Tensor, log: list[ReadRecord] | None = None
    ) -> torch.Tensor:
        """Retrieve from ``entries`` (those stored so far), fuse into cur (B, C, h, w); no entries -> cur
        itself. The read's record is appended to ``log`` when given."""
        got = self.retrieve(entries, cur)
        if got is None:
            return cur
        reading, record = got
        if log is not None:
            log.append(record)
        return self.fuse(cur, reading)

    def forward(
        self, entries: list[MemoryEntry], cur: torch.Tensor, log: list[ReadRecord] | None = None
    ) -> torch.Tensor:
        return self.read_and_fuse(entries, cur, log)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, key_dim={self.key_dim}, max_refs={self.max_refs}, "
                f"topk={self.topk}, R={self.value_resolution}, mode={self.mode!r}")


# ---------------------------------------------------------------------------------------------------------
# hierarchical manager
# ---------------------------------------------------------------------------------------------------------


class HierarchicalMemoryManager(nn.Module):
    """One ``FullContextMemoryBank`` per enabled scale and the s1 -> s2 -> s3 transfer, over a per-pass
    :class:`MemoryBankState`.

    channels: C of the context (2M). ``config``: a ``MemoryBankConfig`` (or its dict). Banks live in
    ``self.banks[scale]`` (state-dict keys ``banks.s3.key_encoder.proj.weight`` etc.). The module holds
    weights only: every call takes the ``state`` made by :meth:`new_state` for the current pass. Calls for
    a scale without a bank are no-ops (``read_and_fuse`` returns its input object), so a step loop can call
    them at every step. See the module docstring for the step protocol.
    """

    def __init__(self, channels: int, config: MemoryBankConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        if config is None:
            config = MULTIREF_DEFAULT
        elif isinstance(config, dict):
            config = MemoryBankConfig.from_dict(config)
        self.config = config
        self.channels = channels
        self.banks = nn.ModuleDict({
            s: FullContextMemoryBank(
                channels,
                max_refs=config.max_refs(s),
                topk=config.topk_refs(s),
                value_resolution=config.value_resolution,
                compress_ratio=config.compress_ratio,
                mode=config.mode,
                temperature=config.temperature,
                temperature_range=config.temperature_range,
                learnable_temperature=config.learnable_temperature,
                name=s,
            )
            for s in SCALES if s in config.enabled_scales
        })

    # ---- mode --------------------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """Retrieval mode of every bank ("topk" or "soft"); settable, e.g. soft-all at inference."""
        return self.config.mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {value!r}")
        self.config = replace(self.config, mode=value)
        for bank in self.banks.values():
            bank.mode = value

    # ---- state -------------------------------------------------------------------------------------------

    def new_state(self, batch_size: int | None = None) -> MemoryBankState:
        """A fresh (empty) state for one pass over a batch of images: make one before step 1 of every
        forward, compress and decompress. ``batch_size`` None binds it to the batch dimension of the first
        tensor the state sees."""
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return MemoryBankState(entries={s: [] for s in self.banks}, batch_size=batch_size)

    def _check(self, state: MemoryBankState, x: torch.Tensor | None = None) -> None:
        if state.entries.keys() != self.banks.keys():
            raise ValueError(f"the state holds scales {sorted(state.entries)}, this manager has banks at "
                             f"{sorted(self.banks)}: make it with this manager's new_state()")
        if x is None:
            return
        if state.batch_size is None:
            state.batch_size = x.shape[0]
        if x.shape[0] != state.batch_size:
            raise ValueError(f"batch size {x.shape[0]} differs from the state's {state.batch_size}")

    def has_bank(self, scale: str) -> bool:
        """Whether ``scale`` has a bank."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}")
        return scale in self.banks

    def num_parameters(self, per_scale: bool = False) -> int | dict[str, int]:
        """Parameter count of all banks, or a dict per scale."""
        counts = {s: sum(p.numel() for p in b.parameters()) for s, b in self.banks.items()}
        return counts if per_scale else sum(counts.values())

    # ---- step API ----------------------------------------------------------------------------------------

    def transfer(self, state: MemoryBankState, to_scale: str) -> None:
        """Scale change to ``to_scale``: move coarser banks' entries into its bank (see module docstring)."""
        if to_scale not in SCALES:
            raise ValueError(f"unknown scale {to_scale!r}")
        self._check(state)
        if to_scale not in self.banks:  # no bank here: coarser entries wait for the next scale with one
            return
        moved: list[MemoryEntry] = []
        for s in SCALES[: SCALES.index(to_scale)]:
            if s in self.banks:
                moved.extend(state.entries[s])
                state.entries[s] = []
        if self.config.enable_hierarchical_transfer:
            target, entries = self.banks[to_scale], state.entries[to_scale]
            for entry in moved:
                target.push(entries, entry)

    def read_and_fuse(self, state: MemoryBankState, scale: str, context: torch.Tensor) -> torch.Tensor:
        """Fuse references written at earlier steps into context (B, C, h, w) at ``scale``."""
        if not self.has_bank(scale):
            return context
        self._check(state, context)
        return self.banks[scale].read_and_fuse(state.entries[scale], context, state.read_log)

    def write(self, state: MemoryBankState, scale: str, x: torch.Tensor) -> None:
        """Commit x (B, C, h, w) (decodable: psi or C of this step, never y) to the bank of ``scale``."""
        if not self.has_bank(scale):
            return
        self._check(state, x)
        self.banks[scale].write(state.entries[scale], x, entry_id=state.next_id)
        state.next_id += 1

    def step(
        self, state: MemoryBankState, scale: str, context: torch.Tensor, store: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One step: ``read_and_fuse(state, scale, context)``, then ``write(state, scale, store)`` (default:
        ``context``). Returns the fused context (B, C, h, w).
        """
        out = self.read_and_fuse(state, scale, context)
        self.write(state, scale, context if store is None else store)
        return out

    def write_initial(self, state: MemoryBankState, step: Any, context: torch.Tensor) -> None:
        """Step 1 of HPCM's seam (no network, no read): store the hyper context C1 = [sigma1 | mu1].

        context (B, C, H/4, W/4) is gathered from h_s(z-hat) only, so the decoder has it before any y symbol;
        it goes to the bank of ``step``'s scale (s1; a no-op if s1 has no bank), so step 2 has an entry to
        read.
        """
        self.write(state, _scale_name(step), context)

    def forward(
        self, state: MemoryBankState, step: Any, context: torch.Tensor, store: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Step-loop seam ``C = memory(state, step, C)`` (``hpcm.models.hpcm.HPCM.memory``), after the cell.

        ``step`` needs ``.scale`` (1/2/3 or "s1"/"s2"/"s3") and ``.starts_scale``; a step that starts a scale
        first transfers, then ``step(state, scale, context, store)`` reads and writes (store defaults to the
        context before fusion). Returns the fused context (B, C, h, w).
        """
        scale = _scale_name(step)
        if getattr(step, "starts_scale", False) and scale != "s1":
            self.transfer(state, scale)
        return self.step(state, scale, context, store)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, config={self.config}"


def _scale_name(step: Any) -> str:
    """"s1"/"s2"/"s3" for a step whose ``.scale`` is 1/2/3 (``hpcm.models.schedule.Step``) or the name."""
    return step.scale if isinstance(step.scale, str) else f"s{int(step.scale)}"
