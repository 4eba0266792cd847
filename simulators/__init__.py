"""The virtual microscope: sample phantoms, detector physics and fake drivers, with ground truth.

Imports only numpy/scipy and physics libraries, nothing else of emlive.
"""

from . import form_factors, physics
from .aet_particle import AETParticle
from .detector import DetectorModel, frame_rng
from .ecm_nanowire import ECMNanowire
from .eds_particle import EDSParticle
from .fem_film import FEMFilm
from .form_factors import electron_form_factor
from .laminate import SnemLaminate
from .synthetic import SyntheticScan

__all__ = ["AETParticle", "DetectorModel", "ECMNanowire", "EDSParticle", "FEMFilm", "SnemLaminate",
           "SyntheticScan", "electron_form_factor", "form_factors", "frame_rng", "physics"]
