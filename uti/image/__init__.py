"""Images: 360° panoramas as E2P views (layout, rendering, loading, preview) and their image codec."""

from .e2p import is_panorama, render_plain, render_view, render_views, view_geometry
from .layout import Layout, View
from .load import load_image

__all__ = [
    "Layout",
    "View",
    "is_panorama",
    "load_image",
    "render_plain",
    "render_view",
    "render_views",
    "view_geometry",
]
