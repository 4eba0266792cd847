"""Export of results for people: each 2-D map of a run as a PNG, beside the HDF5 file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


def map_to_image(values: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> Image.Image:
    """8-bit grey image of a map, levels at percentiles so a few hot pixels do not wash it out.

    Unfilled pixels (NaN) are black; a constant map is mid-grey.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    out = np.zeros(v.shape, dtype=np.uint8)
    if finite.any():
        lo, hi = np.percentile(v[finite], [low_pct, high_pct])
        if hi > lo:
            out[finite] = np.clip((v[finite] - lo) / (hi - lo) * 254 + 1, 1, 255).astype(np.uint8)
        else:
            out[finite] = 128
    return Image.fromarray(out, mode="L")


def export_maps(results_path: str | Path, folder: str | Path, scale: int = 4) -> list[Path]:
    """Write every 2-D ``map`` result of a ``results.h5`` as ``<analyzer>_<name>.png`` (upscaled ``scale``×)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with h5py.File(results_path, "r") as f:
        for analyzer, group in f["results"].items():
            for name, ds in group.items():
                if ds.attrs.get("kind") != "map" or ds.ndim != 2:
                    continue
                img = map_to_image(ds[()])
                if scale > 1:
                    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
                path = folder / f"{analyzer}_{name}.png"
                img.save(path, pnginfo=_info(ds))
                written.append(path)
    logger.info("wrote %d map images to %s", len(written), folder)
    return written


def _info(ds: h5py.Dataset):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("emlive:result", ds.name)
    info.add_text("emlive:units", str(ds.attrs.get("units", "")))
    info.add_text("emlive:axes", json.dumps(json.loads(ds.attrs.get("axes", "[]"))))
    return info
