"""X-ray emission physics for thin-film EDS quantification (seed 001, Yuan et al. 2020, eqs. 4-18).

The seed quantifies EDS (and HAADF-EDS bimodal) reconstructions with

    C_A = (X_A / f_A) / sum_B (X_B / f_B),   f_A = sigma_ion * omega * p * eps / M   (eqs. 7, 12)
    C_A = (X_A / z_A) / sum_B (X_B / z_B),   z_A = sigma_el / M                      (eqs. 14, 18)

Only ratios of the factors matter for weight fractions. The pieces come from:

* **Line families** (xraylib line macros, summed with their radiative rates):
  ``"Ka"`` = K-L3 + K-L2 (Kα1 + Kα2, K shell); ``"Kb"`` = K-M3 + K-M2 (Kβ1,3, K shell);
  ``"La"`` = L3-M5 + L3-M4 (Lα1 + Lα2, L3 shell); ``"Ma"`` = M5-N7 + M5-N6 (Mα1 + Mα2, M5 shell).
  The relative intensity ``p`` of a family is the sum of xraylib ``RadRate`` of its lines; its
  energy is their rate-weighted mean ``LineEnergy``.
* **Fluorescence yields**: xraylib ``FluorYield`` of the family's shell (no Coster-Kronig
  transfer: the seed's Table 2 values are direct-shell yields too).
* **Atomic weights**: IUPAC 2021 standard (conventional) values, tabulated here, because
  xraylib 4.3 ships older ones (Au 197.2 instead of 196.966570).
* **Electron-impact ionisation** (xraylib has none; its ``CS_*`` are photo-ionisation):
  K shells use Casnati, Tartari & Baraldi, J. Phys. B 15 (1982) 155, with the relativistic
  factor of Quarles, Phys. Rev. A 13 (1976) 1278, as reviewed by Llovet et al., J. Phys. Chem.
  Ref. Data 43 (2014) 013102. L3 and M5 use the relativistic Bethe form (Fano 1956; as written by
  Zaluzec and in Williams & Carter, *TEM*, ch. 35)

      sigma = 6.5141e-20 n_s b_s / (E_c T) [ln(c_s T / E_c) - ln(1 - beta^2) - beta^2]  cm^2,

  ``T = m c^2 beta^2 / 2`` (keV), ``E_c`` the edge (xraylib ``EdgeEnergy``), ``n_s`` the shell
  occupancy (xraylib ``ElectronConfig``), with Powell's (1976) constants b_s = 0.9, c_s = 0.65.
  Those constants were recommended for K shells; using them for L3/M5 is our choice, justified
  only by the comparison below. Against the seed's Table 2 (MC X-ray, which uses Bote & Salvat
  2009): Co K at 80 keV 427 vs 420 b (+1.6 %), Zn K at 80 keV 309 vs 302 b (+2.2 %), Ag L3 at
  100 keV 2513 vs 2440 b (+3.0 %), Au M5 at 100 keV 6596 vs 7460 b (-11.6 %).
* **Elastic cross-sections** (HAADF): the total screened-Rutherford cross-section with
  Wentzel (Thomas-Fermi) screening and relativistic kinematics,
  ``sigma = pi (Z e^2 / 4 pi eps0)^2 / (p v)^2 / (eta (1 + eta))``, ``eta = (hbar / (2 p a))^2``,
  ``a = 0.885 a0 Z^(-1/3)``. It comes out 16-17 % below all four Table 2 (Mott, Browning 1991)
  values, so its element ratios (all that quantification uses) agree to 1 %. A ``Z^gamma`` law
  scaled to Table 2's Ag value is the alternative (``"z-power"``).

Any factor can instead be taken from a table: ``source="seed-table-2"`` uses the seed's
Table 2 (Ag Lα, Au Mα at 100 keV; Co Kα, Zn Kα at 80 keV), or pass your own mapping
``{(element, line): {"sigma_ion": b, "omega": .., "p": .., "sigma_el": b}}`` (any subset of keys;
missing ones come from the library).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import xraylib
from scipy import optimize, special

from .form_factors import atomic_number as _parse_element

__all__ = ["LINE_FAMILIES", "SEED_TABLE_2", "IUPAC_ATOMIC_WEIGHTS", "atomic_number", "atomic_weight",
           "line_components", "line_energy", "line_shell", "fluorescence_yield", "relative_intensity",
           "ionisation_cross_section", "elastic_cross_section", "sensitivity_f", "haadf_z", "quantify",
           "esf_threshold"]

_MC2_KEV = 510.99895
_BETHE_PREFACTOR_CM2 = 6.5141e-20  # pi e^4 in cm^2 keV^2
_BARN_CM2 = 1e-24
_RYDBERG_KEV = 13.605693e-3
_A0_CM = 0.529177210903e-8
_A0_M = 0.529177210903e-10
_HBARC_EV_M = 197.3269804e-9
_E2_EV_M = 1.43996448e-9  # e^2 / (4 pi eps0)
_POWELL_B, _POWELL_C = 0.9, 0.65

#: Line family -> (shell name, xraylib line macros). See the module docstring.
LINE_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Ka": ("K", ("KA1_LINE", "KA2_LINE")),
    "Kb": ("K", ("KB1_LINE", "KB3_LINE")),
    "La": ("L3", ("LA1_LINE", "LA2_LINE")),
    "Ma": ("M5", ("MA1_LINE", "MA2_LINE")),
}
_LINE_ALIASES = {"ka": "Ka", "kα": "Ka", "kalpha": "Ka", "kb": "Kb", "kβ": "Kb", "kbeta": "Kb",
                 "la": "La", "lα": "La", "lalpha": "La", "ma": "Ma", "mα": "Ma", "malpha": "Ma"}
_SHELLS = {"K": "K_SHELL", "L1": "L1_SHELL", "L2": "L2_SHELL", "L3": "L3_SHELL", "M1": "M1_SHELL",
           "M2": "M2_SHELL", "M3": "M3_SHELL", "M4": "M4_SHELL", "M5": "M5_SHELL"}

#: Seed 001, Table 2 (MC X-ray): beam energy (keV), ionisation and elastic cross-sections (barn),
#: fluorescence yield and relative line intensity.
SEED_TABLE_2: dict[tuple[str, str], dict[str, float]] = {
    ("Ag", "La"): {"beam_kev": 100.0, "sigma_el": 9.90e6, "sigma_ion": 2.44e3, "omega": 0.057, "p": 0.816},
    ("Au", "Ma"): {"beam_kev": 100.0, "sigma_el": 1.98e7, "sigma_ion": 7.46e3, "omega": 0.030, "p": 0.999},
    ("Co", "Ka"): {"beam_kev": 80.0, "sigma_el": 5.59e6, "sigma_ion": 420.0, "omega": 0.369, "p": 0.891},
    ("Zn", "Ka"): {"beam_kev": 80.0, "sigma_el": 6.51e6, "sigma_ion": 302.0, "omega": 0.466, "p": 0.890},
}

#: IUPAC 2021 standard atomic weights (conventional values for interval elements; mass number of
#: the longest-lived isotope for Tc, Pm, Po-Ac), g/mol, indexed by Z - 1.
_IUPAC = (
    1.008, 4.002602, 6.94, 9.0121831, 10.81, 12.011, 14.007, 15.999, 18.998403163, 20.1797,
    22.98976928, 24.305, 26.9815384, 28.085, 30.973761998, 32.06, 35.45, 39.95, 39.0983, 40.078,
    44.955907, 47.867, 50.9415, 51.9961, 54.938043, 55.845, 58.933194, 58.6934, 63.546, 65.38,
    69.723, 72.630, 74.921595, 78.971, 79.904, 83.798, 85.4678, 87.62, 88.905838, 91.222,
    92.90637, 95.95, 98.0, 101.07, 102.90549, 106.42, 107.8682, 112.414, 114.818, 118.710,
    121.760, 127.60, 126.90447, 131.293, 132.90545196, 137.327, 138.90547, 140.116, 140.90766, 144.242,
    145.0, 150.36, 151.964, 157.25, 158.925354, 162.500, 164.930329, 167.259, 168.934219, 173.045,
    174.9668, 178.486, 180.94788, 183.84, 186.207, 190.23, 192.217, 195.084, 196.966570, 200.592,
    204.38, 207.2, 208.98040, 209.0, 210.0, 222.0, 223.0, 226.0, 227.0, 232.0377,
    231.03588, 238.02891,
)
IUPAC_ATOMIC_WEIGHTS: dict[int, float] = {z + 1: w for z, w in enumerate(_IUPAC)}


def atomic_number(element: str | int) -> int:
    """Atomic number of ``element`` (symbol such as ``"Co"`` or an int), limited to the weight table (Z = 1..92).

    Parsing is :func:`emlive.analyzers.form_factors.atomic_number`'s.
    """
    z = _parse_element(element)
    if not 1 <= z <= 92:
        raise ValueError(f"unknown element {element!r} (symbols and Z = 1..92 are supported)")
    return z


def _symbol(element: str | int) -> str:
    return xraylib.AtomicNumberToSymbol(atomic_number(element))


def _family(line: str) -> str:
    key = _LINE_ALIASES.get(str(line).strip().lower().replace(" ", ""))
    if key is None:
        raise ValueError(f"unknown line family {line!r}; use one of {sorted(LINE_FAMILIES)}")
    return key


def atomic_weight(element: str | int) -> float:
    """IUPAC 2021 standard atomic weight, g/mol."""
    return IUPAC_ATOMIC_WEIGHTS[atomic_number(element)]


def line_shell(line: str) -> str:
    """Shell whose ionisation produces the family (``"Ka"`` -> ``"K"``, ``"La"`` -> ``"L3"``)."""
    return LINE_FAMILIES[_family(line)][0]


def line_components(element: str | int, line: str) -> tuple[np.ndarray, np.ndarray]:
    """Energies (keV) and xraylib radiative rates of the lines that make up a family.

    Lines xraylib does not have for this element are left out; if none remain, ``ValueError``.
    """
    z = atomic_number(element)
    energies, rates = [], []
    for macro in LINE_FAMILIES[_family(line)][1]:
        code = getattr(xraylib, macro)
        try:
            e, r = xraylib.LineEnergy(z, code), xraylib.RadRate(z, code)
        except ValueError:
            continue
        if e > 0 and r > 0:
            energies.append(e)
            rates.append(r)
    if not energies:
        raise ValueError(f"xraylib has no {line} line for {_symbol(z)}")
    return np.array(energies), np.array(rates)


def line_energy(element: str | int, line: str) -> float:
    """Rate-weighted mean energy of the family's lines, keV."""
    e, r = line_components(element, line)
    return float(np.dot(e, r) / r.sum())


