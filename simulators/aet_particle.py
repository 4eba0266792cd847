"""A partially L1₀-ordered FePt nanoparticle and its ADF-STEM tilt series, for atomic electron tomography.

The sample of the AET work reviewed by Zhou, Yang, Ercius and Miao, MRS
Bulletin 45(4) (2020) (seed ``004_77b6dd7cd7599171``): an fcc FePt particle of
a few thousand atoms with chemically ordered L1₀ regions and antisite defects,
imaged by ADF-STEM over a single-axis tilt series whose projections drift by a
few ångström (which AET removes by centre-of-mass and common-line alignment).

Model, and why:

* Lattice: cubic fcc, ``a = 3.85 Å`` (the tetragonality of L1₀ FePt,
  c/a = 0.96, is ignored so that the lattice is one parameter). The L1₀
  ordering puts Pt on the (001) planes at ``z = 0 (mod a)`` (sublattice α) and
  Fe on those at ``z = a/2`` (sublattice β). The particle is cut as a sphere or
  a truncated octahedron centred on a lattice site.
* Chemical order: the long-range order parameter ``S = r_α + r_β - 1``
  (Warren), with ``r_α`` the fraction of α sites holding Pt and ``r_β`` that of
  β sites holding Fe. The number of Pt atoms on α is chosen so that S is met as
  closely as the integer site counts allow, and the antisite atoms are placed
  on randomly chosen sites: random antisite disorder, no domains.
* ADF-STEM image (incoherent, single-scattering, no channelling): each atom
  contributes ``dose * sigma0 * Z^1.7`` counts spread by a Gaussian probe. The
  exponent 1.7 lies in the 1.6-1.9 range measured for HAADF Z-contrast
  (Rutherford's Z² reduced by screening; Krivanek et al., Nature 464 (2010)
  571, report ~1.64). The Gaussian is integrated exactly over each pixel, so
  it is separable and one projection is a single matrix product
  ``Gy^T diag(w) Gx`` (no splatting error, exact sub-pixel shifts).
* Drift: each projection is shifted by a random (dy, dx) (normal, ``shift_rms_A``
  per axis), recorded as truth; the image shows the particle at ``r + shift``.

Geometry as in :mod:`.eds_particle`: coordinates (x, y, z) in Å from the
particle centre; at tilt ``theta`` the particle is rotated about y
(x -> x cos θ + z sin θ) and projected along z. Pixel (i, j) is centred at
``y = (i - (ny - 1) / 2) * pixel_A``, ``x = (j - (nx - 1) / 2) * pixel_A``.
Shifts and noise come from streams keyed by (seed, angle in millidegrees), so
a projection at a given angle is the same whenever and however it is asked for.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import special

__all__ = ["AETParticle"]

logger = logging.getLogger(__name__)

Z_FE, Z_PT = 26, 78
_LAYOUT_TAG, _SHIFT_TAG, _NOISE_TAG = 0x4C41, 0x5348, 0x4E4F
# fcc basis in units of a; the first two lie on z = 0 planes (sublattice α, Pt in L1₀).
_BASIS = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
_SUBLATTICE = np.array([0, 0, 1, 1])


class AETParticle:
    """ADF-STEM tilt series of an FePt fcc nanoparticle with known atoms, order and drift.

    Parameters
    ----------
    radius_A : float
        Sphere radius, or distance of the {100} facets for a truncated octahedron, Å.
    lattice_A : float
        Cubic fcc lattice parameter, Å.
    shape : {"sphere", "truncated_octahedron"}
        Particle shape.
    facet_ratio : float
        Truncated octahedron only: distance of the {111} facets over that of the
        {100} facets (sqrt(3)/2 = 0.866 gives the regular Archimedean solid).
    pt_fraction : float
        Atomic fraction of Pt; the Pt count is ``round(pt_fraction * n_atoms)``.
    order : float
        Requested L1₀ long-range order parameter S (0 random alloy, 1 perfect).
        Unequal α/β site counts or a composition away from 50/50 cap the
        reachable S below 1; the generated S is then the closest reachable
        value (logged) and :meth:`ground_truth` reports it.
    displacement_rms_A : float
        Gaussian static/thermal displacement of each coordinate, Å.
    image_shape : (ny, nx)
        Projection size, pixels.
    pixel_A : float
        Pixel size, Å.
    probe_fwhm_A : float
        FWHM of the Gaussian probe, Å.
    z_exponent : float
        Exponent of the Z-contrast law.
    dose_per_A2 : float
        Electron dose per projection, e/Å^2.
    adf_sigma0_A2 : float
        ADF cross-section prefactor: an atom scatters ``adf_sigma0_A2 * Z^z_exponent``
        Å^2 onto the detector (default: ~2 % of the electrons in 1 Å^2 for Pt).
    shift_rms_A : float
        Standard deviation of the per-projection drift along each axis, Å.
    seed : int
        Non-negative seed.

    Examples
    --------
    >>> sim = AETParticle(radius_A=12.0, image_shape=(96, 96), seed=1)
    >>> sim.tilt_series([-30.0, 0.0, 30.0]).shape
    (3, 96, 96)
    >>> truth = sim.ground_truth()
    >>> truth["positions"].shape == (truth["n_atoms"], 3), sorted(np.unique(truth["species"]).tolist())
    (True, [26, 78])
    """

    def __init__(self, radius_A: float = 22.0, lattice_A: float = 3.85, shape: str = "sphere",
                 facet_ratio: float = 0.866, pt_fraction: float = 0.5, order: float = 0.6,
                 displacement_rms_A: float = 0.05, image_shape: tuple[int, int] = (256, 256),
                 pixel_A: float = 0.35, probe_fwhm_A: float = 0.8, z_exponent: float = 1.7,
                 dose_per_A2: float = 1e5, adf_sigma0_A2: float = 1.2e-5, shift_rms_A: float = 1.0,
                 seed: int = 0) -> None:
        self.radius_A = _positive(radius_A, "radius_A")
        self.lattice_A = _positive(lattice_A, "lattice_A")
        if shape not in ("sphere", "truncated_octahedron"):
            raise ValueError(f"shape must be 'sphere' or 'truncated_octahedron', got {shape!r}")
        self.shape = shape
        self.facet_ratio = _positive(facet_ratio, "facet_ratio")
        self.pt_fraction = float(pt_fraction)
        if not 0.0 <= self.pt_fraction <= 1.0:
            raise ValueError(f"pt_fraction must be in [0, 1], got {pt_fraction}")
        self.order = float(order)
        if not 0.0 <= self.order <= 1.0:
            raise ValueError(f"order must be in [0, 1], got {order}")
        self.displacement_rms_A = _positive(displacement_rms_A, "displacement_rms_A", allow_zero=True)
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 2 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be two positive integers, got {image_shape!r}")
        self.pixel_A = _positive(pixel_A, "pixel_A")
        self.probe_fwhm_A = _positive(probe_fwhm_A, "probe_fwhm_A")
        self.z_exponent = float(z_exponent)
        self.dose_per_A2 = _positive(dose_per_A2, "dose_per_A2", allow_zero=True)
        self.adf_sigma0_A2 = _positive(adf_sigma0_A2, "adf_sigma0_A2")
        self.shift_rms_A = _positive(shift_rms_A, "shift_rms_A", allow_zero=True)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self._sites, self._sublattice = self._cut_lattice()
        rng = np.random.Generator(np.random.SFC64([self.seed, _LAYOUT_TAG]))
        self.species = self._decorate(rng)
        self.positions = self._sites + rng.normal(0.0, self.displacement_rms_A, self._sites.shape)
        # Expected counts per atom: dose * sigma0 * Z^gamma.
        self.counts_per_atom = self.dose_per_A2 * self.adf_sigma0_A2 * self.species.astype(float) ** self.z_exponent
        self._shifts: dict[int, tuple[float, float]] = {}
        logger.debug("AETParticle: %d atoms (%d Pt), S = %.4f", self.n_atoms, int((self.species == Z_PT).sum()),
                     self.order_parameter)

    @property
    def n_atoms(self) -> int:
        return int(self.species.size)

    @property
    def order_parameter(self) -> float:
        """S = r_α + r_β - 1 of the generated particle."""
        return _order_parameter(self.species, self._sublattice)

    def shift(self, angle_deg: float) -> tuple[float, float]:
        """Drift (dy, dx) of the projection at ``angle_deg``, Å; recorded for :meth:`ground_truth`."""
        key = _angle_key(angle_deg)
        if key not in self._shifts:
            rng = np.random.Generator(np.random.SFC64([self.seed, _SHIFT_TAG, *_words(key)]))
            dy, dx = rng.normal(0.0, self.shift_rms_A, 2) if self.shift_rms_A > 0 else (0.0, 0.0)
            self._shifts[key] = (float(dy), float(dx))
        return self._shifts[key]

    def projection(self, angle_deg: float, noise: bool = True) -> np.ndarray:
        """ADF-STEM projection at ``angle_deg`` about y, ``(ny, nx)`` float64 counts.

        With ``noise=False`` the expected counts; they sum to
        ``sum(counts_per_atom)`` when the whole particle lies in the field of view.
        """
        angle = float(angle_deg)
        if not math.isfinite(angle):
            raise ValueError(f"angle_deg must be finite, got {angle_deg!r}")
        dy, dx = self.shift(angle)
        th = math.radians(angle)
        x, y, z = self.positions.T
        px = x * math.cos(th) + z * math.sin(th) + dx
        py = y + dy
        ny, nx = self.image_shape
        img = _pixel_weights(py, ny, self.pixel_A, self.probe_fwhm_A).T * self.counts_per_atom
        img = img @ _pixel_weights(px, nx, self.pixel_A, self.probe_fwhm_A)
        if not noise:
            return img
        key = _angle_key(angle)
        rng = np.random.Generator(np.random.SFC64([self.seed, _NOISE_TAG, *_words(key)]))
        return rng.poisson(img).astype(float)

    def tilt_series(self, angles, noise: bool = True) -> np.ndarray:
        """Projections at ``angles`` (degrees), ``(n, ny, nx)``."""
        angles = np.atleast_1d(np.asarray(angles, dtype=float))
        return np.stack([self.projection(a, noise=noise) for a in angles])

    def ground_truth(self, angles=None) -> dict[str, np.ndarray | float | int]:
        """The atoms, their order, and the drift of the projections.

        Parameters
        ----------
        angles : array_like, optional
            Angles whose shifts to report; default: every angle projected so far.

        Returns
        -------
        dict
            ``positions`` (n, 3) Å as (x, y, z), with displacements;
            ``lattice_sites`` (n, 3) Å, ideal; ``species`` (n,) atomic numbers;
            ``sublattice`` (n,) 0 = α (Pt planes), 1 = β (Fe planes);
            ``order_parameter`` (generated), ``order_requested``, ``n_atoms``,
            ``pt_fraction`` (generated); ``counts_per_atom`` (n,) expected
            counts; ``shift_angles_deg`` (m,), ``shifts_A`` (m, 2) as (dy, dx);
            ``lattice_A``, ``pixel_A``, ``probe_fwhm_A``, ``z_exponent``.
        """
        if angles is None:
            keys = sorted(self._shifts)
            shift_angles = np.array(keys, dtype=float) / 1000.0
        else:
            shift_angles = np.atleast_1d(np.asarray(angles, dtype=float))
        shifts = np.array([self.shift(a) for a in shift_angles]).reshape(-1, 2)
        return {
            "positions": self.positions.copy(), "lattice_sites": self._sites.copy(),
            "species": self.species.copy(), "sublattice": self._sublattice.copy(),
            "order_parameter": self.order_parameter, "order_requested": self.order,
            "n_atoms": self.n_atoms, "pt_fraction": float((self.species == Z_PT).mean()),
            "counts_per_atom": self.counts_per_atom.copy(),
            "shift_angles_deg": shift_angles, "shifts_A": shifts,
            "lattice_A": self.lattice_A, "pixel_A": self.pixel_A, "probe_fwhm_A": self.probe_fwhm_A,
            "z_exponent": self.z_exponent,
        }

    def _cut_lattice(self) -> tuple[np.ndarray, np.ndarray]:
        """fcc sites inside the particle shape, Å, and their sublattice (0 α, 1 β)."""
        n = int(math.ceil(self.radius_A / self.lattice_A)) + 1
        cells = np.stack(np.meshgrid(*(np.arange(-n, n + 1),) * 3, indexing="ij"), -1).reshape(-1, 1, 3)
        sites = ((cells + _BASIS[None]) * self.lattice_A).reshape(-1, 3)
        sub = np.broadcast_to(_SUBLATTICE, (cells.shape[0], 4)).reshape(-1)
        if self.shape == "sphere":
            keep = (sites ** 2).sum(1) <= self.radius_A ** 2 + 1e-9
        else:
            a = np.abs(sites)
            keep = ((a.max(1) <= self.radius_A + 1e-9)
                    & (a.sum(1) / math.sqrt(3) <= self.facet_ratio * self.radius_A + 1e-9))
        if not keep.any():
            raise ValueError(f"no lattice site inside a {self.shape} of radius {self.radius_A} Å")
        return sites[keep], sub[keep].copy()

    def _decorate(self, rng: np.random.Generator) -> np.ndarray:
        """Atomic numbers with the requested Pt count and order parameter, antisites at random sites."""
        on_alpha = self._sublattice == 0
        n_a, n_b = int(on_alpha.sum()), int((~on_alpha).sum())
        n_pt = int(round(self.pt_fraction * (n_a + n_b)))
        # S = k / n_a + (n_b - (n_pt - k)) / n_b - 1 for k Pt atoms on α; solve for k, then round.
        k = (self.order + n_pt / n_b) / (1 / n_a + 1 / n_b) if n_a and n_b else 0.0
        k = int(np.clip(round(k), max(0, n_pt - n_b), min(n_a, n_pt)))
        s_got = k / n_a + (n_b - n_pt + k) / n_b - 1 if n_a and n_b else float("nan")
        if n_a and n_b and abs(s_got - self.order) > 1 / n_a + 1 / n_b:
            logger.info("order %.3f is out of reach with %d Pt atoms on %d α and %d β sites; generated S = %.4f",
                        self.order, n_pt, n_a, n_b, s_got)
        species = np.full(n_a + n_b, Z_FE, dtype=np.int64)
        alpha, beta = np.flatnonzero(on_alpha), np.flatnonzero(~on_alpha)
        species[rng.choice(alpha, k, replace=False)] = Z_PT
        species[rng.choice(beta, n_pt - k, replace=False)] = Z_PT
        return species


def _order_parameter(species: np.ndarray, sublattice: np.ndarray) -> float:
    alpha = sublattice == 0
    if alpha.all() or not alpha.any():
        return float("nan")
    return float((species[alpha] == Z_PT).mean() + (species[~alpha] == Z_FE).mean() - 1.0)


def _pixel_weights(centre: np.ndarray, n: int, pixel: float, fwhm: float) -> np.ndarray:
    """Fraction of a 1D Gaussian (per atom) that falls in each of ``n`` pixels, ``(n_atoms, n)``."""
    edges = (np.arange(n + 1) - n / 2) * pixel
    cdf = special.ndtr((edges[None, :] - centre[:, None]) * (2.3548200450309493 / fwhm))
    return np.diff(cdf, axis=1)


def _angle_key(angle_deg: float) -> int:
    """The angle in whole millidegrees: angles closer than 0.5 mdeg share shifts and noise."""
    return int(round(float(angle_deg) * 1000.0))


def _words(key: int) -> tuple[int, int]:
    """A signed key as two non-negative 32-bit words, as SeedSequence wants."""
    u = key % (1 << 64)
    return u & 0xFFFFFFFF, u >> 32


def _positive(value: float, what: str, *, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value
