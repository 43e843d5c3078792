"""Batched stain colour augmentation in optical-density space (CPU or CUDA).

Two methods, both applied to whole batches ``(B, 3, H, W)`` of RGB floats in ``[0, 1]`` with
per-sample parameters and no Python loop over samples:

* **HED jitter** (Tellez et al. 2018, "Whole-slide mitosis detection in H&E breast histology
  using PHH3 as a reference to train distilled stain-invariant convolutional networks", IEEE
  TMI; Tellez et al. 2019, "Quantifying the effects of data augmentation and stain color
  normalization in convolutional neural networks for computational pathology", MedIA,
  arXiv:1902.06543). Colour deconvolution with the fixed haematoxylin-eosin-DAB matrix of
  Ruifrok & Johnston 2001 (as shipped by scikit-image ``rgb2hed``), then per channel
  ``c' = alpha * c + beta`` and back to RGB.
* **Macenko jitter**: per-image stain vectors estimated with Macenko et al. 2009 ("A method for
  normalizing histology slides for quantitative analysis", ISBI), concentrations by least
  squares, the same ``c' = alpha * c + beta`` perturbation (HistomicsTK
  ``perturb_stain_concentration``; torchstain / staintools ``sigma1``, ``sigma2``).

MGG is not H&E. The bone-marrow smears of Matek et al. 2021 are May-Grünwald-Giemsa stained
(methylene blue / azure and eosin). The HED matrix is then simply a fixed, plausible basis
of absorbing directions: jittering its coefficients still produces realistic hue and
saturation shifts, but the channels are not "haematoxylin" and "eosin". Macenko's method
needs no stain names at all: it finds the two dominant optical-density directions of each
image, which for MGG are the blue-violet (azure/methylene blue) and the pink (eosin)
component. "First stain" below means the direction with the larger red optical density (the
bluish one), as in torchstain / Macenko's reference code.

* **The chain** (``macenko_hed_jitter``): Macenko stain separation, then Tellez's HED perturbation
  of the coordinates in the image's own stain basis (two stains + their normal), with Tellez's
  ranges and units.

All jitters are an affine map of optical density, so each sample's augmentation folds into
one 3x3 matrix plus an offset, applied as one batched matrix product.

This module imports torch; the plugin's ``__init__`` must not import it.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "HED_FROM_RGB",
    "RGB_FROM_HED",
    "basis_jitter",
    "complete_stain_basis",
    "hed_jitter",
    "hed_to_rgb",
    "macenko_concentrations",
    "macenko_hed_jitter",
    "macenko_jitter",
    "macenko_stain_matrix",
    "masked_quantile",
    "od_to_rgb",
    "rgb_to_hed",
    "rgb_to_od",
]

# Ruifrok & Johnston 2001 haematoxylin / eosin / DAB absorbance vectors (rows), exactly as
# scikit-image 0.26 ``skimage.color.rgb_from_hed``; ``HED_FROM_RGB`` is its inverse as printed by
# ``skimage.color.hed_from_rgb`` (hard-coded so that this module does not need scikit-image).
RGB_FROM_HED: tuple[tuple[float, float, float], ...] = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)
HED_FROM_RGB: tuple[tuple[float, float, float], ...] = (
    (1.8779827368521356, -1.0076786862855642, -0.5561158181996246),
    (-0.06590806222356334, 1.1347303724996625, -0.13552179862837116),
    (-0.6019073634392891, -0.4804141884970579, 1.5735880719641926),
)

# scikit-image clamps RGB at 1e-6 before the log and divides the optical density by
# -log(1e-6) = log(1e6), so its HED values are roughly in [0, 1]. We use the same scaling so that
# ``hed_bias`` (beta) means the same as in stainlib / Tellez-style code built on ``rgb2hed``.
_SKIMAGE_EPS = 1e-6
_SKIMAGE_OD_SCALE = -math.log(_SKIMAGE_EPS)  # 13.8155...

# Fallback stain matrix (columns: first, second stain; unit OD vectors) for images with too few
# stained pixels to estimate one: the H&E reference of Macenko's reference implementation /
# torchstain. Only used for blank or nearly blank images.
_FALLBACK_STAINS: tuple[tuple[float, float], ...] = (
    (0.5626, 0.2159),
    (0.7201, 0.8012),
    (0.4062, 0.5581),
)


def _matrix(values: tuple[tuple[float, ...], ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device)


def _apply_channel_map(x: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """``out[b, i] = sum_j matrix[b, i, j] * x[b, j] + offset[b, i]`` for ``x`` of shape (B, C, H, W).

    One batched matmul over all pixels: (B, C, C) @ (B, C, H*W). ``matrix`` may also be (C, C).
    """
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    out = torch.matmul(matrix, flat)
    if offset is not None:
        out.add_(offset.reshape(b, -1, 1))
    return out.reshape(b, -1, h, w)


# --------------------------------------------------------------------------------------------
# optical density
# --------------------------------------------------------------------------------------------
def rgb_to_od(rgb: torch.Tensor, eps: float = _SKIMAGE_EPS) -> torch.Tensor:
    """Optical density ``-ln(max(rgb, eps))`` (Beer-Lambert, background intensity ``I0 = 1``).

    Parameters
    ----------
    rgb : Tensor
        Intensities in ``[0, 1]``, any shape; computed in float32 (bf16 logs are too coarse).
    eps : float
        Floor that keeps the log finite for black pixels.

    Returns
    -------
    Tensor
        Optical density, ``>= 0`` for inputs ``<= 1``; 0 for white.
    """
    # clamp makes a new tensor, so the in-place log / neg never touch the caller's data and
    # save two full-size temporaries (this is memory-bound on large batches).
    return rgb.float().clamp(min=eps).log_().neg_()


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_od`, clamped to ``[0, 1]`` (negative OD would be brighter than white)."""
    return od.neg().exp_().clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# HED (Ruifrok & Johnston colour deconvolution, scikit-image conventions)
