"""Resampling to 16 kHz with torchaudio's filter, block by block: the same samples however the
input is cut, and within float32 rounding of ``torchaudio.functional.resample``.

torchaudio's ``resample`` is a polyphase FIR (one filter phase per output sample, a stride of
``orig`` input samples per ``new`` outputs). Every output group reads ``2 * width + orig``
input samples; :class:`BlockResampler` keeps the ones the next group needs, with torchaudio's
zero padding at both ends of the signal, so a signal fed in blocks gives the samples the
whole-signal call gives. :class:`PhaseResampler` computes the same filter in bounded memory
for rates whose dense filter would be huge. :func:`resample` is one block of either.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from audioembed import frontend
from audioembed.errors import AudioError

# Output samples the resampler computes per matrix product (about 1 s). See BlockResampler.
# Fewer, larger products are faster; but a stream's output comes a tile at a time.
RESAMPLE_TILE = 16384

# Filter taps below this are those torchaudio's window clamps to its zero (~1e-24 at the usual
# rates: outside the filter's lowpass_filter_width zero crossings). Leaving them out changes an
# output by less than 1e-11 of its scale, far below float32 rounding, and skips most of the
# dense filter: at 44.1 kHz each phase reaches 33 of 475 taps.
NEGLIGIBLE_TAP = 1e-12

# Bands of the banded product (see _banded_kernel): the most, up to this, that divide the
# phases into bands of at least MIN_BAND_PHASES columns. Narrower products run far below the
# CPU's multiply-add rate, wider ones multiply more of the filter's zeros.
MAX_BANDS = 10
MIN_BAND_PHASES = 16

# torchaudio's filter bank is a dense (new, 2 * width + orig) matrix for the rate ratio
# orig / new reduced by their gcd: a few hundred thousand numbers for the usual rates (11025 Hz,
# the largest, 640 x 455), but for rates that share few factors with 16 kHz it is enormous
# (16001 Hz: 16000 x 16014, a GB in float32, and as much again to build it). Above this many
# elements the phase-table resampler below computes the same filter with bounded memory.
MAX_DENSE_KERNEL = 1 << 20

# Taps times outputs per product in the phase-table resampler: a few MB of transient buffers.
PHASE_TILE_ELEMENTS = 1 << 20


def _reduced(sr: int) -> tuple[int, int]:
    g = math.gcd(sr, frontend.SAMPLE_RATE)
    return sr // g, frontend.SAMPLE_RATE // g


def _kernel_width(orig: int, new: int) -> int:
    """torchaudio's ``width``: input samples each side of an output that its filter reaches."""
    base = min(orig, new) * frontend.RESAMPLE_ROLLOFF
    return math.ceil(frontend.RESAMPLE_LOWPASS_FILTER_WIDTH * orig / base)


def uses_dense_kernel(sr: int) -> bool:
    """Whether ``sr`` is resampled with torchaudio's own filter matrix (all the usual rates)."""
    orig, new = _reduced(sr)
    return new * (2 * _kernel_width(orig, new) + orig) <= MAX_DENSE_KERNEL


@lru_cache(maxsize=8)
def _resample_kernel(sr: int) -> tuple[torch.Tensor, int]:
    """torchaudio's filter bank for ``sr``, as a ``(taps, new)`` matrix, and its ``width``.

    Computed by the function ``torchaudio.functional.resample`` calls, with the dtype it passes
    (that of a float32 waveform), so the filter is torchaudio's to the bit.
    """
    from torchaudio.functional.functional import _get_sinc_resample_kernel

    g = math.gcd(sr, frontend.SAMPLE_RATE)
    kernel, width = _get_sinc_resample_kernel(
        sr, frontend.SAMPLE_RATE, g, frontend.RESAMPLE_LOWPASS_FILTER_WIDTH,
        frontend.RESAMPLE_ROLLOFF, frontend.RESAMPLE_METHOD, None, torch.device("cpu"),
        torch.float32)
    return kernel[:, 0, :].T.contiguous(), width


