"""Images as a lazy, indexable set: paths + labels + content hashes, decoded on access.

At paper scale (171,374 images, ~32 GB decoded) images are never all held in memory; methods
that take images receive an :class:`ImageSet` and decode what they need, in batches.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from cytocompare.errors import DataError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class BadImageError(DataError):
    """An image file that cannot be used; ``cause`` says why without the path."""

    def __init__(self, path: str | Path, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = str(path)
        self.cause = cause


def decode_image(source: str | Path | bytes, *, name: str | Path | None = None,
                 expected_size: tuple[int, int] | None = None, resize: tuple[int, int] | None = None,
                 crop: tuple[int, int] | None = None, scale: float | None = None) -> np.ndarray:
    """Decode an image file (a path, or its bytes) to an (H, W, 3) uint8 RGB array.

    The one check of an image file (:func:`check_image`): the data checks
    (:mod:`cytocompare.datasets`) and every later read (:func:`read_image`) give the same
    causes. Raises :class:`BadImageError` naming the file (``name``, default the path) and the
    cause: unreadable, truncated, not RGB, not of ``expected_size`` (height, width), or smaller
    than ``crop``.

    ``scale`` first rescales the whole image by that factor (bilinear), so that another lab's
    cells get the training set's size in pixels; ``crop`` (height, width) then takes the centre;
    ``resize`` (height, width) then scales it. For another lab's images, scale by the ratio of the
    two labs' pixel sizes and crop to the training size rather than resize, which would change
    the apparent size of every cell.
    """
    if name is None:
        name = _default_name(source)

    def to_array(im: Any) -> np.ndarray:
        from PIL import Image

        w, h = im.size
        if scale is not None and scale != 1.0:
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        if crop is not None and im.size != (crop[1], crop[0]):
            if w < crop[1] or h < crop[0]:
                raise BadImageError(name, f"size {w}x{h} is smaller than the centre crop {crop[1]}x{crop[0]}")
            left, top = (w - crop[1]) // 2, (h - crop[0]) // 2
            im = im.crop((left, top, left + crop[1], top + crop[0]))
        if resize is not None and im.size != (resize[1], resize[0]):
            im = im.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()

    return check_image(source, name=name, expected_size=expected_size, then=to_array)


def _default_name(source: str | Path | bytes) -> str | Path:
    return "<bytes>" if isinstance(source, bytes) else source


def check_image(source: str | Path | bytes, *, name: str | Path | None = None,
                expected_size: tuple[int, int] | None = None, then: Callable[[Any], Any] | None = None) -> Any:
    """Decode an image file fully and check it; return ``then(image)`` of the decoded RGB PIL
    image (None without ``then``).

    The check itself (:func:`decode_image` is this with ``then`` making the array): the whole
    file is decoded, so a truncated file fails here and not later; the image must be RGB and,
    with ``expected_size`` (height, width), of that size. ``then`` runs while the image is open
    and its errors get the same causes, so the data check can hash the decoded pixels without
    copying them to an array first (:func:`cytocompare.datasets.load_dataset`).
    """
    from PIL import Image, UnidentifiedImageError

    if name is None:
        name = _default_name(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source)) as im:
            im.load()  # forces a full decode, so a truncated file fails here and not later
            if im.mode != "RGB":
                raise BadImageError(name, f"image mode is {im.mode!r}, expected 'RGB' (a colour image)")
            w, h = im.size
            if expected_size is not None and (h, w) != tuple(expected_size):
                raise BadImageError(name, f"size {w}x{h}, expected {expected_size[1]}x{expected_size[0]}")
            return None if then is None else then(im)
    except DataError:
        raise
    except FileNotFoundError:
        raise BadImageError(name, "file not found") from None
    except UnidentifiedImageError:
        raise BadImageError(name, "not a readable image file") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three on broken files
        raise BadImageError(name, f"cannot decode ({exc}); the file is probably truncated or corrupt") from None


def read_image(path: str | Path, *, resize: tuple[int, int] | None = None,
               crop: tuple[int, int] | None = None, scale: float | None = None) -> np.ndarray:
    """Decode one image file to an (H, W, 3) uint8 RGB array (:func:`decode_image`).

    Raises :class:`DataError` naming the file and the cause (unreadable, truncated, not RGB).
    ``crop`` (height, width) takes the centre of the image first; ``resize`` (height, width)
    then scales it.
    """
    return decode_image(path, resize=resize, crop=crop, scale=scale)


class ImageSet(Sequence[np.ndarray]):
    """An ordered set of labelled images, backed by files or, for tests, by in-memory arrays.

    ``images[i]`` decodes image ``i``; ``images[idx]`` with a slice or index array returns a
    sub-``ImageSet`` (no decoding). ``paths``, ``labels`` and ``sha256`` are parallel arrays.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[str] | np.ndarray,
        sha256: Sequence[str] | None = None,
        *,
        resize: tuple[int, int] | None = None,
        arrays: Sequence[np.ndarray] | None = None,
        crop: tuple[int, int] | None = None,
        colour_map: Any = None,
        encoded: Sequence[bytes] | None = None,
        scale: float | None = None,
    ) -> None:
        self.paths = np.asarray([str(p) for p in paths], dtype=object)
        self.labels = np.asarray(labels, dtype=object).astype(str)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self._sha256 = None if sha256 is None else np.asarray(sha256, dtype=object)
        self.resize = resize
        self.crop = crop
        # rescale factor applied to the whole image before the crop (test_data.scale)
        self.scale = scale
        # a callable applied to every decoded image (e.g. cytocompare.colour.ColourMap), with .key()
        self.colour_map = colour_map
        self._arrays = arrays
        # the encoded files held in memory (:meth:`detached`), decoded instead of reading the paths
        self._encoded = None if encoded is None else list(encoded)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], labels: Sequence[str]) -> ImageSet:
        """An in-memory set (synthetic test images); names are ``mem://i``."""
        arrays = [np.ascontiguousarray(a, dtype=np.uint8) for a in arrays]
        for i, a in enumerate(arrays):
            if a.ndim != 3 or a.shape[2] != 3:
                raise DataError(f"mem://{i}: array of shape {a.shape}, expected (H, W, 3)")
        hashes = [hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest() for a in arrays]
        return cls([f"mem://{i}" for i in range(len(arrays))], labels, hashes, arrays=arrays)

    @property
    def sha256(self) -> np.ndarray:
        """Content hashes (computed on first use for file-backed sets)."""
        if self._sha256 is None:
            self._sha256 = np.asarray([sha256_file(p) for p in self.paths], dtype=object)
        return self._sha256

    @property
    def content_keys(self) -> np.ndarray:
        """What each decoded image depends on: the file's hash, plus any crop/resize on load.

        Caches keyed by this never hand back features of the uncropped image for a cropped one.
        """
        if self.crop is None and self.resize is None and self.colour_map is None and self.scale is None:
            return self.sha256
        colour = None if self.colour_map is None else self.colour_map.key()
        suffix = f";crop={self.crop};resize={self.resize};colour={colour}"
        if self.scale is not None:  # only then, so that the keys of unscaled sets stay as they were
            suffix += f";scale={self.scale!r}"
        return np.asarray([hashlib.sha256((s + suffix).encode()).hexdigest() for s in self.sha256], dtype=object)

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> ImageSet: ...
    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(index)
            if self._arrays is not None:
                image = self._arrays[i]
            elif self._encoded is not None:
                image = decode_image(self._encoded[i], name=self.paths[i], resize=self.resize, crop=self.crop,
                                     scale=self.scale)
            else:
                image = read_image(self.paths[i], resize=self.resize, crop=self.crop, scale=self.scale)
            return image if self.colour_map is None else self.colour_map(image)
        return self.subset(np.arange(len(self))[index])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            self.paths[idx],
            self.labels[idx],
            None if self._sha256 is None else self._sha256[idx],
            resize=self.resize,
            arrays=None if self._arrays is None else [self._arrays[i] for i in idx],
            crop=self.crop,
            colour_map=self.colour_map,
            encoded=None if self._encoded is None else [self._encoded[i] for i in idx],
            scale=self.scale,
        )

    def detached(self) -> ImageSet:
        """The same images holding their encoded files in memory, so that they decode where the
        paths do not exist (a dask worker without the client's file system: :mod:`cytocompare.compute`).
        Every image decodes to the same array as from its file (the same :func:`decode_image`);
        an in-memory set is returned as it is."""
        if self._arrays is not None or self._encoded is not None:
            return self
        return ImageSet(self.paths, self.labels, self.sha256, resize=self.resize, crop=self.crop,
                        colour_map=self.colour_map, encoded=[Path(p).read_bytes() for p in self.paths],
                        scale=self.scale)

    def unprocessed(self) -> ImageSet:
        """The same images as their files hold them: without this set's scale, crop, resize and
        colour map (the pixel scale of another lab's images is measured on these)."""
        return ImageSet(self.paths, self.labels, self._sha256, arrays=self._arrays, encoded=self._encoded)

    def read_bytes(self, index: int) -> bytes:
        """The encoded file (for GPU JPEG decoding); in-memory sets encode to PNG."""
        if self._encoded is not None:
            return self._encoded[index]
        if self._arrays is None:
            return Path(self.paths[index]).read_bytes()
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self._arrays[index]).save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        classes = sorted(set(self.labels.tolist()))
        return f"ImageSet({len(self)} images, {len(classes)} classes)"