def _table_entry(element, line, source) -> dict[str, float] | None:
    if source in (None, "library"):
        return None
    table = SEED_TABLE_2 if source == "seed-table-2" else source
    if not isinstance(table, Mapping):
        raise ValueError(f"source must be 'library', 'seed-table-2' or a mapping, got {source!r}")
    key = (_symbol(element), _family(line))
    if key not in table:
        if source == "seed-table-2":
            raise ValueError(f"the seed's Table 2 has no {key[1]} entry for {key[0]} "
                             f"(it lists {sorted(SEED_TABLE_2)})")
        return None
    return dict(table[key])


def fluorescence_yield(element: str | int, line: str, source="library") -> float:
    """Fluorescence yield of the family's shell (xraylib ``FluorYield``, or a table)."""
    entry = _table_entry(element, line, source)
    if entry is not None and "omega" in entry:
        return float(entry["omega"])
    shell = getattr(xraylib, _SHELLS[line_shell(line)])
    return float(xraylib.FluorYield(atomic_number(element), shell))


def relative_intensity(element: str | int, line: str, source="library") -> float:
    """Fraction of the shell's radiative decays in the family: sum of xraylib ``RadRate`` (or a table)."""
    entry = _table_entry(element, line, source)
    if entry is not None and "p" in entry:
        return float(entry["p"])
    return float(line_components(element, line)[1].sum())