def groups_per_product_row(sr: int) -> int:
    """Output groups of :func:`_resample_kernel` that one row of the resampler's product
    computes: 1, or for ratios with few phases (48 kHz: 1 output per 3 inputs) the power of
    two that gives ``MIN_BAND_PHASES`` of them, so the product is not a matrix-vector one."""
    _, new = _reduced(sr)
    m = 1
    while new * m < MIN_BAND_PHASES:
        m *= 2
    return m


@lru_cache(maxsize=8)
def _grouped_kernel(sr: int) -> torch.Tensor:
    """:func:`_resample_kernel` for :func:`groups_per_product_row` ``m`` consecutive output
    groups at once: ``(taps + (m - 1) * orig, m * new)``, group ``i``'s filter in columns
    ``i * new ..`` shifted down ``i * orig`` rows (its inputs start ``orig`` later), zeros
    elsewhere. The same taps on the same inputs as ``m`` separate groups."""
    kernel, _ = _resample_kernel(sr)
    m = groups_per_product_row(sr)
    if m == 1:
        return kernel
    orig, _ = _reduced(sr)
    taps, new = kernel.shape
    grouped = kernel.new_zeros(taps + (m - 1) * orig, m * new)
    for i in range(m):
        grouped[i * orig:i * orig + taps, i * new:(i + 1) * new] = kernel
    return grouped


