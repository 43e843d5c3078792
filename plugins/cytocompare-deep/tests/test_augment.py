"""BatchAugment: per-sample randomness, determinism, identity, conventions, range, dtype and device."""

from __future__ import annotations

import pytest

import torch

from cytocompare_deep.augment import BatchAugment

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
IDENTITY = dict(rotation=0.0, shift=0.0, shear=0.0, flips=False, stain=None)


def _cell_batch(b: int = 4, h: int = 40, w: int = 40, seed: int = 0) -> torch.Tensor:
    """White background, a coloured off-centre blob and a bar: asymmetric, so every transform shows."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = (((yy - h * 0.35) ** 2 + (xx - w * 0.6) ** 2) < (min(h, w) * 0.2) ** 2).float()
    x = torch.ones(b, 3, h, w)
    x = x - blob * torch.tensor([0.3, 0.6, 0.2])[:, None, None]
    x[:, :, h // 2 + 5 : h // 2 + 8, 3 : w // 2] = torch.tensor([0.4, 0.2, 0.6])[:, None, None]
    return (x + 0.02 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("stain", [None, "hed", "macenko", "macenko-hed"])
def test_identity_settings_return_input(stain: str | None) -> None:
    x = _cell_batch()
    aug = BatchAugment(**{**IDENTITY, "stain": stain}, hed_sigma=0, hed_bias=0, macenko_sigma1=0, macenko_sigma2=0)
    torch.testing.assert_close(aug(x, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)


def test_geometric_identity_through_grid_sample() -> None:
    # Force the affine path with neutral parameters: grid_sample with the identity grid.
    x = _cell_batch(h=37, w=29)
    aug = BatchAugment(rotation=90, shift=0.1, shear=0.1, flips=True, stain=None)
    params = aug.sample_params(x.shape[0])
    for key in ("angle", "shear", "tx", "ty"):
        params[key].zero_()
    params["flip_x"][:] = False
    params["flip_y"][:] = False
    torch.testing.assert_close(aug(x, params=params), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(33, 33), (40, 40)])
def test_rotation_90_is_counter_clockwise_like_rot90(shape: tuple[int, int]) -> None:
    x = _cell_batch(b=2, h=shape[0], w=shape[1])
    aug = BatchAugment(rotation=90, shift=0, shear=0, flips=False, stain=None)
    params = aug.sample_params(2)
    params["angle"][:] = 90.0
    y = aug(x, params=params)
    ccw = torch.rot90(x, 1, dims=(-2, -1))  # counter-clockwise as displayed (numpy.rot90 direction)
    assert (y - ccw)[..., 2:-2, 2:-2].abs().max() < 1e-4
    assert (y - torch.rot90(x, -1, dims=(-2, -1))).abs().max() > 0.2


def test_flips_and_shift_conventions() -> None:
    x = _cell_batch(b=1, h=32, w=48)
    aug = BatchAugment(rotation=0, shift=0.25, shear=0, flips=True, stain=None, fill=1.0)
    params = aug.sample_params(1)
    for key in ("angle", "shear", "tx", "ty"):
        params[key].zero_()
    params["flip_x"][:], params["flip_y"][:] = True, False
    torch.testing.assert_close(aug(x, params=params), x.flip(-1), atol=1e-5, rtol=0)
    params["flip_x"][:], params["flip_y"][:] = False, True
    torch.testing.assert_close(aug(x, params=params), x.flip(-2), atol=1e-5, rtol=0)
    # Shift right by a quarter of the width: content moves right, white fills the left edge.
    params["flip_y"][:] = False
    params["tx"][:] = 0.25
    y = aug(x, params=params)
    torch.testing.assert_close(y[..., 12:], x[..., :-12], atol=1e-5, rtol=0)
    assert torch.allclose(y[..., :12], torch.ones(1, 3, 32, 12))


def test_shear_factor_semantics() -> None:
    # x' = x + s * y (pixels, centred, y down): a vertical line becomes slanted by s.
    h = w = 41
    x = torch.ones(1, 3, h, w)
    x[..., :, 20] = 0.0
    aug = BatchAugment(rotation=0, shift=0, shear=0.2, flips=False, stain=None)
    params = aug.sample_params(1)
    params["angle"].zero_(), params["tx"].zero_(), params["ty"].zero_()
    params["shear"][:] = 0.2
    y = aug(x, params=params)[0, 0]
    row_top, row_bottom = 0, h - 1  # centred y = -20 and +20
    col_top = int(y[row_top].argmin())
    col_bottom = int(y[row_bottom].argmin())
    assert col_top == 20 - 4 and col_bottom == 20 + 4


def test_per_sample_parameters_and_outputs_differ() -> None:
    x = _cell_batch(b=6, seed=1)[:1].expand(6, -1, -1, -1).contiguous()  # identical images
    aug = BatchAugment(stain="hed")
    g = torch.Generator().manual_seed(0)
    params = aug.sample_params(6, generator=g)
    for key in ("angle", "shear", "tx", "ty"):
        assert torch.unique(params[key]).numel() == 6, key
    assert torch.unique(params["stain_alpha"], dim=0).shape[0] == 6
    y = aug(x, params=params)
    for i in range(6):
        for j in range(i + 1, 6):
            assert (y[i] - y[j]).abs().max() > 1e-2, (i, j)


@pytest.mark.parametrize("stain", [None, "hed", "macenko", "macenko-hed"])
def test_deterministic_by_seed(stain: str | None) -> None:
    x = _cell_batch()
    aug = BatchAugment(stain=stain)
    a = aug(x, torch.Generator().manual_seed(42))
    b = aug(x, torch.Generator().manual_seed(42))
    c = aug(x, torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_parameter_ranges() -> None:
    aug = BatchAugment(rotation=180, shift=0.25, shear=0.2, stain="hed", hed_sigma=0.05, hed_bias=0.05)
    p = aug.sample_params(4000, generator=torch.Generator().manual_seed(0))
    assert 0 <= float(p["angle"].min()) and float(p["angle"].max()) <= 180 and float(p["angle"].max()) > 170
    assert float(p["tx"].abs().max()) <= 0.25 and float(p["shear"].abs().max()) <= 0.2
    assert 0.4 < float(p["flip_x"].float().mean()) < 0.6
    assert float((p["stain_alpha"] - 1).abs().max()) <= 0.05 and float(p["stain_beta"].abs().max()) <= 0.05
    none = BatchAugment(stain="hed", p_stain=0.0).sample_params(10)
    assert torch.equal(none["stain_alpha"], torch.ones(10, 3)) and not none["apply_stain"].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("stain", [None, "hed", "macenko", "macenko-hed"])
def test_range_dtype_device_preserved(device: str, dtype: torch.dtype, stain: str | None) -> None:
    x = _cell_batch(b=3).to(device=device, dtype=dtype)
    aug = BatchAugment(stain=stain, hed_sigma=0.2, hed_bias=0.2, macenko_sigma1=0.5, macenko_sigma2=0.5)
    y = aug(x, torch.Generator().manual_seed(0))  # a CPU generator drives any device
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y.float()).all()


@pytest.mark.gpu
@pytest.mark.parametrize(("stain", "atol"), [("hed", 1e-4), ("macenko-hed", 1e-3)])  # Macenko: sorts, eigh
def test_cuda_matches_cpu_and_accepts_cuda_generator(stain: str, atol: float) -> None:
    x = _cell_batch(b=4)
    aug = BatchAugment(stain=stain)
    cpu = aug(x, torch.Generator().manual_seed(5))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(5)).cpu()
    torch.testing.assert_close(gpu, cpu, atol=atol, rtol=0)
    y = aug(x.cuda(), torch.Generator(device="cuda").manual_seed(5))
    assert y.is_cuda


def test_rejects_bad_input() -> None:
    aug = BatchAugment()
    with pytest.raises(ValueError):
        aug(torch.rand(3, 8, 8))
    with pytest.raises(TypeError):
        aug(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        BatchAugment(stain="reinhard")


def test_macenko_hed_chain_uses_the_hed_ranges_and_p_stain() -> None:
    aug = BatchAugment(stain="macenko-hed", hed_sigma=0.05, hed_bias=0.05, p_stain=0.5)
    p = aug.sample_params(4000, generator=torch.Generator().manual_seed(0))
    assert float((p["stain_alpha"] - 1).abs().max()) <= 0.05 and float((p["stain_alpha"] - 1).abs().max()) > 0.04
    assert float(p["stain_beta"].abs().max()) <= 0.05 and float(p["stain_beta"].abs().max()) > 0.04
    assert 0.45 < float(p["apply_stain"].float().mean()) < 0.55
    x = _cell_batch(b=4)
    y = aug(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    off = BatchAugment(**{**IDENTITY, "stain": "macenko-hed"}, hed_sigma=0, hed_bias=0)
    torch.testing.assert_close(off(x, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)
