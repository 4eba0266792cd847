"""The analyzer registry and the package's exports."""

import pytest

import emlive.analyzers
from emlive.analyzers import ANALYZERS, VirtualDetectors, build_analyzer

def test_registry_builds_analyzers_by_name():
    assert ANALYZERS["virtual"] is VirtualDetectors
    analyzer = build_analyzer("virtual", {"bf_radius": 3})
    assert isinstance(analyzer, VirtualDetectors) and analyzer.params == {"bf_radius": 3}


def test_registry_names_the_available_analyzers_for_an_unknown_name():
    with pytest.raises(ValueError, match=r"unknown analyzer 'nope'; available: .*virtual"):
        build_analyzer("nope", {})


def test_package_exports_its_public_names():
    assert set(emlive.analyzers.__all__) >= {"Analyzer", "PixelAnalyzer", "BoundaryHook", "VirtualDetectors",
                                             "build_analyzer", "ANALYZERS"}
    for name in emlive.analyzers.__all__:
        assert getattr(emlive.analyzers, name) is not None
    with pytest.raises(AttributeError):
        emlive.analyzers.nope  # noqa: B018