def _beta2(beam_kev: float) -> float:
    gamma = 1.0 + beam_kev / _MC2_KEV
    return 1.0 - 1.0 / gamma ** 2


def _casnati_cm2(edge_kev: float, beam_kev: float, n_s: float) -> float:
    u = beam_kev / edge_kev
    d = -0.0318 + 0.3160 / u - 0.1135 / u ** 2
    psi = (edge_kev / _RYDBERG_KEV) ** d
    phi = 10.57 * math.exp(-1.736 / u + 0.317 / u ** 2)
    j = _MC2_KEV / edge_kev
    rel = ((1 + 2 * j) / (u + 2 * j) * ((u + j) / (1 + j)) ** 2
           * (((1 + u) * (u + 2 * j) * (1 + j) ** 2) / (j ** 2 * (1 + 2 * j) + u * (u + 2 * j) * (1 + j) ** 2))
           ** 1.5)
    return n_s * _A0_CM ** 2 * psi * phi * rel * (_RYDBERG_KEV / edge_kev) ** 2 * math.log(u) / u


def _bethe_cm2(edge_kev: float, beam_kev: float, n_s: float, b: float, c: float) -> float:
    b2 = _beta2(beam_kev)
    t = _MC2_KEV * b2 / 2.0
    bracket = math.log(c * t / edge_kev) - math.log(1.0 - b2) - b2
    return max(_BETHE_PREFACTOR_CM2 * n_s * b / (edge_kev * t) * bracket, 0.0)


