"""Image-reconstruction metrics on [0, 1] images, and the trivial baselines.

PSNR uses peak 1 on images clamped to [0, 1] (breaching's convention; not the
DLM code's ``factor = 1/std`` on un-normalised images, which adds ~11.5 dB).
SSIM follows scikit-image's ``structural_similarity`` defaults with
``data_range=1`` (uniform 7x7 window, sample covariance, K1 = 0.01,
K2 = 0.03, mean over the windows that lie inside the image, averaged over
channels); the DLM code's ``data_range=255`` on [0, 1] data makes SSIM ~1
for any image. Every reconstruction is scored beside two baselines it must
beat to count: a constant grey (0.5) image and the data set's mean image.

Images are ``float[H, W, C]``; batched helpers take leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_MIN_MSE = 1e-10  # caps PSNR at 100 dB for identical images.


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error over the last three axes (``[..., H, W, C] -> [...]``)."""
    return jnp.mean(jnp.square(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)),
                    axis=(-3, -2, -1))


def psnr(reference: jax.Array, image: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / mse)``.

    Both images are clamped to ``[0, data_range]`` first. Identical images give
    100 dB (the MSE is floored at 1e-10).
    """
    a = jnp.clip(reference, 0.0, data_range)
    b = jnp.clip(image, 0.0, data_range)
    return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse(a, b), _MIN_MSE))


def _box_mean(x: jax.Array, win: int) -> jax.Array:
    """Mean over every ``win x win`` window fully inside ``float[H, W]``."""
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (win, win), (1, 1), "VALID")
    return s / (win * win)


def ssim(reference: jax.Array, image: jax.Array, data_range: float = 1.0,
         win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Structural similarity of two ``float[H, W, C]`` images (scikit-image defaults).

    Args:
      reference: ``float[H, W, C]``.
      image: ``float[H, W, C]``.
      data_range: the dynamic range (1 for [0, 1] images).
      win_size: odd window side; reduced to the largest odd size that fits.
      k1: the luminance constant (``C1 = (k1 * data_range)^2``).
      k2: the contrast constant (``C2 = (k2 * data_range)^2``).

    Returns:
      ``float[]``, the mean SSIM over channels and windows.

    References:
      Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error
      visibility to structural similarity", IEEE TIP 2004;
      ``skimage.metrics.structural_similarity``.
    """
    h, w = reference.shape[0], reference.shape[1]
    win = min(win_size, h, w)
    win = win if win % 2 == 1 else win - 1
    np_ = win * win
    cov_norm = np_ / (np_ - 1.0)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2

    def one_channel(x, y):
        ux, uy = _box_mean(x, win), _box_mean(y, win)
        uxx, uyy, uxy = _box_mean(x * x, win), _box_mean(y * y, win), _box_mean(x * y, win)
        vx = cov_norm * (uxx - ux * ux)
        vy = cov_norm * (uyy - uy * uy)
        vxy = cov_norm * (uxy - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        return jnp.mean(s)

    x = jnp.asarray(reference, jnp.float32)
    y = jnp.asarray(image, jnp.float32)
    per_channel = jax.vmap(one_channel, in_axes=(-1, -1))(x, y)
    return jnp.mean(per_channel)


def ssim_batch(reference: jax.Array, image: jax.Array, data_range: float = 1.0) -> jax.Array:
    """:func:`ssim` over any leading axes: ``[..., H, W, C] -> [...]``."""
    lead = reference.shape[:-3]
    r = reference.reshape((-1,) + reference.shape[-3:])
    i = jnp.broadcast_to(image, reference.shape).reshape(r.shape)
    return jax.vmap(lambda a, b: ssim(a, b, data_range))(r, i).reshape(lead)


def label_accuracy(true_labels, predicted_labels) -> jax.Array:
    """Fraction of labels recovered exactly (elementwise, ``[...] -> float[]``)."""
    return jnp.mean((jnp.asarray(true_labels) == jnp.asarray(predicted_labels)).astype(
        jnp.float32))


def match_batch(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Order of reconstructions that best matches the originals (Hungarian, by MSE).

    A batch of ``B > 1`` images is reconstructed in no particular order; score
    it after this re-ordering. Args are ``float[B, H, W, C]``; returns ``int[B]``
    such that ``image[order]`` lines up with ``reference``.
    """
    from scipy.optimize import linear_sum_assignment  # scipy ships with scikit-learn

    ref = np.asarray(reference, np.float64).reshape(reference.shape[0], -1)
    img = np.clip(np.asarray(image, np.float64), 0, 1).reshape(image.shape[0], -1)
    cost = ((ref[:, None, :] - img[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(rows), np.int64)
    order[rows] = cols
    return order


def score(originals: np.ndarray, reconstructions: np.ndarray, true_labels: np.ndarray,
          labels: np.ndarray, mean_image: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image metrics and baselines for victims' batches.

    Args:
      originals: ``float[V, B, H, W, C]`` in [0, 1].
      reconstructions: ``float[V, B, H, W, C]``.
      true_labels: ``int[V, B]``.
      labels: ``int[V, B]`` the attack's labels.
      mean_image: ``float[H, W, C]`` the data set's mean image.

    Returns:
      A dict of ``float[V, B]`` arrays: ``mse``, ``psnr``, ``ssim``,
      ``label_correct``, ``psnr_grey``, ``ssim_grey``, ``psnr_mean``,
      ``ssim_mean``. Batches with ``B > 1`` are matched first; labels are then
      scored as a multiset (the fraction of true labels recovered).
    """
    originals = np.asarray(originals, np.float32)
    recon = np.array(reconstructions, np.float32)
    labels = np.array(labels)
    true_labels = np.asarray(true_labels)
    v, b = originals.shape[:2]
    label_correct = np.zeros((v, b), np.float32)
    for i in range(v):
        if b > 1:
            order = match_batch(originals[i], recon[i])
            recon[i] = recon[i][order]
            pred = list(labels[i])
            for j, t in enumerate(true_labels[i]):
                if t in pred:
                    pred.remove(t)
                    label_correct[i, j] = 1.0
        else:
            label_correct[i] = (labels[i] == true_labels[i]).astype(np.float32)
    grey = jnp.full(originals.shape, 0.5, jnp.float32)
    mean_b = jnp.broadcast_to(jnp.asarray(mean_image, jnp.float32), originals.shape)
    out = {
        "mse": mse(np.clip(recon, 0, 1), originals),
        "psnr": psnr(originals, recon),
        "ssim": ssim_batch(originals, jnp.clip(recon, 0, 1)),
        "label_correct": label_correct,
        "psnr_grey": psnr(originals, grey),
        "ssim_grey": ssim_batch(originals, grey),
        "psnr_mean": psnr(originals, mean_b),
        "ssim_mean": ssim_batch(originals, mean_b),
    }
    return {k: np.asarray(val, np.float64) for k, val in out.items()}
