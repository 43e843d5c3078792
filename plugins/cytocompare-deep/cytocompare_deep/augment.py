"""Batched, per-sample random augmentation of image tensors on the CPU or a GPU.

Matek et al. 2021 trained with Keras ``ImageDataGenerator``: rotation 0-180 degrees,
horizontal and vertical flips, shifts up to 25 %, shear up to 20 %. :class:`BatchAugment`
reproduces that on whole (B, 3, H, W) batches already on the training device, with one
affine matrix per sample applied by a single ``affine_grid`` + ``grid_sample`` call, followed
by optional stain augmentation (Tellez HED jitter, Macenko jitter, or the chain of Macenko
separation and Tellez HED perturbation; see :mod:`.stain`).
There is no Python loop over samples, so it keeps up with a GPU (an H100 has run batched
per-sample affine + HED jitter at about 58k images/s) and it is usable on a CPU.

Conventions
-----------
* **Rotation** ``theta ~ U(0, rotation)`` degrees, counter-clockwise as the image is displayed
  (row 0 at the top), about the image centre: ``rotation=90`` exactly equals
  ``torch.rot90(x, 1, dims=(-2, -1))`` (which is also ``numpy.rot90``'s direction).
* **Shear** is a *shear factor* ``s ~ U(-shear, shear)``: ``x' = x + s * y`` in pixel units
  (``shear=0.2`` = "20 %", about 11.3 degrees). Keras differs: ``ImageDataGenerator``'s
  ``shear_range`` is an angle in **degrees** (``apply_affine_transform`` uses
  ``[[1, -sin(shear), 0], [0, cos(shear), 0]]`` after ``deg2rad``), so the paper's
  ``shear_range=0.2`` would literally have been a 0.2-degree, i.e. negligible, shear. We follow
  the paper's stated intent (20 %); pass a smaller value to mimic Keras literally.
* **Shift** ``tx, ty ~ U(-shift, shift)`` as a fraction of the image width / height.
* **Flips** are sign flips of the x / y axes in the same matrix, each with probability 1/2.
* **Composition**: the content is flipped, sheared, rotated, then shifted (forward map
  ``p -> R Sh F p + t`` in centred pixel coordinates); ``grid_sample`` needs the inverse.
* **Fill**: pixels mapped from outside the image get the constant ``fill`` (1.0 = white,
  the bright background of a smear) and blend into it bilinearly at the border; implemented as
  ``grid_sample(x - fill, padding_mode="zeros") + fill``. ``fill=None`` replicates the border.
* Geometry is applied first, then the stain jitter, so the filled background gets the same
  tint as the real background (no white frame that would give the augmentation away).

Determinism: every random number is drawn in one ``torch.rand`` call from ``generator`` (or
the global RNG of the tensor's device), so the same seed gives the same batch; a CPU
generator may drive a CUDA batch (parameters are drawn on the CPU and moved). Labels are not
an input: the augmentation is label-preserving by construction.

This module imports torch; the plugin's ``__init__`` must not import it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment_settings import AugmentSettings
from .stain import hed_jitter, macenko_hed_jitter, macenko_jitter, macenko_stain_matrix, rgb_to_od

__all__ = ["BatchAugment"]

# Column layout of the one uniform draw per batch (fixed, so enabling an option never changes the
# other parameters drawn from the same seed).
_ANGLE, _SHEAR, _TX, _TY, _FLIP_X, _FLIP_Y, _ALPHA, _BETA, _P_STAIN = 0, 1, 2, 3, 4, 5, 6, 9, 12
_N_UNIFORM = 13


class BatchAugment(AugmentSettings):
    """Per-sample random affine + stain augmentation of a (B, 3, H, W) batch in ``[0, 1]``.

    Constructed from the settings of :class:`~cytocompare_deep.augment_settings.AugmentSettings`
    (same keyword arguments, defaults and checks: that class is their one home); this class adds
    the code that draws and applies them.

    Examples
    --------
    >>> aug = BatchAugment(stain="hed")
    >>> g = torch.Generator().manual_seed(0)
    >>> xb = aug(images.to("cuda"), generator=g)  # doctest: +SKIP
    """

    @property
    def is_geometric_identity(self) -> bool:
        return self.rotation == 0 and self.shift == 0 and self.shear == 0 and not self.flips

    # ----------------------------------------------------------------------------------------
    def sample_params(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Draw every sample's parameters (one ``torch.rand`` call).

        Parameters
        ----------
        batch_size : int
        device : torch.device or str
            Where the returned tensors live.
        generator : torch.Generator or None
            Source of randomness; its device may differ from ``device`` (drawn there, then moved).

        Returns
        -------
        dict of str to Tensor
            ``angle`` (B,) degrees, ``shear`` (B,), ``tx``, ``ty`` (B,) fractions of the size,
            ``flip_x``, ``flip_y`` (B,) bool, ``stain_alpha``, ``stain_beta`` (B, 3) (Macenko
            uses the first two columns), ``apply_stain`` (B,) bool. Disabled options give
            neutral values (0, False, alpha 1, beta 0).
        """
        draw_device = generator.device if generator is not None else torch.device(device)
        u = torch.rand(batch_size, _N_UNIFORM, generator=generator, device=draw_device).to(device)
        sym = 2.0 * u - 1.0  # U(-1, 1)
        if self.stain in ("hed", "macenko-hed"):
            sigma, bias = self.hed_sigma, self.hed_bias
        elif self.stain == "macenko":
            sigma, bias = self.macenko_sigma1, self.macenko_sigma2
        else:
            sigma, bias = 0.0, 0.0
        apply_stain = (u[:, _P_STAIN] < self.p_stain) & (self.stain is not None)
        alpha = 1.0 + sigma * sym[:, _ALPHA:_ALPHA + 3]
        beta = bias * sym[:, _BETA:_BETA + 3]
        alpha = torch.where(apply_stain[:, None], alpha, torch.ones_like(alpha))
        beta = torch.where(apply_stain[:, None], beta, torch.zeros_like(beta))
        return {
            "angle": self.rotation * u[:, _ANGLE],
            "shear": self.shear * sym[:, _SHEAR],
            "tx": self.shift * sym[:, _TX],
            "ty": self.shift * sym[:, _TY],
            "flip_x": (u[:, _FLIP_X] < 0.5) & self.flips,
            "flip_y": (u[:, _FLIP_Y] < 0.5) & self.flips,
            "stain_alpha": alpha,
            "stain_beta": beta,
            "apply_stain": apply_stain,
        }

    @staticmethod
    def affine_theta(params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        """The (B, 2, 3) ``affine_grid`` matrices (output -> input, normalised coordinates).

        Built in centred pixel coordinates (so rotations stay rotations on non-square images)
        and conjugated into ``affine_grid``'s [-1, 1] coordinates.
        """
        angle = torch.deg2rad(params["angle"].float())
        cos, sin = torch.cos(angle), torch.sin(angle)
        s = params["shear"].float()
        fx = torch.where(params["flip_x"], -1.0, 1.0).to(cos)
        fy = torch.where(params["flip_y"], -1.0, 1.0).to(cos)
        one, zero = torch.ones_like(cos), torch.zeros_like(cos)
        # Forward maps in pixel coordinates with y pointing down. A counter-clockwise rotation
        # as displayed is [[cos, sin], [-sin, cos]] in these coordinates.
        # Inverse = F^-1 Sh^-1 R^-1 with F^-1 = F, Sh^-1 = [[1, -s], [0, 1]], R^-1 = R(-theta).
        r_inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        sh_inv = torch.stack([torch.stack([one, -s], -1), torch.stack([zero, one], -1)], -2)
        f_inv = torch.diag_embed(torch.stack([fx, fy], -1))
        a_inv = f_inv @ sh_inv @ r_inv  # (B, 2, 2), pixel units
        # Normalised u = p / (size / 2): theta_lin = S^-1 A^-1 S with S = diag(W/2, H/2).
        scale = torch.tensor([width / 2.0, height / 2.0], dtype=cos.dtype, device=cos.device)
        lin = a_inv * scale[None, None, :] / scale[None, :, None]
        # Forward shift t (pixels) = (tx W, ty H) -> normalised (2 tx, 2 ty); inverse -A^-1 t.
        t = torch.stack([2.0 * params["tx"].float(), 2.0 * params["ty"].float()], -1)
        trans = -(lin @ t[:, :, None])
        return torch.cat([lin, trans], dim=2)

    # ----------------------------------------------------------------------------------------
    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        stain_matrix: torch.Tensor | None = None,
        params: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Augment a batch.

        Parameters
        ----------
        x : Tensor
            (B, 3, H, W) float (fp32, fp16 or bf16) in ``[0, 1]``, CPU or CUDA.
        generator : torch.Generator or None
            Seeded generator for reproducible batches (CPU or same device as ``x``).
        stain_matrix : Tensor or None
            (B, 3, 2) cached Macenko stain matrices of these samples (only for
            ``stain="macenko"`` and ``"macenko-hed"``); estimated on the fly when ``None``.
        params : dict or None
            Parameters from :meth:`sample_params` to replay instead of drawing new ones.

        Returns
        -------
        Tensor
            Same shape, dtype and device as ``x``, values in ``[0, 1]``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a float tensor in [0, 1], got {x.dtype} (convert uint8 with x / 255)")
        b, _, h, w = x.shape
        if params is None:
            params = self.sample_params(b, x.device, generator)
        # Interpolate and do the OD maths in float32: bf16 has 3 significant digits, too few for
        # log/exp round trips; the result is cast back at the end.
        out = x.float()
        if not self.is_geometric_identity:
            theta = self.affine_theta(params, h, w)
            grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
            if self.fill is None:
                out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
            else:
                out = F.grid_sample(out - self.fill, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False).add_(self.fill)
        if self.stain == "hed":
            out = hed_jitter(out, params["stain_alpha"], params["stain_beta"])
        elif self.stain == "macenko":
            if stain_matrix is None:
                # Estimated on the un-warped input: the same as a cached per-source-image matrix.
                stain_matrix = macenko_stain_matrix(rgb_to_od(x))
            out = macenko_jitter(out, params["stain_alpha"][:, :2], params["stain_beta"][:, :2],
                                 stain_matrix=stain_matrix)
        elif self.stain == "macenko-hed":
            if stain_matrix is None:
                stain_matrix = macenko_stain_matrix(rgb_to_od(x))  # as for "macenko": the un-warped input
            out = macenko_hed_jitter(out, params["stain_alpha"], params["stain_beta"], stain_matrix=stain_matrix)
        out = out.clamp(0.0, 1.0) if out is x else out.clamp_(0.0, 1.0)
        return out.to(x.dtype)
