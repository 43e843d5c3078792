"""Stain augmentation: HED and the Macenko + HED chain against scikit-image, Macenko recovery on
synthetic two-stain images."""

from __future__ import annotations

import numpy as np
import skimage.color as color  # the reference (the test extra): a missing one fails, never skips
import torch

from cytocompare_deep import stain


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).double().numpy()


def _random_rgb(b: int = 3, h: int = 17, w: int = 13, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 0.95 + 0.04


def _in_hed_cone(b: int = 3, h: int = 17, w: int = 13, seed: int = 1) -> torch.Tensor:
    """RGB images made from non-negative HED concentrations: they round-trip through skimage exactly."""
    rng = np.random.default_rng(seed)
    hed = rng.uniform(0.0, 0.08, size=(b, h, w, 3))
    rgb = np.stack([color.hed2rgb(img) for img in hed])
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def test_matrices_match_skimage() -> None:
    np.testing.assert_allclose(np.array(stain.RGB_FROM_HED), color.rgb_from_hed, atol=0)
    np.testing.assert_allclose(np.array(stain.HED_FROM_RGB), color.hed_from_rgb, rtol=1e-12)


def test_rgb_to_hed_matches_skimage() -> None:
    x = _random_rgb()
    ours = _to_hwc(stain.rgb_to_hed(x, clip=True))
    ref = np.stack([color.rgb2hed(img) for img in _to_hwc(x)])
    np.testing.assert_allclose(ours, ref, atol=2e-6)
    back = _to_hwc(stain.hed_to_rgb(torch.from_numpy(ref).permute(0, 3, 1, 2).float()))
    np.testing.assert_allclose(back, np.stack([color.hed2rgb(img) for img in ref]), atol=2e-6)


def test_hed_round_trip_identity() -> None:
    x = _random_rgb()
    # Without skimage's clamp of negative stains the round trip is exact for every colour ...
    ones, zeros = torch.ones(3, 3), torch.zeros(3, 3)
    np.testing.assert_allclose(stain.hed_jitter(x, ones, zeros).numpy(), x.numpy(), atol=2e-6)
    # ... and with it, for colours inside the HED cone, as skimage's own round trip.
    x = _in_hed_cone()
    np.testing.assert_allclose(stain.hed_jitter(x, ones, zeros, clip_stains=True).numpy(), x.numpy(), atol=2e-6)
    ref = np.stack([color.hed2rgb(color.rgb2hed(img)) for img in _to_hwc(x)])
    np.testing.assert_allclose(_to_hwc(x), ref, atol=2e-6)


def _numpy_tellez(images: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Reference HED jitter as stainlib / Tellez-style code does it, through skimage."""
    out = []
    for img, a, b in zip(images, alpha, beta):
        out.append(color.hed2rgb(color.rgb2hed(img) * a + b))
    return np.stack(out)


def test_hed_jitter_matches_numpy_reference() -> None:
    alpha = torch.tensor([[0.95, 1.05, 1.0], [1.04, 0.97, 0.96], [1.0, 1.0, 1.0]])
    beta = torch.tensor([[0.01, -0.02, 0.0], [-0.03, 0.04, 0.01], [0.05, -0.05, 0.02]])
    # Exact skimage semantics, arbitrary colours (negative stains clamped as in skimage).
    x = _random_rgb()
    ours = _to_hwc(stain.hed_jitter(x, alpha, beta, clip_stains=True))
    np.testing.assert_allclose(ours, _numpy_tellez(_to_hwc(x), alpha.numpy(), beta.numpy()), atol=1e-5)
    # The folded 3x3 fast path agrees wherever skimage's clamp is inactive.
    x = _in_hed_cone()
    ours = _to_hwc(stain.hed_jitter(x, alpha, beta))
    np.testing.assert_allclose(ours, _numpy_tellez(_to_hwc(x), alpha.numpy(), beta.numpy()), atol=1e-5)


def test_hed_jitter_dtype_range_and_per_sample() -> None:
    x = torch.full((2, 3, 8, 8), 0.6).to(torch.bfloat16)
    alpha = torch.tensor([[1.05, 1.05, 1.05], [0.95, 0.95, 0.95]])
    beta = torch.tensor([[0.05, 0.05, 0.05], [-0.05, -0.05, -0.05]])
    y = stain.hed_jitter(x, alpha, beta)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.equal(y[0], y[1])


def test_masked_quantile_matches_nanquantile() -> None:
    g = torch.Generator().manual_seed(3)
    values = torch.randn(5, 101, generator=g)
    valid = torch.rand(5, 101, generator=g) > 0.4
    valid[4] = False
    valid[3] = False
    valid[3, 7] = True
    for q in (0.01, 0.5, 0.99):
        ours = stain.masked_quantile(values, valid, q)
        ref = torch.nanquantile(torch.where(valid, values, float("nan")), q, dim=1)
        torch.testing.assert_close(ours[:4], ref[:4])
        assert torch.isnan(ours[4])


# Two MGG-like absorbing directions (unit OD vectors): a blue-violet (azure / methylene blue)
# stain that absorbs red and green, and a pink (eosin-like) one that absorbs green.
_BLUE = np.array([0.62, 0.72, 0.31])
_PINK = np.array([0.10, 0.90, 0.42])


def _synthetic_two_stain(b: int = 2, size: int = 48, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.stack([_BLUE / np.linalg.norm(_BLUE), _PINK / np.linalg.norm(_PINK)], axis=1)  # (3, 2)
    # Mixtures from pure blue to pure pink (the Macenko extremes), with a white background.
    conc = rng.uniform(0.0, 1.5, size=(b, 2, size, size))
    mix = rng.uniform(0, 1, size=(b, 1, size, size))
    conc[:, :1] *= mix
    conc[:, 1:] *= 1 - mix
    conc[:, :, : size // 4] = 0.0  # background band
    od = np.einsum("ij,bjhw->bihw", s, conc) + rng.normal(0, 0.005, size=(b, 3, size, size))
    rgb = np.clip(np.exp(-od), 0, 1)
    return torch.from_numpy(rgb).float(), s


def test_macenko_recovers_synthetic_stains() -> None:
    x, truth = _synthetic_two_stain()
    est = stain.macenko_stain_matrix(stain.rgb_to_od(x))
    assert est.shape == (2, 3, 2)
    for b in range(est.shape[0]):
        m = est[b].numpy()
        cos = np.abs(m.T @ truth)  # (estimated, true)
        best = max(cos[0, 0] + cos[1, 1], cos[0, 1] + cos[1, 0]) / 2
        assert best > 0.95, cos
        # Ordered: first column has the larger red OD (the blue stain here), as in torchstain.
        assert cos[0, 0] > 0.95 and cos[1, 1] > 0.95


def test_macenko_handles_blank_images_and_mixed_masks() -> None:
    x, _ = _synthetic_two_stain(b=2)
    x = torch.cat([x, torch.ones(1, 3, 48, 48)])  # a blank image: no stained pixel
    est = stain.macenko_stain_matrix(stain.rgb_to_od(x))
    assert torch.isfinite(est).all()
    np.testing.assert_allclose(est.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_macenko_jitter_identity_and_perturbation() -> None:
    x, _ = _synthetic_two_stain(b=3)
    ones, zeros = torch.ones(3, 2), torch.zeros(3, 2)
    np.testing.assert_allclose(stain.macenko_jitter(x, ones, zeros).numpy(), x.numpy(), atol=1e-5)
    sm = stain.macenko_stain_matrix(stain.rgb_to_od(x))
    alpha = torch.tensor([[1.2, 1.0], [1.0, 0.8], [1.1, 1.1]])
    beta = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, -0.1]])
    y = stain.macenko_jitter(x, alpha, beta, stain_matrix=sm)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # Scaling the first stain by 1.2 scales its concentration by 1.2 (linear in OD).
    c_x = stain.macenko_concentrations(stain.rgb_to_od(x), sm)
    c_y = stain.macenko_concentrations(stain.rgb_to_od(y), sm)
    stained = c_x[0, 0] > 0.3
    ratio = (c_y[0, 0][stained] / c_x[0, 0][stained]).median()
    assert abs(float(ratio) - 1.2) < 0.02
    # Same result with the cached matrix as without it.
    np.testing.assert_allclose(stain.macenko_jitter(x, alpha, beta).numpy(), y.numpy(), atol=1e-6)


# ---------------------------------------------------------------- the chain: Macenko, then Tellez HED


def _ruifrok_basis() -> torch.Tensor:
    return torch.tensor(color.rgb_from_hed.T, dtype=torch.float32)  # columns: H, E, D OD vectors


def test_basis_jitter_in_the_ruifrok_basis_is_skimages_hed_jitter() -> None:
    """The chain's perturbation step, given scikit-image's own basis, is hed2rgb(rgb2hed(x) * a + b)."""
    alpha = torch.tensor([[0.95, 1.05, 1.0], [1.04, 0.97, 0.96], [1.0, 1.0, 1.0]])
    beta = torch.tensor([[0.01, -0.02, 0.0], [-0.03, 0.04, 0.01], [0.05, -0.05, 0.02]])
    x = _in_hed_cone()
    ours = _to_hwc(stain.basis_jitter(x, _ruifrok_basis(), alpha, beta))
    np.testing.assert_allclose(ours, _numpy_tellez(_to_hwc(x), alpha.numpy(), beta.numpy()), atol=1e-5)


def _from_h_and_e(b: int = 2, size: int = 48, seed: int = 0) -> np.ndarray:
    """(B, H, W, 3) images made by skimage.hed2rgb from H and E only (D = 0), from pure H to pure E
    (the extremes Macenko's angle percentiles look for), with a white background band. Amounts of
    at least 0.16 keep pure-E pixels above Macenko's 0.15 OD threshold in every channel."""
    rng = np.random.default_rng(seed)
    hed = np.zeros((b, size, size, 3))
    amount = rng.uniform(0.16, 0.3, size=(b, size, size))
    mix = rng.uniform(0, 1, size=(b, size, size))
    hed[..., 0], hed[..., 1] = amount * mix, amount * (1 - mix)
    hed[:, : size // 4] = 0.0
    return np.stack([color.hed2rgb(img) for img in hed])


def test_macenko_hed_chain_matches_skimage_on_h_and_e_images() -> None:
    """On images whose two stains are H and E, Macenko separation recovers them, so the chain is
    scikit-image's HED perturbation of H and E (the third channel is left alone here: in the
    chain it is the stains' normal, not DAB)."""
    rgb = _from_h_and_e()
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    alpha = torch.tensor([[1.05, 0.95, 1.0], [0.96, 1.04, 1.0]])
    beta = torch.tensor([[0.02, -0.01, 0.0], [-0.02, 0.03, 0.0]])
    ref = _numpy_tellez(rgb, alpha.numpy(), beta.numpy())
    # given the true (unit) H and E directions, the chain's maths is skimage's up to their norms (0.2 %)
    h_and_e = torch.tensor(color.rgb_from_hed[:2].T, dtype=torch.float32)
    h_and_e = (h_and_e / h_and_e.norm(dim=0, keepdim=True)).expand(2, 3, 2)
    exact = _to_hwc(stain.macenko_hed_jitter(x, alpha, beta, stain_matrix=h_and_e))
    np.testing.assert_allclose(exact, ref, atol=5e-4)
    # with the directions Macenko estimates from the images themselves
    ours = _to_hwc(stain.macenko_hed_jitter(x, alpha, beta))
    assert np.abs(ours - ref).mean() < 2e-3 and np.abs(ours - ref).max() < 2e-2
    # and the perturbation is far larger than that agreement (the comparison is not vacuous)
    assert np.abs(ref - rgb).mean() > 10 * np.abs(ours - ref).mean()


def test_macenko_hed_chain_identity_basis_and_cached_matrix() -> None:
    x, _ = _synthetic_two_stain(b=3)
    ones, zeros = torch.ones(3, 3), torch.zeros(3, 3)
    np.testing.assert_allclose(stain.macenko_hed_jitter(x, ones, zeros).numpy(), x.numpy(), atol=1e-5)
    sm = stain.macenko_stain_matrix(stain.rgb_to_od(x))
    basis = stain.complete_stain_basis(sm)
    assert basis.shape == (3, 3, 3)
    torch.testing.assert_close(basis[:, :, :2], sm)  # the two stains, then their unit normal
    np.testing.assert_allclose(basis[:, :, 2].norm(dim=1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose((basis[:, :, 2:].transpose(1, 2) @ basis[:, :, :2]).numpy(), 0.0, atol=1e-6)
    alpha = torch.tensor([[1.05, 1.0, 1.0], [1.0, 0.95, 1.0], [1.02, 1.02, 1.0]])
    beta = torch.tensor([[0.0, 0.0, 0.0], [0.0, -0.02, 0.0], [0.01, 0.01, 0.0]])  # sample 0: scale only
    cached = stain.macenko_hed_jitter(x, alpha, beta, stain_matrix=sm)
    np.testing.assert_allclose(stain.macenko_hed_jitter(x, alpha, beta).numpy(), cached.numpy(), atol=1e-6)
    # scaling the first stain's coordinate by 1.05 scales its Macenko concentration by 1.05
    c_x = stain.macenko_concentrations(stain.rgb_to_od(x), sm)
    c_y = stain.macenko_concentrations(stain.rgb_to_od(cached), sm)
    stained = c_x[0, 0] > 0.3
    assert abs(float((c_y[0, 0][stained] / c_x[0, 0][stained]).median()) - 1.05) < 0.01
