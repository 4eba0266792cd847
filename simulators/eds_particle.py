"""An Ag–Au core–shell nanoparticle seen by STEM-EDS and HAADF over a tilt series, with ground truth.

It reproduces the phantom of Yuan et al., Ultramicroscopy 113166 (2020) (seed
``001_9fc5101b7317cc32``): a core of 80 wt% Au / 20 wt% Ag inside a shell of
80 wt% Ag / 20 wt% Au, here in 3D. Because both regions are spheres, every
projection is exact and cheap: the projected amount of an element at a probe
position is its number density times the analytic chord length through each
sphere, so no volume is rotated and no interpolation error enters the truth.

Signals follow the seed's thin-film model (absorption, secondary fluorescence
and beam spreading neglected):

* EDS (seed eq. 4): counts of line ``L`` of element ``A`` at a probe position
  are ``dose * (Omega / 4 pi) * sigma_ion * omega * p * N_A``, with ``N_A`` the
  projected number of atoms per nm^2. ``sigma_ion``, ``omega`` and ``p`` are the
  MC X-ray values of the seed's Table 2 (Ag Lα, Au Mα at 100 keV). xraylib 4.3
  gives line energies and densities, but no electron-impact
  ionisation cross-sections (its ``CS_FluorLine_*`` are photo-ionisation cross
  sections for X-ray beams), so Table 2 is the only sourced value we have; its
  change between 100 and 200-300 keV (~10-20 %, Bethe) is not modelled.
* Bremsstrahlung: thin-target Kramers shape ``(E0 - E) / (E0 E)`` per unit
  projected mass, times a detector-window transmission ``exp(-(E_w / E)^3)``.
  The default strength (0.25 barn per amu) matches the Bethe–Heitler order of
  magnitude ``(16/3) alpha r_e^2 Z^2 ln(...)`` for Au.
* Detector: Gaussian lines integrated over each channel, with
  ``FWHM^2 = FWHM_noise^2 + 2.3548^2 F eps E`` (Fano factor 0.12, 3.8 eV per
  electron-hole pair), ``FWHM_noise`` set so that FWHM is 130 eV at Mn Kα.
* HAADF (seed eq. 14): ``dose * eta * sum_A sigma_ela^A N_A``, i.e. the seed's
  ``sum_A z_A C_A rho t`` written with number densities (``z_A = sigma_ela / M_A``).
  By default ``sigma_ela`` are the Table 2 elastic cross-sections, whose Au/Ag
  ratio 2.0 equals ``(Z_Au / Z_Ag)^1.33``; ``haadf_exponent`` swaps in a
  ``Z^gamma`` law instead. ``eta`` is the fraction of elastic scattering that
  reaches the annular detector (Table 2 holds total elastic cross-sections).

Geometry: the volume axes are (z, y, x), z along the beam at zero tilt, the
origin at the volume centre. At tilt ``theta`` the specimen is rotated about
y by ``theta`` (a point (x, z) goes to (x cos θ + z sin θ, -x sin θ + z cos θ)),
then projected along z. Probe (i, j) sits at
``y = (i - (ny - 1) / 2) * pixel_nm``, ``x = (j - (nx - 1) / 2) * pixel_nm``.
Noise at each probe position comes from its own stream keyed by (seed, tilt,
position), so any spectrum can be regenerated alone and chunking does not matter.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import xraylib
from scipy import special

__all__ = ["EDSParticle"]

logger = logging.getLogger(__name__)

_ELEMENTS = ("Ag", "Au")
_Z = np.array([47, 79])
# Seed 001, Table 2 (MC X-ray, 100 keV): ionisation cross-section (barn), fluorescence yield,
# relative line intensity, elastic cross-section (barn). Order: Ag Lα, Au Mα.
_SIGMA_ION_BARN = np.array([2.44e3, 7.46e3])
_FLUOR_YIELD = np.array([0.057, 0.030])
_REL_INTENSITY = np.array([0.816, 0.999])
_SIGMA_ELA_BARN = np.array([9.90e6, 1.98e7])
# IUPAC standard atomic weights, g/mol. Not xraylib's: its 4.3 table gives Au 197.2, an old value
# that would bias weight fractions recovered with the standard one by 1e-3.
_ATOMIC_WEIGHT = np.array([107.8682, 196.966570])
_BARN_NM2 = 1e-10
_AVOGADRO = 6.02214076e23
_FANO = 0.12
_PAIR_EV = 3.8
_MN_KA_KEV = 5.8987
_UINT16_MAX = np.iinfo(np.uint16).max
_EDS_TAG, _HAADF_TAG = 0x4544, 0x4841  # keep EDS and HAADF streams apart


class EDSParticle:
    """STEM-EDS spectra and HAADF images of a spherical Ag–Au core–shell particle.

    Parameters
    ----------
    shape : int
        Edge of the cubic ground-truth volume, in voxels.
    voxel_nm : float
        Voxel edge, nm.
    scan_shape : (ny, nx), optional
        Probe raster per tilt; default ``(shape, shape)``.
    pixel_nm : float, optional
        Probe step, nm; default ``voxel_nm``.
    tilt_angles_deg : array_like
        Tilt angles about y, degrees; default -70..70 in 10° steps.
    r_outer_nm, r_core_nm : float
        Radii of the particle and of its core, nm.
    core_offset_nm : (z, y, x)
        Core centre relative to the particle centre, nm. Off-centre by default
        so that the projections change with tilt (a concentric particle would
        look the same at every angle).
    core_wt, shell_wt : (Ag, Au)
        Weight fractions; the seed's 20/80 and 80/20 by default.
    dose : float
        Electrons per probe position (100 pA for 0.16 s by default).
    solid_angle_sr : float
        EDS collection solid angle, sr (Super-X ~0.7 sr); detector efficiency 1.
    n_channels, channel_kev : int, float
        Energy axis: channel ``k`` covers ``[k, k + 1) * channel_kev`` keV.
    beam_kev : float
        Beam energy; sets the bremsstrahlung end point only (see module notes).
    fwhm_mn_ka_ev : float
        Detector FWHM at Mn Kα, eV.
    brems_barn_per_amu : float
        Bremsstrahlung strength ``b``: ``dsigma/dE = b (E0 - E) / (E0 E)`` per amu.
    window_kev : float
        Characteristic energy of the window absorption ``exp(-(E_w / E)^3)``.
    haadf_collection : float
        Fraction of elastically scattered electrons that reach the HAADF detector.
    haadf_exponent : float or None
        None: seed Table 2 elastic cross-sections; else ``sigma_Ag * (Z / 47)^gamma``.
    haadf_read_noise : float
        Standard deviation of Gaussian HAADF read noise, counts.
    seed : int
        Non-negative seed.

    Examples
    --------
    >>> sim = EDSParticle(shape=32, voxel_nm=2.0, tilt_angles_deg=[-60, 0, 60], seed=1)
    >>> sim.spectra(1, 500, 4).shape, sim.spectra(1, 500, 4).dtype
    ((4, 2048), dtype('uint16'))
    >>> sim.haadf(0).shape, sorted(sim.sinograms())
    ((32, 32), ['Ag', 'Au'])
    >>> bool((sim.spectra(1, 502, 1)[0] == sim.spectra(1, 500, 4)[2]).all())
    True
    """

    def __init__(self, shape: int = 64, voxel_nm: float = 1.0, scan_shape: tuple[int, int] | None = None,
                 pixel_nm: float | None = None, tilt_angles_deg=None, r_outer_nm: float = 25.0,
                 r_core_nm: float = 12.0, core_offset_nm=(-2.0, 1.0, 4.0), core_wt=(0.2, 0.8),
                 shell_wt=(0.8, 0.2), dose: float = 1e8, solid_angle_sr: float = 0.7, n_channels: int = 2048,
                 channel_kev: float = 0.01, beam_kev: float = 200.0, fwhm_mn_ka_ev: float = 130.0,
                 brems_barn_per_amu: float = 0.25, window_kev: float = 0.6, haadf_collection: float = 0.02,
                 haadf_exponent: float | None = None, haadf_read_noise: float = 0.0, seed: int = 0) -> None:
        if not isinstance(shape, (int, np.integer)) or shape < 2:
            raise ValueError(f"shape must be an integer >= 2, got {shape!r}")
        self.shape = int(shape)
        self.voxel_nm = _positive(voxel_nm, "voxel_nm")
        self.scan_shape = (self.shape, self.shape) if scan_shape is None else tuple(int(s) for s in scan_shape)
        if len(self.scan_shape) != 2 or min(self.scan_shape) < 1:
            raise ValueError(f"scan_shape must be two positive integers, got {scan_shape!r}")
        self.pixel_nm = self.voxel_nm if pixel_nm is None else _positive(pixel_nm, "pixel_nm")
        angles = np.arange(-70.0, 70.5, 10.0) if tilt_angles_deg is None else tilt_angles_deg
        self.tilt_angles_deg = np.atleast_1d(np.asarray(angles, dtype=float))
        if self.tilt_angles_deg.ndim != 1 or not np.isfinite(self.tilt_angles_deg).all():
            raise ValueError(f"tilt_angles_deg must be a 1D list of finite angles, got {tilt_angles_deg!r}")
        self.r_outer_nm = _positive(r_outer_nm, "r_outer_nm")
        self.r_core_nm = _positive(r_core_nm, "r_core_nm")
        self.core_offset_nm = np.asarray(core_offset_nm, dtype=float).reshape(3)
        if np.linalg.norm(self.core_offset_nm) + self.r_core_nm > self.r_outer_nm:
            raise ValueError(f"the core (radius {r_core_nm} nm, offset {tuple(core_offset_nm)} nm) must lie "
                             f"inside the particle (radius {r_outer_nm} nm): reduce the offset or the core")
        self.core_wt = _fractions(core_wt, "core_wt")
        self.shell_wt = _fractions(shell_wt, "shell_wt")
        self.dose = _positive(dose, "dose", allow_zero=True)
        self.solid_angle_sr = _positive(solid_angle_sr, "solid_angle_sr")
        if not isinstance(n_channels, (int, np.integer)) or n_channels < 1024:
            raise ValueError(f"n_channels must be an integer >= 1024, got {n_channels!r}")
        self.n_channels = int(n_channels)
        self.channel_kev = _positive(channel_kev, "channel_kev")
        self.beam_kev = _positive(beam_kev, "beam_kev")
        self.fwhm_mn_ka_ev = _positive(fwhm_mn_ka_ev, "fwhm_mn_ka_ev")
        self.brems_barn_per_amu = _positive(brems_barn_per_amu, "brems_barn_per_amu", allow_zero=True)
        self.window_kev = _positive(window_kev, "window_kev", allow_zero=True)
        self.haadf_collection = _positive(haadf_collection, "haadf_collection")
        self.haadf_exponent = None if haadf_exponent is None else float(haadf_exponent)
        self.haadf_read_noise = _positive(haadf_read_noise, "haadf_read_noise", allow_zero=True)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

        self.atomic_weight = _ATOMIC_WEIGHT.copy()
        self.line_energies_kev = np.array([xraylib.LineEnergy(47, xraylib.LA1_LINE),
                                           xraylib.LineEnergy(79, xraylib.MA1_LINE)])
        self.core_density = _number_densities(self.core_wt, self.atomic_weight)
        self.shell_density = _number_densities(self.shell_wt, self.atomic_weight)
        # Counts per electron per (atom / nm^2): seed eq. 4 with epsilon = 1.
        self.line_cross_sections_nm2 = _SIGMA_ION_BARN * _FLUOR_YIELD * _REL_INTENSITY * _BARN_NM2
        self._collect = self.solid_angle_sr / (4 * math.pi)
        if self.haadf_exponent is None:
            self.haadf_weights_nm2 = _SIGMA_ELA_BARN * _BARN_NM2
        else:
            self.haadf_weights_nm2 = _SIGMA_ELA_BARN[0] * _BARN_NM2 * (_Z / _Z[0]) ** self.haadf_exponent
        self._components = self._spectral_components()
        self._sino = self._project_all()
        self._volumes: dict[str, np.ndarray] | None = None
        logger.debug("EDSParticle: %d tilts, scan %s, %d channels", self.tilt_angles_deg.size,
                     self.scan_shape, self.n_channels)

    @property
    def n_positions(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]

    @property
    def energy_axis(self) -> np.ndarray:
        """Channel centres, keV."""
        return (np.arange(self.n_channels) + 0.5) * self.channel_kev

    def fwhm_kev(self, energy_kev) -> np.ndarray:
        """Detector FWHM at ``energy_kev`` (Fano statistics plus electronic noise), keV."""
        e_ev = np.asarray(energy_kev, dtype=float) * 1e3
        fano = 2.3548 ** 2 * _FANO * _PAIR_EV
        noise2 = max(self.fwhm_mn_ka_ev ** 2 - fano * _MN_KA_KEV * 1e3, 0.0)
        return np.sqrt(noise2 + fano * e_ev) * 1e-3

    def sinograms(self) -> dict[str, np.ndarray]:
        """Projected atoms per nm^2 of each element, ``(n_tilts, ny, nx)``, keyed by element."""
        return {el: self._sino[:, a].copy() for a, el in enumerate(_ELEMENTS)}

    def expected_line_counts(self, tilt_index: int) -> np.ndarray:
        """Mean counts of each line (Ag Lα, Au Mα) per probe position, ``(2, ny, nx)``."""
        n = self._sino[self._tilt(tilt_index)]
        return self.dose * self._collect * self.line_cross_sections_nm2[:, None, None] * n

    def spectra(self, tilt_index: int, first: int, count: int, noise: bool = True) -> np.ndarray:
        """Spectra of probe positions ``first .. first + count - 1`` (flat raster index) at one tilt.

        Returns
        -------
        ndarray
            ``(count, n_channels)``: Poisson counts as uint16 (saturating at
            65535, as a 16-bit spectrum image would) or, with ``noise=False``,
            the float32 expectation.
        """
        t = self._tilt(tilt_index)
        if not (0 <= first and 0 <= count and first + count <= self.n_positions):
            raise ValueError(f"positions {first}..{first + count - 1} are outside the raster of "
                             f"{self.n_positions} positions (first >= 0, count >= 0 expected)")
        amounts = self._amounts(t)[first:first + count]
        mean = amounts @ self._components
        if not noise:
            return mean.astype(np.float32)
        out = np.empty((count, self.n_channels), dtype=np.uint16)
        for k in range(count):
            # One stream per (seed, tilt, position): a spectrum does not depend on the chunking.
            rng = np.random.Generator(np.random.SFC64([self.seed, _EDS_TAG, t, first + k]))
            out[k] = np.minimum(rng.poisson(mean[k]), _UINT16_MAX)
        return out

    def expected_haadf(self, tilt_index: int) -> np.ndarray:
        """Mean HAADF counts, ``(ny, nx)``: seed eq. 14 in number densities."""
        n = self._sino[self._tilt(tilt_index)]
        return self.dose * self.haadf_collection * np.tensordot(self.haadf_weights_nm2, n, axes=1)

    def haadf(self, tilt_index: int, noise: bool = True) -> np.ndarray:
        """HAADF image at one tilt, ``(ny, nx)`` float64: Poisson counts plus Gaussian read noise."""
        t = self._tilt(tilt_index)
        mean = self.expected_haadf(t)
        if not noise:
            return mean
        rng = np.random.Generator(np.random.SFC64([self.seed, _HAADF_TAG, t]))
        img = rng.poisson(mean).astype(float)
        if self.haadf_read_noise > 0:
            img += rng.normal(0.0, self.haadf_read_noise, img.shape)
        return img

    def ground_truth(self) -> dict[str, np.ndarray | float]:
        """Everything the signals were computed from.

        Returns
        -------
        dict
            ``n_Ag``, ``n_Au``: voxel-averaged number densities, atoms/nm^3,
            ``(nz, ny, nx)`` (4x4x4 subsamples per voxel); ``sinogram_Ag``,
            ``sinogram_Au``: exact projected atoms/nm^2, ``(n_tilts, ny, nx)``;
            ``projected_mass``: amu/nm^2, same shape; ``line_counts``: mean line
            counts, ``(n_tilts, 2, ny, nx)`` (Ag Lα, Au Mα); ``haadf``: mean
            HAADF counts; ``tilt_angles_deg``; ``r_outer_nm``, ``r_core_nm``,
            ``core_center_nm`` (z, y, x); ``core_wt``, ``shell_wt``,
            ``core_at``, ``shell_at``, ``core_number_density``,
            ``shell_number_density`` (atoms/nm^3), all ordered (Ag, Au);
            ``line_energies_kev``, ``line_cross_sections_nm2`` (counts per
            electron per atom/nm^2 into 4 pi), ``haadf_weights_nm2``,
            ``atomic_weight``.
        """
        if self._volumes is None:
            self._volumes = self._voxelise()
        n_t = self.tilt_angles_deg.size
        return {
            "n_Ag": self._volumes["Ag"].copy(), "n_Au": self._volumes["Au"].copy(),
            "sinogram_Ag": self._sino[:, 0].copy(), "sinogram_Au": self._sino[:, 1].copy(),
            "projected_mass": np.tensordot(self.atomic_weight, self._sino, axes=([0], [1])),
            "line_counts": np.stack([self.expected_line_counts(t) for t in range(n_t)]),
            "haadf": np.stack([self.expected_haadf(t) for t in range(n_t)]),
            "tilt_angles_deg": self.tilt_angles_deg.copy(),
            "r_outer_nm": self.r_outer_nm, "r_core_nm": self.r_core_nm,
            "core_center_nm": self.core_offset_nm.copy(),
            "core_wt": self.core_wt.copy(), "shell_wt": self.shell_wt.copy(),
            "core_at": _atomic_fractions(self.core_wt, self.atomic_weight),
            "shell_at": _atomic_fractions(self.shell_wt, self.atomic_weight),
            "core_number_density": self.core_density.copy(), "shell_number_density": self.shell_density.copy(),
            "line_energies_kev": self.line_energies_kev.copy(),
            "line_cross_sections_nm2": self.line_cross_sections_nm2.copy(),
            "haadf_weights_nm2": self.haadf_weights_nm2.copy(), "atomic_weight": self.atomic_weight.copy(),
        }

    def weight_fractions(self, scan_grid: bool = True) -> dict[str, np.ndarray]:
        """True weight fraction of each element per voxel, 0 outside the particle.

        ``scan_grid=True``: the voxels a tilt-series reconstruction has, ``(nx, ny, nx)`` in
        (z, y, x) for a ``scan_shape`` of (ny, nx) (the scan's rows and columns are centred
        voxel rows when the pixel equals the voxel); otherwise the whole ``(n, n, n)`` grid.
        """
        truth = self.ground_truth()
        n_ag, n_au = truth["n_Ag"], truth["n_Au"]
        if scan_grid:
            ny, nx = self.scan_shape
            n = self.shape
            if not math.isclose(self.pixel_nm, self.voxel_nm) or (n - ny) % 2 or (n - nx) % 2 or ny > n or nx > n:
                raise ValueError(f"the scan grid {self.scan_shape} at {self.pixel_nm} nm is not a centred subset of "
                                 f"the {n}³ voxels of {self.voxel_nm} nm")
            y0, x0 = (n - ny) // 2, (n - nx) // 2
            cut = (slice(x0, x0 + nx), slice(y0, y0 + ny), slice(x0, x0 + nx))
            n_ag, n_au = n_ag[cut], n_au[cut]
        mass = np.stack([n_ag, n_au]) * self.atomic_weight.reshape(-1, 1, 1, 1)
        total = mass.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            wt = np.where(total > 0, mass / np.where(total > 0, total, 1.0), 0.0)
        return {"Ag": wt[0], "Au": wt[1]}

    def save_reference(self, path) -> None:
        """Write :meth:`weight_fractions` as an ``.npz`` (``wt_Ag``, ``wt_Au``): the ``eds`` analyzer's ``reference``."""
        np.savez(path, **{f"wt_{el}": v for el, v in self.weight_fractions().items()})

    def _tilt(self, tilt_index: int) -> int:
        n_t = self.tilt_angles_deg.size
        if not isinstance(tilt_index, (int, np.integer)) or not 0 <= tilt_index < n_t:
            raise ValueError(f"tilt_index must be an integer in [0, {n_t}), got {tilt_index!r}")
        return int(tilt_index)

    def _amounts(self, t: int) -> np.ndarray:
        """Per position: projected Ag, Au (atoms/nm^2) and mass (amu/nm^2), ``(n_positions, 3)``."""
        n = self._sino[t].reshape(2, -1).T
        return np.column_stack([n, n @ self.atomic_weight])

    def _spectral_components(self) -> np.ndarray:
        """Mean counts per channel per unit of (Ag atoms/nm^2, Au atoms/nm^2, amu/nm^2), ``(3, n_ch)``."""
        edges = np.arange(self.n_channels + 1) * self.channel_kev
        comps = np.empty((3, self.n_channels))
        scale = self.dose * self._collect
        for a, (e_line, sigma) in enumerate(zip(self.line_energies_kev, self.line_cross_sections_nm2)):
            # Integrate the Gaussian over each channel so channel sums equal the line counts.
            s = self.fwhm_kev(e_line) / 2.3548
            comps[a] = scale * sigma * np.diff(special.ndtr((edges - e_line) / s))
        e = self.energy_axis
        kramers = np.clip(self.beam_kev - e, 0.0, None) / (self.beam_kev * e)
        window = np.exp(-(self.window_kev / e) ** 3)
        comps[2] = scale * self.brems_barn_per_amu * _BARN_NM2 * kramers * window * self.channel_kev
        return comps

    def _project_all(self) -> np.ndarray:
        """Exact projected atoms/nm^2 ``(n_tilts, 2, ny, nx)`` from chord lengths through both spheres."""
        ny, nx = self.scan_shape
        y = (np.arange(ny) - (ny - 1) / 2) * self.pixel_nm
        x = (np.arange(nx) - (nx - 1) / 2) * self.pixel_nm
        th = np.deg2rad(self.tilt_angles_deg)
        out = np.empty((th.size, 2, ny, nx))
        cz, cy, cx = self.core_offset_nm  # the particle itself is centred on the origin
        for t, angle in enumerate(th):
            px = cx * math.cos(angle) + cz * math.sin(angle)  # the core centre after the tilt
            l_outer = _chord(y[:, None] ** 2 + x[None, :] ** 2, self.r_outer_nm)
            l_core = _chord((y[:, None] - cy) ** 2 + (x[None, :] - px) ** 2, self.r_core_nm)
            out[t] = (self.shell_density[:, None, None] * (l_outer - l_core)
                      + self.core_density[:, None, None] * l_core)
        return out

    def _voxelise(self, sub: int = 4) -> dict[str, np.ndarray]:
        """Voxel-averaged densities on ``sub^3`` subsamples per voxel; computed once, on request."""
        n = self.shape
        c = (np.arange(n * sub) + 0.5) / sub - n / 2  # subsample centres, voxel units
        c *= self.voxel_nm
        vols = np.empty((2, n, n, n))
        oz, oy, ox = self.core_offset_nm
        for k in range(n):  # one z-slab at a time keeps temporaries small
            z = c[k * sub:(k + 1) * sub, None, None]
            in_outer = z ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2 <= self.r_outer_nm ** 2
            in_core = ((z - oz) ** 2 + (c[None, :, None] - oy) ** 2 + (c[None, None, :] - ox) ** 2
                       <= self.r_core_nm ** 2)
            f_core = in_core.reshape(sub, n, sub, n, sub).mean(axis=(0, 2, 4))
            f_shell = (in_outer & ~in_core).reshape(sub, n, sub, n, sub).mean(axis=(0, 2, 4))
            vols[:, k] = self.core_density[:, None, None] * f_core + self.shell_density[:, None, None] * f_shell
        return {"Ag": vols[0], "Au": vols[1]}