def ionisation_cross_section(element: str | int, shell: str, beam_kev: float, model: str = "auto",
                             source="library", line: str | None = None) -> float:
    """Electron-impact ionisation cross-section of one shell, barn.

    Parameters
    ----------
    element : str or int
    shell : str
        ``"K"``, ``"L1"``..``"L3"``, ``"M1"``..``"M5"``, or a line family (``"Ka"``, ``"La"``, ``"Ma"``),
        which means its shell.
    beam_kev : float
        Incident electron energy, keV.
    model : {"auto", "casnati", "bethe"}
        ``"auto"``: Casnati for K, relativistic Bethe (Powell's b, c) otherwise. Casnati is for K only.
    source : "library", "seed-table-2" or mapping
        A table entry for (element, line) overrides the model. Only used with a line family (or
        ``line``) since tables are keyed by line.
    line : str, optional
        Line family for the table lookup when ``shell`` is a shell name.

    Returns
    -------
    float
        0 below the edge.
    """
    beam_kev = float(beam_kev)
    if not math.isfinite(beam_kev) or beam_kev <= 0:
        raise ValueError(f"beam_kev must be finite and > 0, got {beam_kev}")
    if shell in _SHELLS:
        shell_name = shell
    else:
        line = _family(shell)
        shell_name = line_shell(line)
    if line is not None:
        entry = _table_entry(element, line, source)
        if entry is not None and "sigma_ion" in entry:
            return float(entry["sigma_ion"])
    z = atomic_number(element)
    code = getattr(xraylib, _SHELLS[shell_name])
    try:
        edge = float(xraylib.EdgeEnergy(z, code))
        n_s = float(xraylib.ElectronConfig(z, code))
    except ValueError:
        raise ValueError(f"xraylib has no {shell_name} shell data for {_symbol(z)}") from None
    if edge <= 0 or n_s <= 0:
        raise ValueError(f"{_symbol(z)} has no occupied {shell_name} shell in xraylib")
    if beam_kev <= edge:
        return 0.0
    if model == "auto":
        model = "casnati" if shell_name == "K" else "bethe"
    if model == "casnati":
        if shell_name != "K":
            raise ValueError("the Casnati (1982) formula is for K shells only; use model='bethe'")
        return _casnati_cm2(edge, beam_kev, n_s) / _BARN_CM2
    if model == "bethe":
        return _bethe_cm2(edge, beam_kev, n_s, _POWELL_B, _POWELL_C) / _BARN_CM2
    raise ValueError(f"model must be 'auto', 'casnati' or 'bethe', got {model!r}")


