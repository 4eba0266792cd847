"""ECM: electron correlation microscopy, live (seed 003; research note (d)).

A dark-field image series (the camera in imaging mode) becomes, per pixel, the
intensity autocorrelation g2(τ) and its KWW fit g2 = 1 + A exp(−2 (t/τ)^β), while
the series is recorded:

    frames ─► drift (register a static bright feature, :mod:`.drift`; smoothed over
              ±``smooth_frames``, so that many frames wait for their look-ahead) ─► undo shift
           ─► optional b×b binning ─► streaming multi-tau g2 per pixel (:mod:`.correlator`)
           ─► every ``refresh_frames`` (at most every ``refresh_s``) and at the end:
              KWW fits (:mod:`.kww`) ─► τ, β, A maps, reliability, τ histogram

Pixel-partitioned: each worker keeps the correlator of one band of rows (memory per
pixel independent of the series length) and sees every frame in time order. The
drift needs the whole field of view, so tiles get full frames (``full_frames``);
every worker registers the same frames the same way (deterministic), and the worker
of the first band reports the drift trace.

Temperature and frame time come from the run's plan metadata (``ecm_series`` puts
``temperature_K`` and ``frame_time_s`` there), so series at several temperatures
carry what is needed to compare them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import numpy as np

from .base import FrameChunk, Partial, PixelAnalyzer, ResultBuffers, ResultSpec, RunInfo, Tile
from .correlator import MultiTauCorrelator, multi_tau_lags
from .drift import DriftSmoother, DriftTracker, undo_shift
from .kww import fit_kww, kww_model, reliability, tau_histogram

__all__ = ["EcmAnalyzer", "EcmConfig", "DriftConfig"]

logger = logging.getLogger(__name__)


class DriftConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1); None: around the brightest spot
    upsample: int = 50
    rereference_every: int = 1000   # frames between reference renewals (0: always the first frame)
    overlap: int = 400              # frames registered to both references at a renewal
    smooth_frames: int = 25         # ± frames of the local linear fit of the shifts (0: raw shifts, no delay)


class EcmConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ECM recipe (one TOML section)."""

    per_level: int = 8
    n_levels: int | None = None       # None: enough levels for lags up to a quarter of the series
    binning: int = 1                  # b×b pixels summed before correlation
    frame_time: float | None = None   # s; None: the run's plan ``frame_time_s``, else 1 (lags in frames)
    refresh_frames: int = 500         # live maps every this many frames ...
    refresh_s: float = 1.0            # ... and at most this often (the fits take a moment per tile)
    reliability_factor: float = 40.0  # τ > T/factor flagged unreliable
    histogram_bins: int = 40
    max_iter: int = 100
    drift: DriftConfig = DriftConfig()

    def __post_init__(self) -> None:
        if self.per_level < 2 or self.per_level % 2 or self.binning < 1 or self.refresh_s < 0 \
                or self.refresh_frames < 1:
            raise ValueError("per_level must be even and >= 2, binning >= 1, refresh_frames >= 1, refresh_s >= 0")
        if self.frame_time is not None and not self.frame_time > 0:
            raise ValueError("frame_time must be > 0 s")


@dataclass
class _TileState:
    tile: Tile
    rows: slice
    correlator: MultiTauCorrelator
    drift: DriftTracker | None
    binned_shape: tuple[int, int]
    last_refresh: float = field(default_factory=time.monotonic)
    frames_since_refresh: int = 0
    mean_sum: np.ndarray | None = None
    smoother: DriftSmoother | None = None
    pending: list[np.ndarray] = field(default_factory=list)   # frames (tile rows + margin) awaiting their drift
    pending_index: list[int] = field(default_factory=list)     # their indices in the series (chunks may skip)
    next_frame: int = 0                                         # index of the frame the correlator expects next
    frames_fed: int = 0                                         # frames that arrived (lost ones excluded)


_MARGIN = 4  # rows kept beyond a tile's edges for the shift's interpolation

