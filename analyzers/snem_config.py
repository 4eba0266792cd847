"""The SNEM analysis recipe: one TOML section (calibration, masks, integration, reduction, QoIs, NMF).

Kept apart from :mod:`.snem` so the service, the CLI and the docs can read and
validate a configuration without building any operator. Defaults are the seed's
Table S1 (SNEM paper, seed 000). In a service configuration::

    [[analyzers]]
    name = "snem"
    [analyzers.params.mask]
    alpha = 3.5
    saturation = 4095
    [analyzers.params.pdf]
    composition = {Zr = 65.0, Cu = 17.5, Ni = 10.0, Al = 7.5}
    qmax = 8.1

Every field is optional; unknown keys are refused with their name, so a typo
does not silently fall back to a default.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from emlive.stream.protocol import Calibration

__all__ = ["CalibrationOverrides", "MaskConfig", "IntegrationConfig", "PdfConfig", "FitConfig", "QoiConfig",
           "NmfConfig", "SnemConfig", "parse_snem_config"]

_NOMINAL = {"Zr": 65.0, "Cu": 17.5, "Ni": 10.0, "Al": 7.5}  # the seed's Zr65Cu17.5Ni10Al7.5


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class CalibrationOverrides(_Section):
    """Values that replace the stream header's calibration (e.g. a refined centre or ellipse)."""

    beam_energy_kev: float | None = None
    reciprocal_pixel_size: float | None = None  # Å⁻¹ per pixel, q = 2π/d
    center: tuple[float, float] | None = None   # (cy, cx) px
    ellipse: tuple[float, float] | None = None  # (ratio, angle_deg)
    pixel_size_m: float = 55e-6                 # only scales pyFAI's geometry; results do not depend on it

    def apply(self, header: Calibration) -> Calibration:
        changes = {k: getattr(self, k) for k in ("beam_energy_kev", "reciprocal_pixel_size", "center", "ellipse")
                   if getattr(self, k) is not None}
        return msgspec.structs.replace(header, **changes) if changes else header


class MaskConfig(_Section):
    """Static mask and the automatic ring-outlier mask (Table S1(i))."""

    edge: int = 3
    beam_stop: float | None = 0.6               # Å⁻¹: disc masked around the centre (the direct beam's tails)
    dead_pixels: list[tuple[int, int]] = []
    saturation: float | None = None             # counts at which a pixel saturates (the direct beam)
    auto: bool = True
    alpha: float = 3.5
    lower: float = 1.0
    upper: float | None = None
    max_iter: int = 10
    ring_width: float = 1.0                     # px of undistorted radius

    def __post_init__(self) -> None:
        if self.beam_stop is not None and not self.beam_stop >= 0:
            raise ValueError("mask: beam_stop must be >= 0 (Å⁻¹) or None")
        if self.edge < 0 or self.max_iter < 1 or not self.alpha > 0 or not self.ring_width > 0:
            raise ValueError("mask: edge >= 0, max_iter >= 1, alpha > 0 and ring_width > 0 expected")


class IntegrationConfig(_Section):
    """Radial integration: bins (default one per pixel of radius) and pyFAI's pixel splitting."""

    npt: int | None = None
    r_min: float = 0.0                          # px
    r_max: float | None = None                  # px, default the inscribed circle
    split: str = "bbox"                         # pyFAI pixel splitting: no | bbox | full


class PdfConfig(_Section):
    """PDFgetX3 reduction (Table S1(ii)); ``composition`` in at.% or fractions."""

    composition: dict[str, float] = msgspec.field(default_factory=lambda: dict(_NOMINAL))
    qmin: float = 0.1
    qmax: float = 8.1
    qmaxinst: float = 12.0
    rpoly: float = 1.2
    rmin: float = 0.0
    rmax: float = 10.0
    rstep: float = 0.02                         # Å: 20× finer than the resolution π/qmax = 0.39 Å


