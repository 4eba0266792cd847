"""Electron correlation microscopy (ECM) phantom: dark-field image series of a supercooled-liquid nanowire.

Modelled on seed 003 (tilted dark-field ECM of a Pt57.5Cu14.7Ni5.3P22.5 nanowire
at 250 °C; Zhang et al., Nat. Commun. 9 (2018) 1129): every pixel of a
dark-field image records the intensity of one speckle, which fluctuates as the
liquid rearranges. Its intensity autocorrelation follows the KWW form

    g2(t) = 1 + A exp(-2 (t / τ)^β),

with nanoscale domains of different τ inside the wire, faster dynamics in a
surface layer, a static bright crystallite that ECM uses as the drift reference,
and slow sample drift.

Method (exact, not an approximation). Per pixel the complex scattered field
F(t) is a stationary circular complex Gaussian process with field correlation
g1(t) = ⟨F(0) F*(t)⟩ = exp(-(t/τ)^β), drawn by circulant embedding
(Dietrich & Newsam, SIAM J. Sci. Comput. 18 (1997) 1088): embed g1 at lags
0..M/2 in a symmetric circulant of size M >= 2T, take its eigenvalues λ = FFT,
and F = FFT(sqrt(λ / M) Z)[:T] with Z circular complex white noise. Then
⟨F_j F_l*⟩ = g1(j - l) and ⟨F_j F_l⟩ = 0 exactly. For β <= 1, g1 is convex and
decreasing, so every λ >= 0 and the sample has exactly the target covariance;
for 1 < β <= 2 tiny negative λ are set to 0 and the worst relative loss of
variance is logged. By the Siegert relation |F|² then has g2 = 1 + |g1|².

Partial coherence mixes the speckle with a static incoherent part:
I = I_wire (f |F|² + 1 − f) + I_static, so the contrast is
A = (f I_wire / (I_wire + I_static))², which is the ``A`` map of the ground
truth (f = sqrt(contrast) in the wire, and lower where the crystallite or the
support add static intensity).

Temperature (Arrhenius-like, documented choice): τ(x, T) = τ_ref(x)
exp(E_a(x) / k_B (1/T − 1/T_ref)), T_ref = 523.15 K (250 °C, seed 003). Slower
bulk domains get a proportionally larger E_a (E_a(x) = E_a (1 + 0.3 z(x)), z the
standardised log τ_ref of the domain) so the τ distribution widens on cooling,
and the surface layer has E_a / 2, so its distribution stays narrow, as the seed
reports. Near T_g the real dependence is super-Arrhenius; E_a is an effective
local slope.

Drift: the whole sample image moves by a known subpixel trajectory d(t)
(pixels, (dy, dx)), applied with ``scipy.ndimage.shift`` (linear interpolation,
``mode="nearest"``): output(x) = input(x − d). Interpolation averages
neighbouring independent speckles, which lowers the measured contrast (the
pitfall noted in /work/shared/research/algorithms.md (d)); the g2 ground truth
refers to the undrifted sample frame, so set ``drift=(0, 0)`` to test g2 alone.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .physics import E_CHARGE, K_B

__all__ = ["ECMNanowire"]

logger = logging.getLogger(__name__)

T_REF_KELVIN = 523.15  # 250 °C, the temperature of seed 003's Figure 1
_PIXELS_PER_CHUNK = 256  # pixels per circulant-embedding batch: ~30 MB of temporaries at T = 2000


class ECMNanowire:
    """Dark-field speckle image series of a nanowire with spatially heterogeneous KWW dynamics.

    The series is computed once at construction (``n_frames`` x ny x nx
    float32: 33 MB at the defaults), so :meth:`frames` is a deterministic copy.

    Parameters
    ----------
    shape : (ny, nx)
        Image size in pixels.
    n_frames : int
        Frames in the series.
    frame_time : float
        Seconds per frame (seed 003's analysis notebook runs at 4 frames/s).
    temperature : float
        Sample temperature in kelvin; τ scales as in the module docstring.
    tau_bulk : (low, high)
        Range of the bulk domains' τ at ``T_REF_KELVIN`` in seconds (log-uniform).
    tau_surface : float
        τ of the surface layer at ``T_REF_KELVIN`` in seconds (±10 % scatter).
    beta_bulk : (low, high)
        Range of the bulk domains' stretching exponent β (uniform; <= 1 keeps the embedding exact).
    beta_surface : float
        β of the surface layer.
    contrast : float
        Speckle contrast A of a bare wire pixel (0 < A <= 1), set by partial coherence.
    activation_energy : float
        Effective bulk activation energy E_a in eV.
    n_domains : int
        Number of bulk dynamical domains (Voronoi cells).
    wire_radius, surface_width : float
        Wire half-width and the thickness of its fast surface layer, in pixels.
    wire_intensity, background_intensity : float
        Mean intensity of a wire pixel and of the support outside it (static).
    crystallite_position, crystallite_sigma, crystallite_intensity : (y, x), float, float
        A static bright Gaussian blob (drift reference): centre (pixels, undrifted),
        width (pixels) and peak intensity added on top.
    drift : (dy, dx)
        Total linear drift over the series in pixels; a slow sinusoidal wobble of
        ``drift_wobble`` pixels is added on both axes.
    drift_wobble : float
    shot_noise : bool
        Draw Poisson counts with the intensity (in electrons) as mean; otherwise noise-free.
    seed : int

    Examples
    --------
    >>> sim = ECMNanowire(shape=(16, 16), n_frames=64, seed=2)
    >>> sim.frames(10, 5).shape, sim.frames(10, 5).dtype
    ((5, 16, 16), dtype('float32'))
    >>> sorted(sim.ground_truth())[:4]
    ['A', 'activation_energy', 'beta', 'crystallite_position']
    """

    def __init__(self, shape: tuple[int, int] = (64, 64), n_frames: int = 2000, frame_time: float = 0.25,
                 temperature: float = T_REF_KELVIN, tau_bulk: tuple[float, float] = (3.0, 10.0),
                 tau_surface: float = 1.0, beta_bulk: tuple[float, float] = (0.5, 0.9),
                 beta_surface: float = 0.8, contrast: float = 0.25, activation_energy: float = 3.0,
                 n_domains: int = 10, wire_radius: float | None = None, surface_width: float = 3.0,
                 wire_intensity: float = 100.0, background_intensity: float = 20.0,
                 crystallite_position: tuple[float, float] | None = None, crystallite_sigma: float = 1.5,
                 crystallite_intensity: float = 1000.0, drift: tuple[float, float] = (1.5, 3.0),
                 drift_wobble: float = 0.5, shot_noise: bool = False, seed: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 2 or min(self.shape) < 4:
            raise ValueError(f"shape must be two integers >= 4, got {shape!r}")
        if int(n_frames) < 2:
            raise ValueError(f"n_frames must be >= 2, got {n_frames}")
        for name, value in (("frame_time", frame_time), ("temperature", temperature),
                            ("tau_surface", tau_surface), ("beta_surface", beta_surface),
                            ("contrast", contrast), ("wire_intensity", wire_intensity)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if contrast > 1:
            raise ValueError(f"contrast must be in (0, 1], got {contrast}")
        if not (0 < tau_bulk[0] <= tau_bulk[1]) or not (0 < beta_bulk[0] <= beta_bulk[1] <= 2) \
                or not beta_surface <= 2:
            raise ValueError(f"need 0 < tau_bulk[0] <= tau_bulk[1] and 0 < β <= 2, got tau_bulk={tau_bulk}, "
                             f"beta_bulk={beta_bulk}, beta_surface={beta_surface}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.n_frames, self.frame_time = int(n_frames), float(frame_time)
        self.temperature, self.seed = float(temperature), int(seed)
        ny, nx = self.shape
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3]))
        self._truth = self._make_maps(rng, tau_bulk, float(tau_surface), beta_bulk, float(beta_surface),
                                      float(contrast), float(activation_energy), int(n_domains),
                                      min(ny, nx) * 0.3 if wire_radius is None else float(wire_radius),
                                      float(surface_width), float(wire_intensity), float(background_intensity),
                                      crystallite_position, float(crystallite_sigma),
                                      float(crystallite_intensity))
        speckle = self._speckle(rng)  # (T, ny, nx) of |F|², mean 1
        t = self._truth
        series = t["_wire_intensity"] * (t["_coherent_fraction"] * speckle + (1 - t["_coherent_fraction"]))
        series += t["_static_intensity"]
        if shot_noise:
            series = rng.poisson(series).astype(np.float64)
        self._truth["drift"] = self._make_drift(drift, float(drift_wobble))
        self._series = np.empty((self.n_frames, ny, nx), dtype=np.float32)
        for k in range(self.n_frames):
            self._series[k] = ndimage.shift(series[k], self._truth["drift"][k], order=1, mode="nearest")
        cy, cx = self._truth["crystallite_position"]
        self._truth["crystallite_trajectory"] = np.stack([cy + self._truth["drift"][:, 0],
                                                          cx + self._truth["drift"][:, 1]], axis=1)
        logger.debug("ECM phantom built: %d frames of %s at %.1f K", self.n_frames, self.shape, self.temperature)

    def frames(self, first: int, count: int) -> np.ndarray:
        """Images ``first .. first + count - 1`` as a (count, ny, nx) float32 array (drift applied)."""
        if not (0 <= first and 0 <= count and first + count <= self.n_frames):
            raise ValueError(f"frames {first}..{first + count - 1} are outside the series of "
                             f"{self.n_frames} frames (first >= 0, count >= 0 expected)")
        return self._series[first:first + count].copy()

    def ground_truth(self) -> dict[str, np.ndarray | float]:
        """Maps and trajectories the series was drawn from (maps in the undrifted sample frame).

        Returns
        -------
        dict
            ``tau`` (s, at ``temperature``; NaN off the wire), ``tau_ref`` (s, at
            T_ref), ``beta``, ``A`` (effective g2 contrast, 0 where nothing
            fluctuates), ``activation_energy`` (eV map), ``domain_labels`` (int,
            -1 off the wire, 0 surface, 1.. bulk domains), ``wire_mask``,
            ``surface_mask``, ``crystallite_position`` ((y, x) px, undrifted),
            ``crystallite_trajectory`` ((T, 2) px), ``drift`` ((T, 2) (dy, dx)
            px, content at x moves to x + d), ``mean_intensity`` (undrifted),
            ``frame_time`` (s), ``temperature`` (K), ``t_ref`` (K).
        """
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in self._truth.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ internals
    def _make_maps(self, rng, tau_bulk, tau_surface, beta_bulk, beta_surface, contrast, e_a, n_domains,
                   wire_radius, surface_width, wire_intensity, background_intensity, cryst_pos,
                   cryst_sigma, cryst_intensity) -> dict:
        ny, nx = self.shape
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        # A straight wire, slightly tilted, across the field of view.
        angle = math.radians(12.0)
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
        dist = np.abs(-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle))
        wire = dist <= wire_radius
        surface = wire & (dist > wire_radius - surface_width)
        bulk = wire & ~surface
        # Bulk domains: Voronoi cells of random seeds inside the bulk.
        labels = np.full(self.shape, -1, dtype=np.int64)
        labels[surface] = 0
        by, bx = np.nonzero(bulk)
        if by.size == 0:
            logger.warning("the wire (radius %.1f px) is all surface layer (%.1f px): no bulk domains",
                           wire_radius, surface_width)
        n_domains = max(1, min(n_domains, by.size))
        if by.size:
            pick = rng.choice(by.size, size=n_domains, replace=False)
            d2 = (by[:, None] - by[pick][None, :]) ** 2 + (bx[:, None] - bx[pick][None, :]) ** 2
            labels[by, bx] = 1 + np.argmin(d2, axis=1)
        log_tau = rng.uniform(math.log(tau_bulk[0]), math.log(tau_bulk[1]), n_domains)
        betas = rng.uniform(beta_bulk[0], beta_bulk[1], n_domains)
        z = (log_tau - log_tau.mean()) / (log_tau.std() if n_domains > 1 and log_tau.std() > 0 else 1.0)
        tau_ref = np.full(self.shape, np.nan)
        beta = np.full(self.shape, np.nan)
        e_map = np.full(self.shape, np.nan)
        tau_ref[bulk] = np.exp(log_tau)[labels[bulk] - 1]
        beta[bulk] = betas[labels[bulk] - 1]
        e_map[bulk] = e_a * (1 + 0.3 * z[labels[bulk] - 1])
        tau_ref[surface] = tau_surface * rng.uniform(0.9, 1.1, int(surface.sum()))
        beta[surface] = beta_surface
        e_map[surface] = 0.5 * e_a
        tau = tau_ref * np.exp(e_map * E_CHARGE / K_B * (1 / self.temperature - 1 / T_REF_KELVIN))
        # Static intensity: the support everywhere off the wire, the crystallite on top.
        if cryst_pos is None:
            cryst_pos = (cy + 0.6 * wire_radius, nx * 0.25)
        cryst_pos = (float(cryst_pos[0]), float(cryst_pos[1]))
        static = np.where(wire, 0.0, background_intensity)
        static += cryst_intensity * np.exp(-((yy - cryst_pos[0]) ** 2 + (xx - cryst_pos[1]) ** 2)
                                           / (2 * cryst_sigma ** 2))
        wire_i = np.where(wire, wire_intensity, 0.0)
        f = np.where(wire, math.sqrt(contrast), 0.0)
        a_eff = (f * wire_i / (wire_i + static)) ** 2
        return {"tau": tau, "tau_ref": tau_ref, "beta": beta, "A": a_eff, "activation_energy": e_map,
                "domain_labels": labels, "wire_mask": wire, "surface_mask": surface,
                "crystallite_position": np.array(cryst_pos), "mean_intensity": wire_i + static,
                "frame_time": self.frame_time, "temperature": self.temperature, "t_ref": T_REF_KELVIN,
                "_wire_intensity": wire_i, "_static_intensity": static, "_coherent_fraction": f}

    def _speckle(self, rng: np.random.Generator) -> np.ndarray:
        """|F|² per pixel and frame (T, ny, nx), F circular complex Gaussian with g1 = KWW (circulant embedding)."""
        ny, nx = self.shape
        n_t = self.n_frames
        m = sfft.next_fast_len(2 * n_t)
        lags = np.minimum(np.arange(m), m - np.arange(m)) * self.frame_time  # symmetric circulant lags
        tau = self._truth["tau"].ravel()
        beta = self._truth["beta"].ravel()
        live = np.flatnonzero(np.isfinite(tau))
        out = np.ones((ny * nx, n_t))  # static pixels: |F|² irrelevant (f = 0), keep 1
        worst = 0.0
        for c0 in range(0, live.size, _PIXELS_PER_CHUNK):
            pix = live[c0:c0 + _PIXELS_PER_CHUNK]
            g1 = np.exp(-(lags[None, :] / tau[pix, None]) ** beta[pix, None])
            lam = sfft.rfft(g1, axis=1).real  # real, symmetric sequence -> real spectrum
            if lam.min() < 0:
                worst = max(worst, float(-lam[lam < 0].sum() / m))
                np.maximum(lam, 0, out=lam)
            lam_full = np.concatenate([lam, lam[:, 1:(m + 1) // 2][:, ::-1]], axis=1)  # all m eigenvalues
            z = rng.standard_normal((pix.size, m)) + 1j * rng.standard_normal((pix.size, m))
            z *= np.sqrt(lam_full / (2 * m))  # E|z_k|² = λ_k / m
            field = sfft.fft(z, axis=1)[:, :n_t]
            out[pix] = field.real ** 2 + field.imag ** 2
        if worst > 0:
            logger.info("circulant embedding clipped negative eigenvalues (β > 1): variance loss <= %.2g", worst)
        return out.T.reshape(n_t, ny, nx)

    def _make_drift(self, drift: tuple[float, float], wobble: float) -> np.ndarray:
        s = np.arange(self.n_frames) / max(self.n_frames - 1, 1)
        dy = drift[0] * s + wobble * np.sin(2 * math.pi * 1.5 * s)
        dx = drift[1] * s + wobble * np.sin(2 * math.pi * 0.7 * s + 0.4) - wobble * math.sin(0.4)
        return np.stack([dy, dx], axis=1)
