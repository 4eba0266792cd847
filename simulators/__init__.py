"""The virtual microscope: sample phantoms, detector physics and fake drivers, with ground truth.

Imports only numpy/scipy and physics libraries, nothing else of emlive.
"""

from .aet_particle import AETParticle
from .eds_particle import EDSParticle
from .synthetic import SyntheticScan

__all__ = ["AETParticle", "EDSParticle", "SyntheticScan"]