class FitConfig(_Section):
    """One robust Gaussian fit of Eq. 11; ``p0`` None: a data-driven start inside the bounds."""

    enabled: bool = True
    p0: list[float] | None = None
    lower: list[float] | None = None            # None: Table S1(iii)
    upper: list[float] | None = None


class QoiConfig(_Section):
    """Quantities of interest mapped per position."""

    vbf_radius: float = 0.5                     # Å⁻¹: bright-field disc (saturated pixels left out)
    annulus: tuple[float, float] = (2.2, 3.3)   # Å⁻¹: the first diffuse ring (VDF sum and max)
    peak_window: tuple[float, float] = (2.1, 4.0)  # Å: first-peak search and Gaussian fits
    loss: str = "soft_l1"
    f_scale: float = 0.005
    max_iter: int = 200
    one_gaussian: FitConfig = FitConfig()
    two_gaussians: FitConfig = FitConfig()
    pearson_window: tuple[float, float] = (1.5, 10.0)  # Å: the part of G(r) compared by the Pearson query
    keep_stacks: bool = True                    # per-position I(Q) and G(r)

    def __post_init__(self) -> None:
        for name in ("annulus", "peak_window", "pearson_window"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
                raise ValueError(f"qoi.{name} must be two increasing non-negative numbers, got {(lo, hi)}")
        if self.loss not in ("soft_l1", "linear"):
            raise ValueError(f"qoi.loss must be 'soft_l1' or 'linear', got {self.loss!r}")
        if not self.f_scale > 0:
            raise ValueError("qoi.f_scale must be > 0")


class NmfConfig(_Section):
    """NMF bond maps and the SRO parameter (seed Fig. 9; :mod:`.bonds`)."""

    enabled: bool = True
    n_components: int = 4
    window: tuple[float, float] = (2.1, 4.0)    # Å of G(r) factorised
    margin: float = 0.1                         # positive shift above the minimum, relative to the range
    heavy: str = "Zr"                           # the A of the pseudo-binary [A, X]; X is the rest
    scattering_weights: bool = True             # pair fractions corrected by f_i f_j (see bonds.py)
    exclude_crystalline: float = 0.02           # positions whose auto mask removed more of the ring intensity
    update_every: int = 2048                    # frames between live updates ...
    live_interval_s: float = 5.0                # ... and at least this long (the host merges meanwhile)
    live_positions: int = 2000                  # live: components from this many positions, weights for all
    live_max_iter: int = 50
    final_max_iter: int = 1000
    tol: float = 1e-4                           # end-of-scan solver tolerance: scikit-learn's default (the
                                                # seed used its NMF); tighter moves along equal-error solutions where
                                                # nmf_stability is low
    random_state: int = 0
    restarts: int = 3                           # end of scan: random restarts that test whether the data
                                                # determine the components (bonds.component_stability); 0: off

    def __post_init__(self) -> None:
        if self.restarts < 0:
            raise ValueError("nmf.restarts must be >= 0")
        if not self.tol > 0:
            raise ValueError("nmf.tol must be > 0")
        if self.n_components < 4:
            raise ValueError("nmf.n_components must be >= 4 (three pairs and a background)")
        if self.update_every < 1:
            raise ValueError("nmf.update_every must be >= 1")


class SnemConfig(_Section):
    """The whole recipe."""

    calibration: CalibrationOverrides = CalibrationOverrides()
    mask: MaskConfig = MaskConfig()
    integration: IntegrationConfig = IntegrationConfig()
    pdf: PdfConfig = PdfConfig()
    qoi: QoiConfig = QoiConfig()
    nmf: NmfConfig = NmfConfig()


def parse_snem_config(params: dict[str, Any] | None) -> SnemConfig:
    """Validate analyzer parameters (a TOML section as a dict) into a :class:`SnemConfig`.

    Raises ``ValueError`` naming the offending field.
    """
    try:
        return msgspec.convert(dict(params or {}), SnemConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid snem configuration: {exc}") from None