def elastic_cross_section(element: str | int, beam_kev: float, model: str = "screened-rutherford",
                          gamma: float = 1.33) -> float:
    """Total elastic cross-section, barn.

    Parameters
    ----------
    model : {"screened-rutherford", "z-power"}
        Screened Rutherford with Wentzel/Thomas-Fermi screening (relativistic ``p v``), or
        ``sigma_Ag(Table 2, 100 keV) * (Z / 47)^gamma * (beta_100^2 p_100^2 / beta^2 p^2)``: a Z^gamma law
        anchored on the seed's Ag value, with the Rutherford energy scaling.
    gamma : float
        Exponent for ``"z-power"`` (1.33 reproduces Table 2's Au/Ag ratio of 2.0).
    """
    z = atomic_number(element)
    beam_kev = float(beam_kev)
    if not math.isfinite(beam_kev) or beam_kev <= 0:
        raise ValueError(f"beam_kev must be finite and > 0, got {beam_kev}")

    def pv2_ev2(e_kev):
        e = e_kev * 1e3
        pc2 = e * (e + 2 * _MC2_KEV * 1e3)
        return pc2 * _beta2(e_kev), pc2

    pv2, pc2 = pv2_ev2(beam_kev)
    if model == "screened-rutherford":
        a = 0.885 * _A0_M * z ** (-1.0 / 3.0)
        eta = 0.25 * _HBARC_EV_M ** 2 / (pc2 * a ** 2)
        sigma_m2 = math.pi * (z * _E2_EV_M) ** 2 / pv2 / (eta * (1.0 + eta))
        return sigma_m2 * 1e28
    if model == "z-power":
        ref = SEED_TABLE_2[("Ag", "La")]
        return ref["sigma_el"] * (z / 47.0) ** float(gamma) * pv2_ev2(ref["beam_kev"])[0] / pv2
    raise ValueError(f"model must be 'screened-rutherford' or 'z-power', got {model!r}")


def sensitivity_f(element: str | int, line: str, beam_kev: float, efficiency: float = 1.0, source="library",
                  model: str = "auto") -> float:
    """Seed eq. 7: ``f_A = sigma_ion * omega * p * eps / M``, barn mol / g.

    Parameters
    ----------
    element, line : the emitter and its line family (``"Ka"``, ``"La"``, ``"Ma"``, ``"Kb"``).
    beam_kev : float
        Beam energy, keV (ignored for a tabulated ``sigma_ion``).
    efficiency : float
        Detector efficiency ε at this line (default 1: ratios only need relative ε).
    source : "library", "seed-table-2" or mapping
        Table values override the library ones entry by entry.
    model : str
        Ionisation model, see :func:`ionisation_cross_section`.
    """
    if not (math.isfinite(efficiency) and efficiency > 0):
        raise ValueError(f"efficiency must be finite and > 0, got {efficiency}")
    sigma = ionisation_cross_section(element, line, beam_kev, model=model, source=source)
    omega = fluorescence_yield(element, line, source=source)
    p = relative_intensity(element, line, source=source)
    return sigma * omega * p * float(efficiency) / atomic_weight(element)


def haadf_z(element: str | int, beam_kev: float = 100.0, source="library", line: str | None = None,
            model: str = "screened-rutherford", gamma: float = 1.33) -> float:
    """Seed eq. 14: ``z_A = sigma_el / M``, barn mol / g.

    With ``source="seed-table-2"`` (or a mapping) the tabulated ``sigma_el`` of (element, line) is used;
    ``line`` defaults to the element's only entry in the table.
    """
    if source not in (None, "library"):
        table = SEED_TABLE_2 if source == "seed-table-2" else source
        if not isinstance(table, Mapping):
            raise ValueError(f"source must be 'library', 'seed-table-2' or a mapping, got {source!r}")
        sym = _symbol(element)
        keys = [k for k in table if k[0] == sym and (line is None or k[1] == _family(line))]
        hits = [k for k in keys if "sigma_el" in table[k]]
        if hits:
            return float(table[hits[0]]["sigma_el"]) / atomic_weight(element)
        if source == "seed-table-2":
            raise ValueError(f"the seed's Table 2 has no elastic cross-section for {sym}")
    return elastic_cross_section(element, beam_kev, model=model, gamma=gamma) / atomic_weight(element)


