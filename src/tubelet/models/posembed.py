"""Position embeddings on a (t, h, w) token grid: resize in time and space, repeat over time.

A position embedding is (1, P + t*h*w, D): ``P`` prefix rows (the CLS token's row, 0 or 1)
then the token rows flattened time-major (t, h, w), as the encoders and the reference lay
them out. Resizing keeps the prefix rows untouched and interpolates the grid:

- in space, **bicubic** (``align_corners=False``, no antialiasing), frame by frame, as timm and
  the reference ViT (``scipy.ndimage.zoom`` order 1-3) resize image position embeddings;
- in time, **linear** (``align_corners=False``), location by location.

The two are separable, so an embedding that is constant over time (as paper 3.4 initialises
it) stays constant over time after any resize. An unchanged grid returns the input as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ViViTConfig

Grid = tuple[int, int, int]


def _split(pos: Tensor, grid: Grid) -> tuple[Tensor, Tensor]:
    t, h, w = grid
    prefix = pos.shape[1] - t * h * w
    if pos.dim() != 3 or pos.shape[0] != 1 or prefix not in (0, 1):
        raise ValueError(f"position embedding of shape {tuple(pos.shape)} does not fit a grid "
                         f"t x h x w = {t} x {h} x {w} (expected (1, [1 +] {t * h * w}, D))")
    return pos[:, :prefix], pos[:, prefix:]


def resize_pos_embed(pos: Tensor, old_grid: Grid, new_grid: Grid, *,
                     spatial_mode: str = "bicubic") -> Tensor:
    """(1, P + t*h*w, D) on ``old_grid`` -> (1, P + t'*h'*w', D) on ``new_grid``; P rows kept.

    Spatial interpolation ``spatial_mode`` ("bicubic" or "bilinear"), temporal linear.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    prefix, grid = _split(pos, old_grid)
    if old_grid == new_grid:
        return pos
    (t, h, w), (t2, h2, w2) = old_grid, new_grid
    d = pos.shape[-1]
    x = grid.reshape(t, h, w, d).float()
    if (h, w) != (h2, w2):
        x = x.permute(0, 3, 1, 2)  # (t, h, w, D) -> (t, D, h, w)
        x = F.interpolate(x, size=(h2, w2), mode=spatial_mode, align_corners=False)
        x = x.permute(0, 2, 3, 1)  # -> (t, h', w', D)
    if t != t2:
        x = x.reshape(t, h2 * w2 * d).T[None]  # -> (1, h'*w'*D, t)
        x = F.interpolate(x, size=t2, mode="linear", align_corners=False)
        x = x[0].T.reshape(t2, h2, w2, d)  # -> (t', h', w', D)
    x = x.reshape(1, t2 * h2 * w2, d).to(pos.dtype)
    return torch.cat([prefix, x], dim=1)


def repeat_pos_embed_in_time(pos: Tensor, image_grid: tuple[int, int], num_frames: int) -> Tensor:
    """An image ViT's (1, P + h*w, D) -> (1, P + t*h*w, D): the spatial rows repeated for every
    token frame (paper 3.4), the prefix (CLS) row kept once."""
    h, w = image_grid
    prefix, grid = _split(pos, (1, h, w))
    return torch.cat([prefix, grid.repeat(1, num_frames, 1)], dim=1)  # (1, h*w, D) -> (1, t*h*w, D)


def pos_embed_grids(cfg: ViViTConfig) -> dict[str, Grid]:
    """The token grid of every position embedding of a ViViT built from ``cfg``.

    Models 1, 3, 4 have one over (t, h, w) (and with ``cfg.time_embed`` a table over time,
    (t, 1, 1), without a prefix row); Model 2's spatial encoder sees one frame (1, h, w) and its
    temporal encoder one token per frame (t, 1, 1).
    """
    t, h, w = cfg.grid
    if cfg.kind in ("factorised_encoder", "average_pool"):
        grids = {"spatial.pos_embed": (1, h, w)}
        if cfg.kind == "factorised_encoder":
            grids["temporal.pos_embed"] = (t, 1, 1)
        return grids
    grids = {"encoder.pos_embed": (t, h, w)}
    if cfg.time_embed:
        grids["encoder.time_embed"] = (t, 1, 1)
    return grids




def infer_grid(num_tokens: int, target: Grid) -> Grid | None:
    """The grid a checkpoint's ``num_tokens`` rows were trained on, guessed from the grid the
    model wants: the same (h, w) with another t, else the same t with another square (h, w).
    ``None`` when neither fits."""
    t, h, w = target
    if num_tokens == t * h * w:
        return target
    if num_tokens % (h * w) == 0:
        return num_tokens // (h * w), h, w
    if num_tokens % t == 0:
        side = round((num_tokens // t) ** 0.5)
        if side * side * t == num_tokens:
            return t, side, side
    return None


def fit_pos_embeds(state: dict[str, Tensor], cfg: ViViTConfig) -> dict[str, Tensor]:
    """Resize the position embeddings of a foreign checkpoint to ``cfg``'s grids, their trained
    grid inferred with :func:`infer_grid`. Embeddings that fit no grid are left for the shape
    check to report."""
    state = dict(state)
    for name, grid in pos_embed_grids(cfg).items():
        if name not in state or state[name].dim() != 3:
            continue
        prefix = int(cfg.classifier == "token" and name.endswith(".pos_embed"))
        old = infer_grid(state[name].shape[1] - prefix, grid)
        if old is not None:
            state[name] = resize_pos_embed(state[name], old, grid)
    return state


__all__ = ["fit_pos_embeds", "infer_grid", "pos_embed_grids", "repeat_pos_embed_in_time",
           "resize_pos_embed"]