# --------------------------------------------------------------------------------------------
def rgb_to_hed(rgb: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Batched torch port of ``skimage.color.rgb2hed`` for (B, 3, H, W) tensors.

    Parameters
    ----------
    rgb : Tensor
        (B, 3, H, W) in ``[0, 1]``.
    clip : bool
        Clamp negative stain values at 0 like scikit-image does. Colours outside the cone of
        the three HED vectors (common for MGG) then no longer round-trip exactly.

    Returns
    -------
    Tensor
        (B, 3, H, W) float32 stain concentrations in scikit-image units (OD / ln(1e6)).
    """
    od = rgb_to_od(rgb) / _SKIMAGE_OD_SCALE
    # skimage multiplies row vectors on the right (pixels @ M); we multiply columns on the left.
    hed = _apply_channel_map(od, _matrix(HED_FROM_RGB, od).T)
    return hed.clamp(min=0.0) if clip else hed


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Batched torch port of ``skimage.color.hed2rgb``: (B, 3, H, W) stains -> RGB in ``[0, 1]``."""
    od = _apply_channel_map(hed.float(), _matrix(RGB_FROM_HED, hed).T) * _SKIMAGE_OD_SCALE
    return od_to_rgb(od)


def hed_jitter(rgb: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, clip_stains: bool = False) -> torch.Tensor:
    """Tellez HED jitter ``c' = alpha * c + beta`` per sample and per HED channel.

    Parameters
    ----------
    rgb : Tensor
        (B, 3, H, W) RGB in ``[0, 1]``, any float dtype, CPU or CUDA.
    alpha, beta : Tensor
        (B, 3) scale and bias per sample and channel (H, E, D); ``beta`` in scikit-image HED
        units (natural-log OD / ln(1e6); a beta of 0.05 is about 0.69 natural-log OD). Tellez
        draws ``alpha ~ U(1 - sigma, 1 + sigma)`` and ``beta ~ U(-sigma, sigma)``.
    clip_stains : bool
        ``True`` reproduces ``hed2rgb(rgb2hed(x) * alpha + beta)`` of scikit-image exactly,
        including its clamping of negative stain values (which changes colours outside the
        HED cone even for ``alpha = 1, beta = 0``). ``False`` (default) skips that clamp, so the
        whole jitter folds into one affine 3x3 map of optical density and ``alpha = 1, beta = 0``
        is the identity.

    Returns
    -------
    Tensor
        (B, 3, H, W) RGB in ``[0, 1]``, same dtype as ``rgb``.
    """
    alpha = alpha.to(device=rgb.device, dtype=torch.float32)
    beta = beta.to(device=rgb.device, dtype=torch.float32)
    if clip_stains:
        hed = rgb_to_hed(rgb, clip=True)
        hed = hed * alpha[:, :, None, None] + beta[:, :, None, None]
        return hed_to_rgb(hed).to(rgb.dtype)
    # od' = R^T (diag(alpha) H^T od / s + beta) * s = [R^T diag(alpha) H^T] od + s R^T beta
    h_t = _matrix(HED_FROM_RGB, rgb).T
    r_t = _matrix(RGB_FROM_HED, rgb).T
    matrix = r_t @ (alpha[:, :, None] * h_t)  # (B, 3, 3)
    offset = _SKIMAGE_OD_SCALE * (beta @ r_t.T)  # (B, 3)
    od = _apply_channel_map(rgb_to_od(rgb), matrix, offset)
    return od_to_rgb(od).to(rgb.dtype)


# --------------------------------------------------------------------------------------------
# Macenko
# --------------------------------------------------------------------------------------------
def masked_quantile(values: torch.Tensor, valid: torch.Tensor, q: float | list[float]) -> torch.Tensor:
    """Row-wise quantile over the valid entries, linear interpolation (as ``torch.nanquantile``).

    Rows may have different numbers of valid entries. Implemented with one sort, so it has no
    size limit (``torch.quantile`` refuses inputs above 2**24 elements).

    Parameters
    ----------
    values : Tensor
        (B, N) values.
    valid : Tensor
        (B, N) bool mask.
    q : float or list of float
        Quantile(s) in ``[0, 1]``; several share one sort.

    Returns
    -------
    Tensor
        (B,) quantiles, or (B, len(q)) for a list; NaN for rows with no valid entry.
    """
    scalar = not isinstance(q, (list, tuple))
    qs = torch.tensor([q] if scalar else list(q), dtype=values.dtype, device=values.device)
    filled = torch.where(valid, values, torch.full_like(values, float("inf")))
    ordered, _ = torch.sort(filled, dim=1)
    count = valid.sum(dim=1, keepdim=True)  # (B, 1)
    pos = qs[None, :] * (count - 1).clamp(min=0).to(values.dtype)  # (B, Q)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    v_lo = ordered.gather(1, lo)
    v_hi = ordered.gather(1, hi)
    out = v_lo + (v_hi - v_lo) * (pos - lo.to(values.dtype))
    out = torch.where(count > 0, out, torch.full_like(out, float("nan")))
    return out[:, 0] if scalar else out


def macenko_stain_matrix(
    od: torch.Tensor,
    beta: float = 0.15,
    alpha: float = 1.0,
    max_pixels: int | None = 16384,
    min_pixels: int = 16,
) -> torch.Tensor:
    """Per-image Macenko stain matrix, batched: (B, 3, H, W) optical density -> (B, 3, 2).

    Steps (Macenko et al. 2009): drop transparent pixels (any channel OD < ``beta``); take the
    two leading eigenvectors of each image's OD covariance (``torch.linalg.eigh`` on the (B, 3, 3)
    batch); project the pixels onto that plane, take the angle percentiles ``alpha`` and
    ``100 - alpha`` (robust extremes); the two extreme directions are the stain vectors.

    The result depends only on the image's colours, so training code can compute it once per
    source image (e.g. cached by dataset index) and pass it to :func:`macenko_jitter` /
    ``BatchAugment(..., stain_matrix=...)``; geometric augmentation does not change it.

    Parameters
    ----------
    od : Tensor
        (B, 3, H, W) optical density, see :func:`rgb_to_od`.
    beta : float
        OD threshold for "stained" pixels (natural-log OD, 0.15 as in Macenko / torchstain).
    alpha : float
        Angle percentile in percent (1 -> 1st and 99th percentiles).
    max_pixels : int or None
        Estimate from at most this many pixels per image, taken on a regular stride (the
        estimate is a covariance and two percentiles: a 16k-pixel subsample is plenty and makes
        the per-image sort cheap). ``None`` uses every pixel.
    min_pixels : int
        Images with fewer stained pixels get a fixed H&E reference matrix (``_FALLBACK_STAINS``)
        instead of a meaningless estimate.

    Returns
    -------
    Tensor
        (B, 3, 2) float32 unit stain vectors (columns), non-negative, the first column being the
        one with the larger red OD (haematoxylin in H&E; azure / methylene blue in MGG).
    """
    b = od.shape[0]
    flat = od.float().reshape(b, 3, -1)
    if max_pixels is not None and flat.shape[-1] > max_pixels:
        step = math.ceil(flat.shape[-1] / max_pixels)
        flat = flat[:, :, ::step].contiguous()
    valid = (flat >= beta).all(dim=1)  # (B, N)
    weight = valid.to(flat.dtype)[:, None, :]
    count = weight.sum(dim=-1, keepdim=True).clamp(min=2.0)  # (B, 1, 1)
    mean = (flat * weight).sum(dim=-1, keepdim=True) / count
    centred = (flat - mean) * weight
    # (B, 3, N) @ (B, N, 3): a contiguous transpose avoids a per-sample copy inside bmm on the CPU.
    cov = centred @ centred.transpose(1, 2).contiguous() / (count - 1.0)  # (B, 3, 3)
    # eigh in float64: 3x3 matrices cost nothing and near-degenerate eigenvalues stay stable.
    _, vectors = torch.linalg.eigh(cov.double())
    plane = vectors[:, :, 1:3].float()  # (B, 3, 2): second and first principal directions
    # Fix eigenvector signs so the angles do not wrap around +-pi: the principal direction of an
    # absorbing stain mix points into the positive octant.
    sign = torch.where(plane.sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
    plane = plane * sign
    proj = plane.transpose(1, 2) @ flat  # (B, 2, N)
    phi = torch.atan2(proj[:, 0], proj[:, 1])  # angle from the principal direction
    lo, hi = masked_quantile(phi, valid, [alpha / 100.0, 1.0 - alpha / 100.0]).unbind(1)

    def direction(angle: torch.Tensor) -> torch.Tensor:
        coeffs = torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)  # matches (plane[:,0], plane[:,1])
        vec = (plane @ coeffs[:, :, None])[:, :, 0]
        vec = vec * torch.where(vec.sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
        return vec / vec.norm(dim=1, keepdim=True).clamp(min=1e-12)

    v_lo, v_hi = direction(lo), direction(hi)
    lo_first = (v_lo[:, 0] > v_hi[:, 0])[:, None]
    first = torch.where(lo_first, v_lo, v_hi)
    second = torch.where(lo_first, v_hi, v_lo)
    stains = torch.stack([first, second], dim=2)  # (B, 3, 2)
    ok = (valid.sum(dim=1) >= min_pixels) & torch.isfinite(stains).all(dim=2).all(dim=1)
    fallback = torch.tensor(_FALLBACK_STAINS, dtype=torch.float32, device=od.device)
    fallback = fallback / fallback.norm(dim=0, keepdim=True)
    return torch.where(ok[:, None, None], stains, fallback.expand_as(stains))


def macenko_concentrations(od: torch.Tensor, stain_matrix: torch.Tensor) -> torch.Tensor:
    """Least-squares stain concentrations: (B, 3, H, W) OD, (B, 3, 2) stains -> (B, 2, H, W)."""
    return _apply_channel_map(od.float(), torch.linalg.pinv(stain_matrix.float()))


def macenko_jitter(
    rgb: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    stain_matrix: torch.Tensor | None = None,
    **estimate_kwargs: float,
) -> torch.Tensor:
    """Macenko stain augmentation ``c' = alpha * c + beta`` per sample and per stain.

    The OD residual that the two stain vectors do not explain is kept (only the stain
    components are perturbed), so ``alpha = 1, beta = 0`` returns the input; torchstain /
    staintools reconstruct from the two components alone and lose it. Everything folds into
    ``od' = (I + S diag(alpha - 1) S^+) od + S beta`` with ``S`` the (3, 2) stain matrix.

    Parameters
    ----------
    rgb : Tensor
        (B, 3, H, W) RGB in ``[0, 1]``, any float dtype, CPU or CUDA.
    alpha, beta : Tensor
        (B, 2) scale and bias per sample and stain (``beta`` in natural-log OD concentration
        units; torchstain's ``sigma2 = 0.2`` is the usual range).
    stain_matrix : Tensor or None
        (B, 3, 2) precomputed stain vectors (e.g. cached per source image); estimated from
        ``rgb`` with :func:`macenko_stain_matrix` when ``None``.
    **estimate_kwargs
        Passed to :func:`macenko_stain_matrix`.

    Returns
    -------
    Tensor
        (B, 3, H, W) RGB in ``[0, 1]``, same dtype as ``rgb``.
    """
    od = rgb_to_od(rgb)
    if stain_matrix is None:
        stain_matrix = macenko_stain_matrix(od, **estimate_kwargs)
    s = stain_matrix.to(device=rgb.device, dtype=torch.float32)
    alpha = alpha.to(device=rgb.device, dtype=torch.float32)
    beta = beta.to(device=rgb.device, dtype=torch.float32)
    eye = torch.eye(3, device=rgb.device, dtype=torch.float32)
    matrix = eye + s @ ((alpha - 1.0)[:, :, None] * torch.linalg.pinv(s))  # (B, 3, 3)
    offset = (s @ beta[:, :, None])[:, :, 0]  # (B, 3)
    return od_to_rgb(_apply_channel_map(od, matrix, offset)).to(rgb.dtype)


# --------------------------------------------------------------------------------------------
# the chain: Macenko stain separation, then Tellez's HED perturbation in that basis
# --------------------------------------------------------------------------------------------
def complete_stain_basis(stain_matrix: torch.Tensor) -> torch.Tensor:
    """(B, 3, 2) stain vectors -> (B, 3, 3) basis: the two stains plus their unit normal as the third
    ("residual") channel, as HistomicsTK's ``complement_stain_matrix`` does, so that every optical
    density (not only the stains' plane) has coordinates and nothing is lost on the way back."""
    s = stain_matrix.float()
    third = torch.linalg.cross(s[:, :, 0], s[:, :, 1], dim=1)
    third = third / third.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return torch.cat([s, third[:, :, None]], dim=2)


def basis_jitter(rgb: torch.Tensor, basis: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Tellez's perturbation ``c' = alpha * c + beta`` of the coordinates ``c`` of each pixel's optical
    density in a per-sample stain ``basis``, in scikit-image HED units (OD / ln(1e6)).

    With the Ruifrok-Johnston basis (columns = ``RGB_FROM_HED`` rows) this is scikit-image's
    ``hed2rgb(rgb2hed(x) * alpha + beta)`` for colours inside the HED cone (no negative stains to
    clamp); with a Macenko basis (:func:`complete_stain_basis`) it perturbs the image's own stains.

    Parameters
    ----------
    rgb : Tensor
        (B, 3, H, W) RGB in ``[0, 1]``.
    basis : Tensor
        (B, 3, 3) or (3, 3): columns are the stains' OD vectors.
    alpha, beta : Tensor
        (B, 3) scale and bias per sample and basis channel.
    """
    w = basis.to(device=rgb.device, dtype=torch.float64)
    if w.ndim == 2:
        w = w.expand(rgb.shape[0], 3, 3)
    alpha = alpha.to(device=rgb.device, dtype=torch.float64)
    beta = beta.to(device=rgb.device, dtype=torch.float64)
    # od' = W (diag(alpha) W^-1 od / s + beta) s = [W diag(alpha) W^-1] od + s W beta  (3x3 in float64)
    # inv_ex: no error check, so no host sync on CUDA (a Macenko basis is never singular: two
    # distinct unit stains and their unit normal)
    matrix = (w @ (alpha[:, :, None] * torch.linalg.inv_ex(w).inverse)).float()
    offset = (_SKIMAGE_OD_SCALE * (w @ beta[:, :, None])[:, :, 0]).float()
    return od_to_rgb(_apply_channel_map(rgb_to_od(rgb), matrix, offset)).to(rgb.dtype)


def macenko_hed_jitter(
    rgb: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    stain_matrix: torch.Tensor | None = None,
    **estimate_kwargs: float,
) -> torch.Tensor:
    """The chain: Macenko stain separation (each image's own two stains, :func:`macenko_stain_matrix`,
    completed by their normal), then Tellez's HED perturbation of the coordinates in that basis.

    The fixed Ruifrok HED basis is made for H&E; MGG smears have other dyes, so the HED channels mix
    them. Separating first makes ``alpha`` and ``beta`` act on the amounts of the image's real stains,
    with Tellez's ranges and units (``alpha ~ U(1 - sigma, 1 + sigma)``, ``beta ~ U(-bias, bias)`` in
    scikit-image HED units). ``alpha = 1, beta = 0`` is the identity.

    Parameters
    ----------
    rgb : Tensor
        (B, 3, H, W) RGB in ``[0, 1]``.
    alpha, beta : Tensor
        (B, 3): first stain, second stain, residual channel.
    stain_matrix : Tensor or None
        (B, 3, 2) cached Macenko stains; estimated from ``rgb`` when ``None``.
    """
    if stain_matrix is None:
        stain_matrix = macenko_stain_matrix(rgb_to_od(rgb), **estimate_kwargs)
    return basis_jitter(rgb, complete_stain_basis(stain_matrix), alpha, beta)
