"""PSNR / SSIM against hand-computed values, a window loop and scikit-image."""

import numpy as np
import pytest

from fljax.attacks.leakage import metrics


def test_psnr_hand_values():
    a = np.zeros((8, 8, 1), np.float32)
    assert float(metrics.psnr(a, a + 0.1)) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert float(metrics.psnr(a, a + 0.5)) == pytest.approx(10 * np.log10(4), abs=1e-4)
    # Values outside [0, 1] are clamped: 2.0 counts as 1.0.
    assert float(metrics.psnr(a, a + 2.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(metrics.psnr(a, a)) == pytest.approx(100.0)
    assert float(metrics.mse(a, a + 0.1)) == pytest.approx(0.01, rel=1e-5)


def test_psnr_peak_is_one_not_one_over_std():
    # DLM's code scales the peak by 1/std (+~11.5 dB for CIFAR-100); we do not.
    rng = np.random.default_rng(0)
    a = rng.random((8, 8, 1)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    mse = float(np.mean((a - b) ** 2))
    assert float(metrics.psnr(a, b)) == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)


def test_ssim_hand_values_constant_images():
    c1, c2 = (0.01) ** 2, (0.03) ** 2
    a = np.full((7, 7, 1), 0.5, np.float32)
    b = np.full((7, 7, 1), 0.25, np.float32)
    # One 7x7 window, zero variances: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    expected = (2 * 0.5 * 0.25 + c1) / (0.5 ** 2 + 0.25 ** 2 + c1)
    assert float(metrics.ssim(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    del c2


def test_ssim_hand_values_one_window():
    # Two 7x7 images with known moments: x = checkerboard 0/1, y = 1 - x.
    x = (np.indices((7, 7)).sum(0) % 2).astype(np.float32)[..., None]
    y = 1.0 - x
    n = 49
    mx, my = x.mean(), y.mean()
    vx = x.var() * n / (n - 1)
    vy = y.var() * n / (n - 1)
    cxy = ((x - mx) * (y - my)).sum() / (n - 1)
    c1, c2 = 1e-4, 9e-4
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert float(metrics.ssim(x, y)) == pytest.approx(expected, rel=1e-4)
    assert expected < 0  # anti-correlated images


def test_ssim_data_range_matters():
    # With data_range=255 on [0, 1] data (the DLM code's bug) SSIM is ~1 for noise.
    rng = np.random.default_rng(1)
    a = rng.random((8, 8, 1)).astype(np.float32)
    b = rng.random((8, 8, 1)).astype(np.float32)
    assert float(metrics.ssim(a, b)) < 0.3
    assert float(metrics.ssim(a, b, data_range=255.0)) > 0.95


def _ssim_loop(x, y, win=7, c1=1e-4, c2=9e-4):
    """SSIM by its definition: every win x win window inside the image, one at a
    time (sample variances, n - 1), averaged over windows and then channels."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    per_channel = []
    for ch in range(x.shape[-1]):
        values = []
        for i in range(x.shape[0] - win + 1):
            for j in range(x.shape[1] - win + 1):
                a = x[i:i + win, j:j + win, ch].ravel()
                b = y[i:i + win, j:j + win, ch].ravel()
                ma, mb = a.mean(), b.mean()
                va, vb = a.var(ddof=1), b.var(ddof=1)
                cab = ((a - ma) * (b - mb)).sum() / (a.size - 1)
                values.append(((2 * ma * mb + c1) * (2 * cab + c2))
                              / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


def test_ssim_over_several_windows_matches_the_window_loop():
    """Images with 2 to 20 windows per channel, the reference a plain loop.

    Catches: taking one window's value (the first, or the centre), averaging
    over channels before the windows' statistics, population variances.
    """
    rng = np.random.default_rng(4)
    for shape in [(8, 7, 1), (9, 9, 1), (12, 10, 3), (7, 11, 2)]:
        a = rng.random(shape).astype(np.float32)
        b = np.clip(a + 0.3 * rng.standard_normal(shape), 0, 1).astype(np.float32)
        want = _ssim_loop(a, b)
        assert float(metrics.ssim(a, b)) == pytest.approx(want, abs=1e-5), shape
    # Two windows with different similarity: a mean of 1 and the second's value.
    x = np.zeros((8, 7, 1), np.float32)
    x[7] = 1.0  # only the second window (rows 1..7) sees the bright row
    y = x.copy()
    y[7, :3] = 0.0
    second = _ssim_loop(x[1:], y[1:])
    assert second < 0.9
    assert float(metrics.ssim(x, y)) == pytest.approx((1.0 + second) / 2, abs=1e-5)


def test_ssim_matches_scikit_image():
    """docs/leakage.md: equal to ``skimage.metrics.structural_similarity`` to 1e-5
    (scikit-image is a test dependency: the ``dev`` extra)."""
    from skimage import metrics as skm
    rng = np.random.default_rng(2)
    for shape in [(8, 8, 1), (16, 12, 3), (32, 32, 1)]:
        a = rng.random(shape).astype(np.float32)
        b = np.clip(a + 0.2 * rng.standard_normal(shape), 0, 1).astype(np.float32)
        ref = skm.structural_similarity(a, b, data_range=1.0, channel_axis=-1)
        assert float(metrics.ssim(a, b)) == pytest.approx(ref, abs=1e-5)
        ref_p = skm.peak_signal_noise_ratio(a, b, data_range=1.0)
        assert float(metrics.psnr(a, b)) == pytest.approx(ref_p, abs=1e-3)


def test_score_baselines_and_matching():
    rng = np.random.default_rng(3)
    x = rng.random((2, 2, 8, 8, 1)).astype(np.float32)
    rec = x[:, ::-1]  # reconstructed in swapped order
    s = metrics.score(x, rec, np.array([[1, 2], [3, 4]]), np.array([[2, 1], [4, 0]]),
                      x.reshape(-1, 8, 8, 1).mean(0))
    np.testing.assert_allclose(s["psnr"], 100.0)
    np.testing.assert_allclose(s["label_correct"], [[1, 1], [0, 1]])  # multiset match
    grey = 10 * np.log10(1 / ((x - 0.5) ** 2).mean(axis=(2, 3, 4)))
    np.testing.assert_allclose(s["psnr_grey"], grey, rtol=1e-4)


def test_ssim_reduced_windows_and_other_ranges_match_scikit_image():
    """Images smaller than the 7x7 window (5x9, 6x6, 4x8, 9x6) use the largest
    odd window that fits (scikit-image is given it explicitly: it refuses a
    window past the image); data range 255 on dark [0, 255] images (SSIM
    and PSNR, whose peak is then 255).

    Catches: the height taken from the width (a 7-wide window on 5 rows: no
    window, NaN), an even window kept (``% 3``) or rounded up / down by 2,
    ``C1 = (k1 / data_range)^2``, PSNR's peak cubed."""
    from skimage import metrics as skm
    rng = np.random.default_rng(6)
    for shape, win in [((5, 9, 1), 5), ((6, 6, 2), 5), ((4, 8, 1), 3), ((9, 6, 1), 5)]:
        a = rng.random(shape).astype(np.float32)
        b = np.clip(a + 0.3 * rng.standard_normal(shape), 0, 1).astype(np.float32)
        ref = skm.structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win)
        assert float(metrics.ssim(a, b)) == pytest.approx(ref, abs=1e-5), shape
    # Dark images (values 0-12): the constants C1 = 6.5, C2 = 58.5 weigh in.
    a = np.round(rng.random((10, 9, 3)) * 12).astype(np.float32)
    b = np.clip(a + 4 * rng.standard_normal(a.shape), 0, 255).astype(np.float32)
    ref = skm.structural_similarity(a, b, data_range=255.0, channel_axis=-1)
    assert float(metrics.ssim(a, b, data_range=255.0)) == pytest.approx(ref, abs=1e-5)
    ref_p = skm.peak_signal_noise_ratio(a, b, data_range=255.0)
    assert float(metrics.psnr(a, b, data_range=255.0)) == pytest.approx(ref_p, abs=1e-3)


def test_score_ssims_are_the_per_image_ssim():
    """``score``'s SSIM columns are :func:`metrics.ssim` of each image at data
    range 1, against the reconstruction (clipped), the grey image and the
    mean image. Catches: ``ssim_batch``'s default range not 1."""
    rng = np.random.default_rng(7)
    x = rng.random((2, 1, 8, 8, 1)).astype(np.float32)
    rec = x + 0.4 * rng.standard_normal(x.shape).astype(np.float32)
    mean = rng.random((8, 8, 1)).astype(np.float32)
    s = metrics.score(x, rec, np.zeros((2, 1), int), np.zeros((2, 1), int), mean)
    for v in range(2):
        want = {"ssim": np.clip(rec[v, 0], 0, 1), "ssim_grey": np.full((8, 8, 1), 0.5),
                "ssim_mean": mean}
        for k, img in want.items():
            assert s[k][v, 0] == pytest.approx(float(metrics.ssim(x[v, 0], img)), abs=1e-6), k


def test_label_accuracy_hand_values():
    """Catches: ``!=`` for ``==`` (the share missed)."""
    assert float(metrics.label_accuracy([1, 2, 3, 4], [1, 0, 3, 4])) == pytest.approx(0.75)
    assert float(metrics.label_accuracy([[1, 2]], [[2, 1]])) == 0.0


def test_match_batch_costs_use_the_clipped_reconstructions():
    """Two-pixel images: originals A = (1, 0.2), B = (0, 0); reconstructions
    X = (3, 0), Y = (1, 1). Clipped to [0, 1], X = (1, 0): X -> B, Y -> A
    costs 1.64 against 2.04 the other way. Unclipped (or clipped at 2) X is
    nearer A. Catches: the clip's upper bound changed."""
    ref = np.array([[1.0, 0.2], [0.0, 0.0]]).reshape(2, 1, 2, 1)
    img = np.array([[3.0, 0.0], [1.0, 1.0]]).reshape(2, 1, 2, 1)
    np.testing.assert_array_equal(metrics.match_batch(ref, img), [1, 0])


def test_score_of_single_images_and_its_columns():
    """One image per victim: labels compared one to one, the MSE of the
    reconstruction clipped to [0, 1], every documented column present.
    Catches: ``!=`` or no value for single labels, another clip, a column
    renamed."""
    rng = np.random.default_rng(8)
    x = rng.random((2, 1, 8, 8, 1)).astype(np.float32)
    rec = x + rng.choice([-2.0, 0.0, 2.0], x.shape).astype(np.float32)
    mean = rng.random((8, 8, 1)).astype(np.float32)
    s = metrics.score(x, rec, np.array([[3], [5]]), np.array([[3], [4]]), mean)
    assert set(s) == {"mse", "psnr", "ssim", "label_correct", "psnr_grey", "ssim_grey",
                      "psnr_mean", "ssim_mean"}
    np.testing.assert_array_equal(s["label_correct"], [[1.0], [0.0]])
    want = ((np.clip(rec, 0, 1) - x) ** 2).mean(axis=(2, 3, 4))
    np.testing.assert_allclose(s["mse"], want, rtol=1e-5)
    np.testing.assert_allclose(s["psnr_mean"], 10 * np.log10(1 / ((x - mean) ** 2).mean(
        axis=(2, 3, 4))), rtol=1e-5)

