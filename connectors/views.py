"""Images to `ViewFeatures` with the image pipeline's views and vision tower (the same as the token track).

A 2:1 panorama gives the layout's views (global + E2P tiles) with their yaw/pitch and the overlap pairs of its
tiles' patches (for VICReg); any other image is one view at yaw 0, pitch 0 without pairs. With `cut` > 0 the
features are the tower's hidden states before its last `cut` encoder layers (`VisionTower.encode_below`), for
the training stages that tune those layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .inject import ViewFeatures

__all__ = ["image_view_features"]


def image_view_features(image: np.ndarray, layout: Any, tower: Any, cut: int = 0) -> ViewFeatures:
    """(H, W, 3) uint8 image -> ViewFeatures: tower features (V, P, D) of every view plus view angles.

    layout: `uti.image.Layout`; tower: `uti.image.vision.VisionTower` (or anything with `encode(views)`).
    """
    from uti.image.e2p import is_panorama, render_plain, render_views
    from uti.image.overlap import overlap_pairs

    pairs = None
    if is_panorama(image.shape[0], image.shape[1]):
        views = render_views(image, layout)  # (V, S, S, 3)
        specs = layout.views()
        yaw_pitch = torch.tensor([[v.yaw, v.pitch] for v in specs], dtype=torch.float32)  # (V, 2)
        is_global = torch.tensor([v.kind == "global" for v in specs])  # (V,)
        pairs = torch.from_numpy(overlap_pairs(layout, tower.grid).copy())  # (M, 4)
    else:
        views = render_plain(image, layout.tile_size)[None]  # (1, S, S, 3)
        yaw_pitch, is_global = torch.zeros(1, 2), torch.zeros(1, dtype=torch.bool)
    features = tower.encode_below(views, cut) if cut else tower.encode(views)  # (V, P, D)
    return ViewFeatures(features.float().cpu(), yaw_pitch, is_global, pairs)
