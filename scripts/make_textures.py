"""Extract the textures of the built-in motion dataset into ``src/tubelet/assets/textures.npz``.

Run once by a maintainer (needs scikit-learn and scikit-image; tubelet itself needs neither):

    python scripts/make_textures.py

What goes in, and under which terms (see also ``src/tubelet/assets/TEXTURES.md``):

* ``digits``: all 1,797 8x8 handwritten digits of scikit-learn's ``load_digits`` (a copy of the
  UCI "Optical Recognition of Handwritten Digits" test set; scikit-learn is BSD-3-Clause).
* ``objects``: 32x32 RGB crops of scikit-image's colour photographs ``astronaut`` (NASA, public
  domain), ``coffee`` (CC0, Rachel Michetti), ``chelsea`` (CC0, Stefan van der Walt) and
  ``rocket`` (SpaceX, public domain), downsampled so the crops hold whole shapes, not flat patches.
* ``backgrounds``: 64x64 grey crops of ``camera`` (CC0, Lav Varshney), ``brick``, ``grass`` and
  ``gravel`` (CC0 textures) and of the colour photographs, converted to grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import data as skdata
from skimage.color import rgb2gray
from skimage.transform import resize
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "src" / "tubelet" / "assets" / "textures.npz"
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]
GREY = ["camera", "brick", "grass", "gravel"]


def _crops(image: np.ndarray, size: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random square crops of ``image`` (H, W[, C]), each resized to ``size``."""
    h, w = image.shape[:2]
    out = []
    for _ in range(count):
        side = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
        top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        crop = resize(image[top:top + side, left:left + side], (size, size), anti_aliasing=True)
        out.append(np.round(crop * 255).astype(np.uint8))
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    digits = (load_digits().images * (255 / 16)).round().astype(np.uint8)  # (1797, 8, 8)
    objects = [c for name in PHOTOS for c in _crops(getattr(skdata, name)(), 32, 12, rng)]
    grey_sources = [getattr(skdata, name)() for name in GREY]
    grey_sources += [np.round(rgb2gray(getattr(skdata, name)()) * 255).astype(np.uint8) for name in PHOTOS]
    backgrounds = [c for image in grey_sources for c in _crops(image, 64, 4, rng)]
    np.savez_compressed(OUT, digits=digits, objects=np.stack(objects),  # (48, 32, 32, 3)
                        backgrounds=np.stack(backgrounds))  # (32, 64, 64)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB): digits {digits.shape}, "
          f"objects {np.stack(objects).shape}, backgrounds {np.stack(backgrounds).shape}")


if __name__ == "__main__":
    main()
