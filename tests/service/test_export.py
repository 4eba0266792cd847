"""Map pictures: grey levels follow the values; unfilled pixels stay black."""

import numpy as np

from emlive.service.export import map_to_image


def test_grey_levels_follow_the_values_and_nan_is_black():
    values = np.arange(12.0).reshape(3, 4)
    values[0, 0] = np.nan
    img = np.asarray(map_to_image(values, 0, 100))
    assert img[0, 0] == 0
    finite = img[np.isfinite(values)]
    assert finite.min() == 1 and finite.max() == 255
    assert np.all(np.diff(img.ravel()[1:].astype(int)) >= 0)  # monotonic in the values


def test_constant_and_empty_maps():
    assert (np.asarray(map_to_image(np.full((2, 2), 5.0))) == 128).all()
    assert (np.asarray(map_to_image(np.full((2, 2), np.nan))) == 0).all()
