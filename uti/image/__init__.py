"""Images: 360° panoramas as E2P views (layout, rendering, loading, preview) and their image codec."""

from .e2p import is_panorama, render_plain, render_view, render_views, view_geometry
from .layout import Layout, View
from .load import load_image
from .codec import ImageCodec, image_abi_section
from .vision import VisionTower
from .vq import Codebook, fit_codebook

__all__ = [
    "ImageCodec",
    "VisionTower",
    "Codebook",
    "fit_codebook",
    "image_abi_section",
    "Layout",
    "View",
    "is_panorama",
    "load_image",
    "render_plain",
    "render_view",
    "render_views",
    "view_geometry",
]
