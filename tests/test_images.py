import re

import numpy as np
import pytest
from PIL import Image

from cytocompare import DataError, ImageSet, read_image


def _write(tmp_path, arr, name="x.png"):
    p = tmp_path / name
    Image.fromarray(arr).save(p)
    return p


def test_center_crop_keeps_the_centre_and_scale(tmp_path):
    arr = np.zeros((30, 40, 3), np.uint8)
    arr[10:20, 15:25] = 200  # a 10x10 block in the middle
    p = _write(tmp_path, arr)
    out = read_image(p, crop=(10, 10))
    assert out.shape == (10, 10, 3) and (out == 200).all()
    both = read_image(p, crop=(20, 20), resize=(10, 10))
    assert both.shape == (10, 10, 3)


def test_crop_larger_than_image_names_the_file(tmp_path):
    p = _write(tmp_path, np.zeros((8, 8, 3), np.uint8), "small.png")
    with pytest.raises(DataError, match="small.png.*smaller than the centre crop"):
        read_image(p, crop=(10, 10))


def test_subset_keeps_crop_and_resize(tmp_path):
    p = _write(tmp_path, np.zeros((30, 40, 3), np.uint8))
    images = ImageSet([p, p], ["A", "B"], crop=(20, 20), resize=(10, 10))
    sub = images[[1]]
    assert sub.crop == (20, 20) and sub.resize == (10, 10)
    assert sub[0].shape == (10, 10, 3)


def test_greyscale_is_a_clear_error(tmp_path):
    p = tmp_path / "grey.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(p)
    with pytest.raises(DataError, match="grey.png.*'L'.*RGB"):
        read_image(p)


@pytest.mark.parametrize("mode, suffix", [("RGBA", ".png"), ("I;16", ".png"), ("CMYK", ".jpg"), ("P", ".png"),
                                          ("LA", ".png"), ("1", ".png")])
def test_every_non_rgb_mode_is_named(tmp_path, mode, suffix):
    """Each mode a microscope export or an image editor may write is refused with its name (the
    data check and every later read use this one check)."""
    p = tmp_path / f"cell_{mode.replace(';', '')}{suffix}"
    Image.new(mode, (8, 8)).save(p)
    with Image.open(p) as im:
        assert im.mode == mode  # the file really has that mode
    with pytest.raises(DataError, match=rf"{p.name}.*image mode is '{re.escape(mode)}', expected 'RGB'"):
        read_image(p)


def test_scale_rescales_the_whole_image_before_the_centre_crop(tmp_path):
    arr = np.zeros((30, 40, 3), np.uint8)
    arr[10:20, 15:25] = 200  # a 10x10 block in the middle
    p = _write(tmp_path, arr)
    assert read_image(p, scale=2.0).shape == (60, 80, 3)
    # the block doubles to 20x20 and the crop keeps it whole: its size in pixels follows the scale
    out = read_image(p, scale=2.0, crop=(30, 30))
    assert out.shape == (30, 30, 3)
    assert ((out[..., 0] > 100).sum(axis=0) > 0).sum() == 20
    assert np.array_equal(read_image(p, scale=1.0), read_image(p))


def test_scale_is_kept_by_subsets_and_changes_the_content_key(tmp_path):
    p = _write(tmp_path, np.zeros((30, 40, 3), np.uint8))
    plain = ImageSet([p], ["A"], crop=(20, 20))
    scaled = ImageSet([p], ["A"], crop=(20, 20), scale=1.5)
    assert scaled[[0]].scale == 1.5 and scaled.detached().scale == 1.5
    assert plain.content_keys[0] != scaled.content_keys[0]
    assert ImageSet([p], ["A"], crop=(20, 20), scale=1.25).content_keys[0] != scaled.content_keys[0]
