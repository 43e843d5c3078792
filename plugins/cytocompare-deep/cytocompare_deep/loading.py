"""Images -> uint8 tensors (B, 3, S, S) on the training device.

Two decoders, one result:

* CUDA: the encoded bytes (``ImageSet.read_bytes``) are decoded in batches by nvJPEG
  (``torchvision.io.decode_jpeg(..., device="cuda")``); non-JPEG bytes (PNG of in-memory test
  sets) fall back to the CPU decoder.
* CPU: ``images[i]`` (PIL), in a ``DataLoader`` with worker processes and pinned memory when the
  batch goes to a GPU.

Resizing to ``size`` happens on the tensor (bilinear, antialiased) only when an image differs.
A whole training set is kept on the device as uint8 when it fits (:func:`training_images` decides,
with :func:`fits_on_device`); 2,800 images at 250x250 are 525 MB. Larger sets are streamed batch by
batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

_JPEG_MAGIC = b"\xff\xd8"


def resize_u8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) uint8 (no-op when already that size)."""
    if x.shape[-2:] == (size, size):
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def _hwc_to_chw(a: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).unsqueeze(0)
    return resize_u8(t, size)[0]


class _DecodedDataset(torch.utils.data.Dataset):
    """Index -> (3, size, size) uint8 tensor, decoded with PIL (for DataLoader workers)."""

    def __init__(self, images, size: int) -> None:
        self.images = images
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _hwc_to_chw(self.images[int(i)], self.size)


class _BytesDataset(torch.utils.data.Dataset):
    """Index -> encoded file bytes as a uint8 tensor (workers read files; the GPU decodes)."""

    def __init__(self, images) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.images.read_bytes(int(i))), dtype=torch.uint8)


def _list_collate(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return batch


def decode_bytes_cuda(data: Sequence[torch.Tensor], size: int, device: torch.device) -> torch.Tensor:
    """Batched nvJPEG decode of encoded images (uint8 CPU tensors) -> (B, 3, size, size) on ``device``."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    jpeg = [i for i, d in enumerate(data) if bytes(d[:2].tolist()) == _JPEG_MAGIC]
    out: list[torch.Tensor | None] = [None] * len(data)
    if jpeg:
        try:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
        except (RuntimeError, TypeError, ValueError):  # older torchvision: no mode/batch on the GPU
            decoded = [decode_jpeg(data[i], device=device) for i in jpeg]
        for i, t in zip(jpeg, decoded):
            out[i] = resize_u8(t.unsqueeze(0), size)[0]
    for i, d in enumerate(data):
        if out[i] is None:
            t = decode_image(d, mode=ImageReadMode.RGB)
            out[i] = resize_u8(t.unsqueeze(0), size)[0].to(device, non_blocking=True)
    return torch.stack(out)  # type: ignore[arg-type]


def decodes_files_on_gpu(images, device: torch.device) -> bool:
    """Whether ``images`` go through nvJPEG: the raw files on a CUDA device, only when the ImageSet
    applies nothing of its own on decoding (a crop, a rescale or a colour map: an external test set
    matched to the training set, ``cytocompare.matching``); otherwise ``images[i]`` decodes them."""
    return (torch.device(device).type == "cuda" and getattr(images, "crop", None) is None
            and getattr(images, "colour_map", None) is None and getattr(images, "scale", None) is None)


def iter_decoded(
    images,
    size: int,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
) -> Iterator[torch.Tensor]:
    """Yield uint8 (B, 3, size, size) batches on ``device``, in order of ``indices`` (default: all)."""
    device = torch.device(device)
    idx = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    batches = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    use_cuda = decodes_files_on_gpu(images, device)
    ds: torch.utils.data.Dataset = _BytesDataset(images) if use_cuda else _DecodedDataset(images, size)
    if num_workers == 0 and not use_cuda:
        for b in batches:
            yield torch.stack([ds[int(i)] for i in b]).to(device)
        return
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=num_workers,
        collate_fn=_list_collate if use_cuda else None,
        pin_memory=False,
        persistent_workers=False,
    )
    for batch in loader:
        if use_cuda:
            yield decode_bytes_cuda(batch, size, device)
        else:
            yield batch.to(device)


def load_all(images, size: int, device: torch.device, batch_size: int = 256, num_workers: int = 0) -> torch.Tensor:
    """Decode every image once into one uint8 tensor (N, 3, size, size) on ``device``."""
    device = torch.device(device)
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    pos = 0
    for batch in iter_decoded(images, size, device, batch_size=batch_size, num_workers=num_workers):
        out[pos : pos + len(batch)] = batch.to(device, non_blocking=True)
        pos += len(batch)
    return out


def fits_on_device(n: int, size: int, device: torch.device, fraction: float = 0.4, cpu_limit_gb: float = 8.0) -> bool:
    """True when ``n`` uint8 images of ``size``^2 take at most ``fraction`` of the free GPU memory
    (or ``cpu_limit_gb`` on the CPU)."""
    need = n * 3 * size * size
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return need <= fraction * free
    return need <= cpu_limit_gb * 1e9


def channel_stats(images_u8: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units of a uint8 (N, 3, H, W) tensor (float64 sums)."""
    x = images_u8.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [float(v) for v in mean.cpu()], [float(v) for v in std.cpu()]


# --------------------------------------------------------------------------- training sources
# The one place that decides "on the device or streamed": training_images() picks, the loop only
# asks the chosen source for batches.


class ResidentImages:
    """The whole training set, decoded once, as one uint8 (N, 3, S, S) tensor on the device."""

    resident = True

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def batches(self, order: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """``len(order) // batch_size`` batches gathered on the device, rows in ``order`` (a partial
        last one is not served: every step has the same shape)."""
        order_dev = torch.as_tensor(order, device=self.data.device)
        for s in range(len(order) // batch_size):
            yield self.data.index_select(0, order_dev[s * batch_size : (s + 1) * batch_size])


class StreamedImages:
    """The training set decoded batch by batch (nvJPEG on CUDA, PIL workers on the CPU)."""

    resident = False

    def __init__(self, images, size: int, device: torch.device, num_workers: int = 0) -> None:
        self.images, self.size, self.device, self.num_workers = images, size, device, num_workers

    def batches(self, order: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """``len(order) // batch_size`` batches decoded in ``order`` (a partial last one is not)."""
        full = np.asarray(order)[: len(order) // batch_size * batch_size]
        return iter_decoded(self.images, self.size, self.device, batch_size=batch_size,
                            num_workers=self.num_workers, indices=full)


def training_images(
    images, size: int, device: torch.device, num_workers: int, seed: int
) -> tuple[ResidentImages | StreamedImages, list[float], list[float]]:
    """The training set as a batch source, resident when it fits (:func:`fits_on_device`) and
    streamed otherwise, with the per-channel mean and std of a seeded sample of it (2,000 rows of
    the resident set, or 1,000 rows decoded once for streaming)."""
    rows = np.random.RandomState(seed).permutation(len(images))
    if fits_on_device(len(images), size, device):
        data = load_all(images, size, device, num_workers=num_workers)
        mean, std = channel_stats(data[torch.as_tensor(rows[:2000], device=device)])
        return ResidentImages(data), mean, std
    sample = load_all(images.subset(np.sort(rows[:1000])), size, device, num_workers=num_workers)
    mean, std = channel_stats(sample)
    return StreamedImages(images, size, device, num_workers), mean, std