def _chord(d2: np.ndarray, radius: float) -> np.ndarray:
    """Length of the chord at squared distance ``d2`` from a sphere's centre (0 outside)."""
    return 2.0 * np.sqrt(np.clip(radius ** 2 - d2, 0.0, None))


def _atomic_fractions(wt: np.ndarray, atomic_weight: np.ndarray) -> np.ndarray:
    moles = wt / atomic_weight
    return moles / moles.sum()


def _number_densities(wt: np.ndarray, atomic_weight: np.ndarray) -> np.ndarray:
    """Atoms per nm^3 of each element in an alloy of weight fractions ``wt``.

    Mixing rule: ideal solution, additive specific volumes,
    ``1 / rho = sum_A w_A / rho_A`` with the pure-element densities of xraylib
    (Ag 10.5, Au 19.32 g/cm^3). Ag and Au have nearly equal atomic volumes
    (17.1 vs 17.0 Å^3), so Vegard's law gives the same to 0.5 %.
    """
    rho_pure = np.array([xraylib.ElementDensity(int(z)) for z in _Z])
    rho = 1.0 / np.sum(wt / rho_pure)  # g/cm^3
    return rho * wt / atomic_weight * _AVOGADRO * 1e-21  # cm^-3 -> nm^-3


def _fractions(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (2,) or (arr < 0).any() or not math.isclose(arr.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"{what} must be two non-negative weight fractions (Ag, Au) summing to 1, got {values!r}")
    return arr


def _positive(value: float, what: str, *, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value