@lru_cache(maxsize=8)
def _banded_kernel(sr: int) -> tuple[torch.Tensor, int, int]:
    """:func:`_grouped_kernel` cut into ``bands`` blocks of consecutive phases, each holding only
    the taps its phases reach: ``(bands, band, phases // bands)``, the row offset ``stride``
    between bands, and the rows the product reads, ``reach``.

    Band ``b`` multiplies rows ``b * stride .. b * stride + band - 1`` of the ``(rows, taps)``
    input matrix (rows past ``taps`` are zeros of the filter), so one batched product with
    uniform strides replaces the dense one at a fraction of the work (44.1 kHz: 10 x 76 x 16
    against 475 x 160 multiply-adds per output group).
    """
    kernel = _grouped_kernel(sr)
    taps, new = kernel.shape
    bands = max(b for b in range(1, MAX_BANDS + 1)
                if new % b == 0 and (new // b >= MIN_BAND_PHASES or b == 1))
    cols = new // bands
    used = kernel.abs() > NEGLIGIBLE_TAP
    rows = [used[:, b * cols:(b + 1) * cols].any(1).nonzero() for b in range(bands)]  # taps reached
    lo, hi = [int(r.min()) for r in rows], [int(r.max()) + 1 for r in rows]
    stride = min([lo[b] // b for b in range(1, bands)], default=0)
    band = max(hi[b] - b * stride for b in range(bands))
    padded = torch.cat([torch.where(used, kernel, 0.0),
                        kernel.new_zeros(max(0, (bands - 1) * stride + band - taps), new)])
    blocks = [padded[b * stride:b * stride + band, b * cols:(b + 1) * cols] for b in range(bands)]
    return torch.stack(blocks).contiguous(), stride, max(taps, (bands - 1) * stride + band)


@lru_cache(maxsize=4)
def _phase_table(sr: int) -> tuple[torch.Tensor, int]:
    """torchaudio's filter for ``sr`` cut down to the taps each output phase reaches.

    Output ``j = p * new + i`` (phase ``i``) is centred at input ``j * orig / new``; only the
    ``2 * width + 1`` inputs from ``p * orig + (i * orig) // new - width`` on lie within the
    filter's ``lowpass_filter_width`` zero crossings (torchaudio's other taps are clamped to its
    window's zero, ~1e-40). Row ``i`` holds their weights, from torchaudio's formula evaluated
    in float64: ``(new, 2 * width + 1)``, at most 16000 rows of ~300 taps (384 kHz) or ~600
    (768 kHz).
    """
    orig, new = _reduced(sr)
    width = _kernel_width(orig, new)
    lowpass = frontend.RESAMPLE_LOWPASS_FILTER_WIDTH
    base = min(orig, new) * frontend.RESAMPLE_ROLLOFF
    i = np.arange(new, dtype=np.int64)[:, None]
    rel = (i * orig) // new - width + np.arange(2 * width + 1, dtype=np.int64)[None, :]
    # The distance in output periods, from exact integers: j/new and m/orig share no rounding.
    t = (rel * new - i * orig).astype(np.float64) / (orig * new) * base
    np.clip(t, -lowpass, lowpass, out=t)
    window = np.cos(t * math.pi / lowpass / 2) ** 2
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    return torch.from_numpy((sinc * window * (base / orig)).astype(np.float32)), width


class BlockResampler:
    """``torchaudio.functional.resample(x, sr, SAMPLE_RATE)`` of a signal fed in blocks.

    torchaudio pads the signal with ``width`` zeros on the left and ``width + orig`` on the
    right, and computes output group ``p`` (samples ``p*new .. p*new + new - 1``) from padded
    input ``p*orig .. p*orig + taps - 1``. The same products are computed here (leaving out the
    taps torchaudio's window clamps to ~1e-24, see :func:`_banded_kernel`), in tiles of a
    fixed number of groups aligned to the start of the signal: every tile is one batched product
    of the same shape (the last one's follows from the signal's length), so each output sample
    is the same float32 number however the signal was cut into blocks. (torchaudio's conv1d,
    like any product whose shape follows the input length, rounds differently for different
    lengths: by ~1e-7, which the log of a near-silent mel band can magnify past 1e-5.)
    :func:`resample` is this class on one block.

    Only for rates where :func:`uses_dense_kernel`; :func:`make_resampler` picks the class.
    """

    def __init__(self, sr: int):
        sr = check_rate(sr)
        self.orig, self.new = _reduced(sr)
        self.identity = sr == frontend.SAMPLE_RATE
        if not self.identity:
            kernel, width = _resample_kernel(sr)
            self._taps = kernel.shape[0]
            self.bands, self._stride, self._reach = _banded_kernel(sr)
            self._row_groups = groups_per_product_row(sr)  # output groups per product row
            self._buf = torch.zeros(width)
            self._right_pad = width + self.orig
            # Groups per product: a whole number of product rows.
            self._tile = max(1, RESAMPLE_TILE // (self.new * self._row_groups)) * self._row_groups
        self._n_in = 0
        self._n_out = 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Output samples that ``x`` (the next input samples) completes."""
        self._n_in += x.shape[-1]
        if self.identity:
            return x
        self._buf = torch.cat([self._buf, x])
        return self._run(final=False)

    def finish(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The remaining output samples, up to the length the whole-signal call gives, after
        the last input samples ``x`` if given: the samples ``push(x)`` then ``finish()`` give,
        in one product where they fit one tile (a short clip's whole signal)."""
        last = x if x is not None and x.shape[-1] else None
        if last is not None:
            self._n_in += last.shape[-1]
        if self.identity:
            return torch.zeros(0) if last is None else last
        # torchaudio's right padding, and the zeros past it that the last tile's product reads,
        # in the one copy that appends the last samples.
        length = self._buf.shape[0] + (0 if last is None else last.shape[0]) + self._right_pad
        tail = torch.zeros(self._right_pad + max(0, self._final_span(length) - length))
        self._buf = torch.cat([self._buf, tail] if last is None else [self._buf, last, tail])
        out = self._run(final=True, length=length)
        # torchaudio's length, computed as it does: a float32 ceil, which for long signals can
        # differ by one sample from the exact ceil(new * n / orig).
        target = int(torch.ceil(torch.as_tensor(self.new * self._n_in / self.orig)))
        keep = max(0, target - (self._n_out - out.shape[0]))
        self._n_out += keep - out.shape[0]
        return out[:keep]

    def _final_groups(self, length: int) -> int:
        """Output groups torchaudio's length gives a padded signal of ``length`` samples."""
        return max(0, (length - self._taps) // self.orig + 1)

    def _last_tile_groups(self, groups: int) -> int:
        """Groups in the signal's last tile: those left, in whole product rows."""
        m = self._row_groups
        left = groups - (-(-groups // self._tile) - 1) * self._tile  # past the full tiles
        return -(-left // m) * m

    def _final_span(self, length: int) -> int:
        """Samples the signal's last products read from a padded buffer of ``length`` samples:
        past it by the few zeros that the filter's banded layout multiplies by zero taps."""
        groups = self._final_groups(length)
        if groups == 0:
            return length
        tiles = -(-groups // self._tile)
        read = (tiles - 1) * self._tile + self._last_tile_groups(groups)  # groups the products compute
        return (read - self._row_groups) * self.orig + self._reach

    def _run(self, final: bool, length: int = 0) -> torch.Tensor:
        step, m = self.orig, self._row_groups
        # Output groups torchaudio's length gives (from its taps, for the padded signal of
        # ``length`` samples at the end); a tile is computed once the buffer holds every sample
        # its banded product reads (``reach`` >= taps: the excess meets zero rows of the
        # filter), a product row of m groups at a time. At the end, finish() has padded the
        # buffer to _final_span(length).
        if final:
            groups = self._final_groups(length)
            tiles = -(-groups // self._tile)
        else:
            groups = max(0, (self._buf.shape[0] - self._reach) // (m * step) + 1) * m
            tiles = groups // self._tile
        if tiles == 0:
            return torch.zeros(0)
        n_bands, band, cols = self.bands.shape
        outs = []
        with frontend.single_threaded():
            for t in range(tiles):
                # A fresh contiguous (bands, tile, band) array: the same shape, layout and
                # alignment for every tile, so the product rounds the same way wherever the
                # tile lies. The signal's last tile (computed here, in finish, however the
                # signal was cut: it reads the right padding) holds only the groups left, in
                # whole product rows: a shape that follows from the signal's length alone,
                # and a short clip no longer computes a second of outputs it drops.
                size = self._last_tile_groups(groups) if final and t == tiles - 1 else self._tile
                rows = self._buf[t * self._tile * step:].as_strided(
                    (n_bands, size // m, band), (self._stride, m * step, 1))
                out = torch.bmm(rows.contiguous(), self.bands)  # (bands, tile, cols)
                outs.append(out.permute(1, 0, 2).reshape(-1))
        self._buf = self._buf[tiles * self._tile * step:]
        out = torch.cat(outs)
        if final:
            out = out[:groups * self.new]
        self._n_out += out.shape[0]
        return out


class PhaseResampler:
    """The resampler for rates whose reduced ratio to 16 kHz is large (16001 Hz, 48001 Hz, ...).

    Each output sample is the dot product of its ``2 * width + 1`` nearest inputs with its
    phase's row of :func:`_phase_table`: memory is bounded by the table (<= 16000 rows) and one
    tile of gathered inputs, whatever the rate. As in :class:`BlockResampler`, outputs are
    computed in tiles of a fixed size aligned to the start of the signal, so they do not depend
    on how the input was cut into blocks. The length is the exact ``ceil(16000 * n / sr)``.
    """

    identity = False

    def __init__(self, sr: int):
        sr = check_rate(sr)
        self.orig, self.new = _reduced(sr)
        self.table, self.width = _phase_table(sr)
        taps = self.table.shape[1]
        self._tile = max(64, PHASE_TILE_ELEMENTS // taps)  # outputs per product
        self._offsets = torch.arange(taps)
        self._buf = torch.zeros(0)
        self._start = 0  # signal index of self._buf[0]
        self._n_in = 0
        self._n_out = 0

    def _first_input(self, j: int) -> int:
        p, i = divmod(j, self.new)
        return p * self.orig + (i * self.orig) // self.new - self.width

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self._n_in += x.shape[-1]
        self._buf = torch.cat([self._buf, x])
        # Tiles whose last output reads only inputs that have arrived.
        tiles = 0
        while self._first_input((self._n_out // self._tile + tiles + 1) * self._tile - 1) \
                + self.table.shape[1] <= self._n_in:
            tiles += 1
        return self._run(tiles, final_length=None)

    def finish(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The remaining output samples, after the last input samples ``x`` if given."""
        if x is not None and x.shape[-1]:
            self._n_in += x.shape[-1]
            self._buf = torch.cat([self._buf, x])
        target = -(-self.new * self._n_in // self.orig)
        tiles = -(-(target - self._n_out) // self._tile) if target > self._n_out else 0
        return self._run(tiles, final_length=target)

    def _run(self, tiles: int, final_length: int | None) -> torch.Tensor:
        if tiles == 0:
            return torch.zeros(0)
        taps = self.table.shape[1]
        first = self._n_out
        last = first + tiles * self._tile  # exclusive
        lo = self._first_input(first)
        hi = self._first_input(last - 1) + taps
        # The buffer as signal indices lo .. hi - 1: zeros before the signal and after its end.
        left = self._start - lo
        buf = self._buf
        if left > 0:
            buf = torch.cat([torch.zeros(left), buf])
        elif left < 0:
            buf = buf[-left:]
        if buf.shape[0] < hi - lo:
            buf = torch.cat([buf, torch.zeros(hi - lo - buf.shape[0])])
        outs = []
        with frontend.single_threaded():
            for t in range(tiles):
                j = torch.arange(first + t * self._tile, first + (t + 1) * self._tile)
                p, i = j // self.new, j % self.new
                start = p * self.orig + (i * self.orig) // self.new - self.width - lo
                rows = buf[start[:, None] + self._offsets]
                outs.append((rows * self.table[i]).sum(dim=1))
        out = torch.cat(outs)
        # Keep the inputs from the first one the next tile reads (never before lo).
        keep_from = self._first_input(last)
        self._buf, self._start = buf[keep_from - lo:], keep_from
        if final_length is not None:
            out = out[:max(0, final_length - first)]
        self._n_out = first + out.shape[0]
        return out


def make_resampler(sr: int) -> BlockResampler | PhaseResampler:
    """The block resampler for ``sr``: torchaudio's own filter matrix for the usual rates, the
    phase table where that matrix would be huge (bounded memory)."""
    return BlockResampler(sr) if uses_dense_kernel(check_rate(sr)) else PhaseResampler(sr)


@lru_cache(maxsize=16)
def check_rate(sr: int) -> int:
    """``sr`` as an int if it is a positive whole number of Hz (``16000``, or a float such as
    ``16000.0`` that equals one), else an AudioError."""
    if isinstance(sr, (float, np.floating)) and math.isfinite(sr) and float(sr).is_integer():
        sr = int(sr)
    if isinstance(sr, bool) or not (isinstance(sr, (int, np.integer)) and sr > 0):
        hint = ": a sample rate is a whole number of Hz" if isinstance(sr, (float, np.floating)) else ""
        raise AudioError(f"invalid sample rate {sr!r}{hint}")
    return int(sr)


def resample(samples: np.ndarray, sr: int) -> torch.Tensor:
    """Resample mono samples to ``frontend.SAMPLE_RATE`` with the documented torchaudio filter.

    The whole signal in one block of :func:`make_resampler`'s resampler, so a file read block
    by block gives the same samples to the bit.
    """
    return make_resampler(sr).finish(as_samples(samples))


def as_samples(samples: np.ndarray) -> torch.Tensor:
    """Mono samples as the float32 tensor the resamplers take (no copy when they are one)."""
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