_MAPS = {"tau": ("s", "KWW relaxation time τ"), "beta": ("", "KWW stretching exponent β"),
         "A": ("", "KWW contrast A"), "fit_r2": ("", "weighted R² of the KWW fit"),
         "reliable": ("", "1 where τ <= T / reliability_factor (the series is long enough), else 0"),
         "mean_intensity": ("counts", "mean intensity of the (drift-corrected) series")}


class EcmAnalyzer(PixelAnalyzer):
    """Per-pixel g2(τ), KWW τ/β/A maps, drift trace and τ distribution of a dark-field image series."""

    name: ClassVar[str] = "ecm"
    full_frames: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        try:
            self.config = msgspec.convert(dict(params), EcmConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid ecm configuration: {exc}") from None

    # ------------------------------------------------------------------ per run
    def _geometry(self, run: RunInfo) -> None:
        cfg = self.config
        self.n_frames = run.n_frames
        plan_dt = run.plan.get("frame_time_s")
        self.frame_time = float(cfg.frame_time or plan_dt or 1.0)
        self.temperature = run.plan.get("temperature_K")
        n_levels = cfg.n_levels
        if n_levels is None:  # lags up to ~T/4: longer ones have too few pairs to mean anything
            n_levels = 1
            while (cfg.per_level - 1) * 2 ** n_levels <= max(self.n_frames // 4, cfg.per_level):
                n_levels += 1
        self.n_levels = n_levels
        lags, _ = multi_tau_lags(n_levels, cfg.per_level)
        self.lags = lags[lags > 0]

    def prepare(self, run: RunInfo) -> None:
        self._geometry(run)

    def results(self, run: RunInfo) -> dict[str, ResultSpec]:
        self._geometry(run)
        ny, nx = run.frame_shape
        specs = {name: ResultSpec("map", (ny, nx), "float32", ("y", "x"), units, "tile", what)
                 for name, (units, what) in _MAPS.items()}
        specs["g2"] = ResultSpec("stack", (self.lags.size, ny, nx), "float32", ("lag", "y", "x"), "", "tile",
                                 "g2(τ) per pixel at the multi-tau lags")
        specs["lags"] = ResultSpec("curve", (self.lags.size,), "float64", ("lag",), "s", "custom",
                                   "lag times of g2")
        specs["drift"] = ResultSpec("curve", (run.n_frames, 2), "float64", ("frame", "yx"), "px", "custom",
                                    "sample drift (dy, dx) per frame, relative to the first")
        nb = self.config.histogram_bins
        specs["tau_histogram"] = ResultSpec("curve", (nb,), "float64", ("tau_bin",), "pixels", "custom",
                                            "distribution of τ over reliable pixels (log bins)")
        specs["tau_bin_centers"] = ResultSpec("curve", (nb,), "float64", ("tau_bin",), "s", "custom",
                                              "geometric centres of the τ bins")
        specs["temperature"] = ResultSpec("scalar", (1,), "float64", (), "K", "custom",
                                          "sample temperature from the run's metadata (NaN if none)")
        return specs

    def initialize(self, store: ResultBuffers) -> None:
        store["lags"][:] = self.lags * self.frame_time
        store["temperature"][0] = float(self.temperature) if self.temperature is not None else math.nan

    # ------------------------------------------------------------------ per tile (workers)
    def init_tile(self, run: RunInfo, tile: Tile) -> _TileState:
        self._geometry(run)
        b = self.config.binning
        th, tw = tile.shape
        bshape = (th // b, tw // b)
        if min(bshape) < 1:
            raise ValueError(f"binning {b} is larger than the tile {tile.shape}")
        d = self.config.drift
        tracker = None
        if d.enabled:
            window = None if d.window is None else (slice(d.window[0], d.window[1]), slice(d.window[2], d.window[3]))
            tracker = DriftTracker(window=window, upsample=d.upsample, rereference_every=d.rereference_every,
                                   overlap=d.overlap)
        return _TileState(tile=tile, rows=slice(tile.y0, tile.y1),
                          correlator=MultiTauCorrelator(bshape[0] * bshape[1], n_levels=self.n_levels,
                                                        per_level=self.config.per_level),
                          drift=tracker, binned_shape=bshape, mean_sum=np.zeros(bshape[0] * bshape[1]),
                          smoother=DriftSmoother(d.smooth_frames) if tracker is not None else None)

    def _drift_corrected(self, state: _TileState, frames: np.ndarray | None, first: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Register ``frames`` (None: the end of the series) and return the frames whose smoothed drift is known.

        The smoother needs ``smooth_frames`` frames of look-ahead, so that many frames (the
        tile's rows plus a margin) wait for the next chunk. Returns (their frame indices, corrected
        tile frames, their drift) or None if no frame is ready yet; the frames are those of
        ``first`` on.
        """
        t = state.tile
        assert state.drift is not None and state.smoother is not None
        y0 = max(t.y0 - _MARGIN, 0)  # the tile's rows plus a margin: undoing the shift interpolates real pixels
        if frames is not None:
            y1 = min(t.y1 + _MARGIN, frames.shape[1])
            state.pending.extend(np.array(frames[:, y0:y1, t.x0:t.x1]))  # a copy: the chunk's buffer may be reused
            state.pending_index.extend(range(first, first + frames.shape[0]))
            drift = state.smoother.push(state.drift.update(frames), np.arange(first, first + frames.shape[0]))
        else:
            drift = state.smoother.flush()
        n = drift.shape[0]
        if n == 0:
            return None
        part = np.empty((n, t.y1 - t.y0, t.x1 - t.x0), dtype=np.float32)
        for k in range(n):
            part[k] = undo_shift(state.pending[k], tuple(drift[k]))[t.y0 - y0:t.y1 - y0]
        index = np.asarray(state.pending_index[:n], dtype=np.int64)
        del state.pending[:n], state.pending_index[:n]
        return index, part, drift

    def _bin(self, state: _TileState, part: np.ndarray) -> np.ndarray:
        b = self.config.binning
        bh, bw = state.binned_shape
        if b > 1:
            part = part[:, :bh * b, :bw * b].reshape(part.shape[0], bh, b, bw, b).sum(axis=(2, 4))
        return part.reshape(part.shape[0], -1)

    def _feed(self, state: _TileState, part: np.ndarray, index: np.ndarray) -> None:
        """Frames ``part`` with series indices ``index`` (increasing) into the correlator; a gap (a lost chunk)
        is skipped over, so no lag pairs frames across it as if they were adjacent."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            return
        flat = self._bin(state, part)
        if index[0] < state.next_frame:
            raise ValueError(f"ecm: frame {int(index[0])} arrived after frame {state.next_frame - 1}: frames of a "
                             "pixel-partitioned analyzer must come in time order")
        cuts = np.flatnonzero(np.diff(index) != 1) + 1      # runs of consecutive frames
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, index.size]):
            state.correlator.skip(int(index[lo]) - state.next_frame)
            state.correlator.update(flat[lo:hi])
            state.next_frame = int(index[hi - 1]) + 1
        state.mean_sum += flat.sum(axis=0, dtype=np.float64)
        state.frames_fed += part.shape[0]
        state.frames_since_refresh += part.shape[0]

    def process_tile(self, state: _TileState, chunk: FrameChunk) -> Partial | None:
        values: dict[str, np.ndarray] = {}
        first, count = chunk.first, chunk.count
        if state.drift is not None:
            ready = self._drift_corrected(state, chunk.frames, chunk.first)
            if ready is None:
                return None
            index, part, drift = ready
            first, count = int(index[0]), int(index.size)
            if state.tile.y0 == 0:
                values["drift"], values["drift_frames"] = drift, index
        else:
            t = state.tile
            part = np.asarray(chunk.frames[:, t.y0:t.y1, t.x0:t.x1], dtype=np.float32)
            index = np.arange(first, first + count)
        self._feed(state, part, index)
        if state.frames_since_refresh >= self.config.refresh_frames \
                and time.monotonic() - state.last_refresh >= self.config.refresh_s:
            state.last_refresh, state.frames_since_refresh = time.monotonic(), 0
            values.update(self._maps(state))
        return Partial(first, count, values) if values else None

    def finish_tile(self, state: _TileState) -> Partial | None:
        values: dict[str, np.ndarray] = {}
        first = count = 0
        if state.drift is not None:
            ready = self._drift_corrected(state, None)   # the frames held back for the smoother's look-ahead
            if ready is not None:
                index, part, drift = ready
                first, count = int(index[0]), int(index.size)
                self._feed(state, part, index)
                if state.tile.y0 == 0:
                    values["drift"], values["drift_frames"] = drift, index
        values.update(self._maps(state))
        return Partial(first, count, values)

    def _maps(self, state: _TileState) -> dict[str, np.ndarray]:
        """Fit every pixel of the tile; maps back at full resolution (binned values repeated)."""
        corr = state.correlator
        lags, g2 = corr.g2()
        keep = lags > 0
        lags, g2 = lags[keep], g2[:, keep]
        counts = corr.counts[corr.lags > 0] if hasattr(corr, "counts") else np.ones(lags.size)
        t = lags * self.frame_time
        usable = counts > 0
        nan = np.full(corr.npix, np.nan)
        if usable.sum() >= 4:
            fit = fit_kww(t[usable], g2[:, usable], weights=counts[usable].astype(np.float64),
                          max_iter=self.config.max_iter)
            tau, beta, amp, r2 = fit.tau, fit.beta, fit.A, fit.r2
        else:  # too early in the series for a fit
            tau = beta = amp = r2 = nan
        duration = max(corr.n_frames, 1) * self.frame_time
        ok = reliability(tau, duration, self.config.reliability_factor)
        bh, bw = state.binned_shape
        b = self.config.binning
        th, tw = state.tile.shape

        def full(a: np.ndarray) -> np.ndarray:
            img = np.full((th, tw), np.nan, dtype=np.float32)
            img[:bh * b, :bw * b] = np.repeat(np.repeat(np.asarray(a, np.float32).reshape(bh, bw), b, 0), b, 1)
            return img

        fed = max(state.frames_fed, 1)
        g2_full = np.full((self.lags.size, th, tw), np.nan, dtype=np.float32)
        g2_all = np.full((corr.npix, self.lags.size), np.nan)
        index = np.searchsorted(self.lags, lags)
        g2_all[:, index] = g2
        for k in range(self.lags.size):
            g2_full[k] = full(g2_all[:, k])
        return {"tau": full(tau), "beta": full(beta), "A": full(amp), "fit_r2": full(r2),
                "reliable": full(ok.astype(np.float32)), "mean_intensity": full(state.mean_sum / fed),
                "g2": g2_full}

    # ------------------------------------------------------------------ host
    def merge(self, store: ResultBuffers, partial: Partial) -> None:
        values = dict(partial.values)
        if "drift" in values:  # by frame index: frames wait for the smoother, and a chunk may have been lost
            store["drift"][values.pop("drift_frames")] = values.pop("drift")
        store.merge_default(Partial(partial.first, partial.count, values, partial.tile))
        if "tau" in partial.values:
            tau, ok = store["tau"], store["reliable"] > 0.5
            if ok.any():
                counts, edges = tau_histogram(tau, self.config.histogram_bins, mask=ok)
                store["tau_histogram"][:] = counts
                store["tau_bin_centers"][:] = np.sqrt(edges[:-1] * edges[1:])

    def query(self, store: ResultBuffers, request: dict) -> dict[str, np.ndarray]:
        """``{"query": "g2", "position": [y, x]}``: that pixel's g2(τ), the lags (s) and its KWW fit curve."""
        if request.get("query") != "g2":
            raise ValueError(f"ecm answers the query 'g2', not {request.get('query')!r}")
        y, x = (int(v) for v in request["position"])
        ny, nx = store["tau"].shape
        if not (0 <= y < ny and 0 <= x < nx):
            raise IndexError(f"pixel ({y}, {x}) outside the {ny}×{nx} image")
        lags = store["lags"].copy()
        a, tau, beta = (float(store[k][y, x]) for k in ("A", "tau", "beta"))
        fit = kww_model(lags, a, tau, beta) if np.isfinite([a, tau, beta]).all() else np.full(lags.size, np.nan)
        return {"g2": store["g2"][:, y, x].astype(np.float64), "lags": lags, "fit": fit,
                "params": np.array([a, tau, beta])}