def quantify(maps: Mapping[str, np.ndarray], factors: Mapping[str, float],
             threshold: float | None = None) -> dict[str, np.ndarray]:
    """Weight fractions ``C_A = (X_A / f_A) / sum_B (X_B / f_B)`` (seed eqs. 12, 18).

    Parameters
    ----------
    maps : mapping element -> array
        Reconstructed (or projected) intensities ``X_A``, all the same shape.
    factors : mapping element -> float
        ``f_A`` (EDS) or ``z_A`` (HEBT) for every element of ``maps``.
    threshold : float, optional
        Pixels whose ``sum_B X_B / f_B`` is at or below it are NaN (the seed thresholds the
        particle before normalising; see :func:`esf_threshold`). Without it only zero sums are NaN.

    Returns
    -------
    dict element -> float array
        NaN where the sum is 0 (or below the threshold).
    """
    if not maps:
        raise ValueError("maps is empty")
    missing = [el for el in maps if el not in factors]
    if missing:
        raise ValueError(f"no factor for {missing}")
    arrays = {el: np.asarray(m, dtype=float) for el, m in maps.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"maps must share one shape, got {sorted(shapes)}")
    scaled = {}
    for el, a in arrays.items():
        f = float(factors[el])
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"factor of {el} must be finite and > 0, got {f}")
        scaled[el] = a / f
    total = sum(scaled.values())
    cut = 0.0 if threshold is None else float(threshold)
    bad = ~(total > cut) if threshold is not None else total == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return {el: np.where(bad, np.nan, s / np.where(bad, 1.0, total)) for el, s in scaled.items()}


def esf_threshold(total: np.ndarray, n_thresholds: int = 256) -> tuple[float, dict[str, np.ndarray]]:
    """Particle threshold where the fitted volume changes least with the threshold (seed 2.1, Collins 2019).

    The volume ``V(t)`` (number of voxels above ``t``) of a particle on a noisy
    background falls in two smoothed steps: at low ``t`` the background noise drops
    out, at high ``t`` the object itself. We fit the sum of two edge-spread functions,

        V(t) = (a/2) erfc((t − t₁)/(√2 s₁)) + (b/2) erfc((t − t₂)/(√2 s₂)),

    and return the threshold between t₁ and t₂ where |dV/dt| of the fit is smallest
    (the seed's rule). The plateau between the steps is where the particle's
    outline is least sensitive to the choice, so the boundary voxels of a sharp
    reconstruction stay in and the noise stays out.

    Parameters
    ----------
    total : ndarray
        ``sum_B X_B / f_B`` per pixel/voxel.
    n_thresholds : int
        Number of thresholds between 0 and the maximum.

    Returns
    -------
    threshold : float
    details : dict
        ``thresholds``, ``volumes``, ``fit`` (a, t₁, s₁, b, t₂, s₂).
    """
    t = np.asarray(total, dtype=float).ravel()
    t = t[np.isfinite(t)]
    if t.size == 0 or not (t.max() > 0):
        raise ValueError("total has no positive finite values")
    top = float(t.max())
    grid = np.linspace(0.0, top, int(n_thresholds))
    vol = (t.size - np.searchsorted(np.sort(t), grid, side="right")).astype(float)

    def esf(x, a, t1, s1, b, t2, s2):
        return 0.5 * (a * special.erfc((x - t1) / (math.sqrt(2.0) * abs(s1)))
                      + b * special.erfc((x - t2) / (math.sqrt(2.0) * abs(s2))))

    n_obj = float((t > 0.5 * np.percentile(t, 99)).sum())            # voxels clearly inside the object
    p0 = (max(vol[1] - n_obj, 1.0), 0.05 * top, 0.05 * top, n_obj, 0.8 * float(np.percentile(t[t > 0], 90)),
          0.1 * top)
    try:
        with warnings.catch_warnings():   # an inestimable covariance is no concern here: only the fit is used
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, _ = optimize.curve_fit(esf, grid[1:], vol[1:], p0=p0, maxfev=20000)
    except RuntimeError:
        popt = np.asarray(p0)
    lo, hi = sorted((float(popt[1]), float(popt[4])))
    lo, hi = max(lo, 0.0), min(hi, top)
    if not hi > lo:                                                   # one step only: the foot of the lower one
        t_low, s_low = (popt[1], popt[2]) if popt[1] <= popt[4] else (popt[4], popt[5])
        return float(max(t_low - 2 * abs(s_low), 0.0)), {"thresholds": grid, "volumes": vol, "fit": np.asarray(popt)}
    fine = np.linspace(lo, hi, 2048)
    slope = np.abs(np.gradient(esf(fine, *popt), fine))
    threshold = float(fine[int(np.argmin(slope))])
    return threshold, {"thresholds": grid, "volumes": vol, "fit": np.asarray(popt)}
