"""Pictures from an explanation: overlays, thresholded regions, plotly heatmaps, PNG bytes.

Everything here is cheap and model-free, so moving a slider only re-renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import plotly.graph_objects as go

from core.brain_mask import mask_outline

COLORMAPS = {
    "Jet": cv2.COLORMAP_JET,
    "Inferno": cv2.COLORMAP_INFERNO,
    "Viridis": cv2.COLORMAP_VIRIDIS,
    "Turbo": cv2.COLORMAP_TURBO,
    "Cividis": cv2.COLORMAP_CIVIDIS,
}
COLOUR_BLIND_SAFE = ("Viridis", "Cividis", "Inferno")  # perceptually uniform, readable with colour-vision deficits
PLOTLY_SCALES = {"Jet": "Jet", "Inferno": "Inferno", "Viridis": "Viridis", "Turbo": "Turbo", "Cividis": "Cividis"}
OUTLINE_RGB = (0, 255, 0)
MASK_RGB = (0, 200, 255)
REGION_RGB = (255, 255, 255)  # the thresholded heatmap where the green outline is the tumour's


@dataclass(frozen=True)
class Region:
    """Pixels at or above a threshold of the heatmap, with their outline."""

    mask: np.ndarray
    contours: tuple[np.ndarray, ...]
    area_fraction: float


@dataclass(frozen=True)
class Panels:
    """The pictures of one explanation, uint8 RGB at the slice's resolution."""

    original: np.ndarray  # the slice, with the head outline when one was given
    heatmap: np.ndarray  # the heatmap alone, colour-mapped
    overlay: np.ndarray  # the heatmap over the slice, with the outlines asked for
    region: Region | None  # heatmap >= threshold, when a threshold was given


def explanation_panels(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    threshold: float | None = None,
    opacity: float = 0.4,
    colormap: str = "Jet",
    head_mask: np.ndarray | None = None,
    tumour_mask: np.ndarray | None = None,
    region_rgb: tuple[int, int, int] = OUTLINE_RGB,
) -> Panels:
    """Original, heatmap and overlay of one slice: the single place that turns threshold,
    opacity, colour map and outlines into pictures (pages, Gallery, CLI, API).

    Args:
        image: 2-D slice in [0, 1]. heatmap: same shape, in [0, 1].
        threshold: outline the region heatmap >= threshold on the overlay (None: no outline).
        head_mask: drawn on the original (cyan). tumour_mask: drawn on the overlay (green on black).
        region_rgb: colour of the thresholded region's outline.
    """
    original = np.uint8(grey_to_rgb(image) * 255)
    if head_mask is not None:
        original = draw_contours(original, mask_outline(head_mask), MASK_RGB)
    blended = overlay(image, heatmap, opacity, colormap)
    region = None
    if threshold is not None:
        region = threshold_region(heatmap, threshold)
        blended = draw_contours(blended, region.contours, region_rgb)
    if tumour_mask is not None:
        blended = draw_contours(blended, mask_outline(tumour_mask), OUTLINE_RGB, halo=True)
    return Panels(original, heatmap_rgb(heatmap, colormap), blended, region)


def colour_bar(colormap: str = "Jet", width: int = 512, height: int = 16) -> np.ndarray:
    """The colour map from 0 (left) to 1 (right), uint8 RGB, to show beside a heatmap."""
    ramp = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    return heatmap_rgb(ramp, colormap)


def grey_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)


def heatmap_rgb(heatmap: np.ndarray, colormap: str = "Jet") -> np.ndarray:
    """The heatmap alone, colour-mapped, as uint8 RGB."""
    coloured = cv2.applyColorMap(np.uint8(255 * np.clip(heatmap, 0, 1)), COLORMAPS[colormap])
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4, colormap: str = "Jet") -> np.ndarray:
    """Heatmap blended over the grey slice, uint8 RGB; opacity is the heatmap's weight.

    pytorch-grad-cam's show_cam_on_image divides the blend by its maximum, which brightens
    dark slices as opacity falls; cv2.addWeighted keeps the slice's own grey levels.
    """
    grey = np.uint8(np.round(np.clip(image, 0, 1) * 255))
    return cv2.addWeighted(
        heatmap_rgb(heatmap, colormap), opacity, cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), 1.0 - opacity, 0
    )


def threshold_region(heatmap: np.ndarray, threshold: float) -> Region:
    """Pixels with heatmap >= threshold (relative to this heatmap's own maximum of 1)."""
    mask = heatmap >= threshold if heatmap.max() > 0 else np.zeros(heatmap.shape, dtype=bool)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return Region(mask, tuple(contours), float(mask.mean()))


def draw_contours(
    rgb: np.ndarray, contours, colour=OUTLINE_RGB, thickness: int | None = None, halo: bool = False
) -> np.ndarray:
    """A copy of `rgb` with the contours drawn; line width scales with the image. With `halo`,
    a black line under the colour keeps it visible on any colour map (green on jet's green)."""
    canvas = np.ascontiguousarray(rgb.copy())
    width = thickness or max(2, min(rgb.shape[:2]) // 200)
    if halo:
        cv2.drawContours(canvas, list(contours), -1, (0, 0, 0), width + 2)
    cv2.drawContours(canvas, list(contours), -1, colour, width)
    return canvas


def heatmap_figure(heatmap: np.ndarray, colormap: str = "Jet", max_side: int = 256) -> go.Figure:
    """Interactive heatmap (hover shows the value) with a colour bar; downsampled for speed."""
    return _map_figure(heatmap, PLOTLY_SCALES[colormap], (0, 1), "relative<br>importance", "importance", max_side)


def _map_figure(values: np.ndarray, scale: str, limits, bar_title: str, hover: str, max_side: int) -> go.Figure:
    step = max(1, int(np.ceil(max(values.shape) / max_side)))
    shown = values[::step, ::step]
    figure = go.Figure(
        go.Heatmap(
            z=shown,
            x=np.arange(shown.shape[1]) * step,
            y=np.arange(shown.shape[0]) * step,
            colorscale=scale,
            zmin=limits[0],
            zmax=limits[1],
            colorbar={"title": {"text": bar_title, "side": "right"}},  # clear of the toolbar
            hovertemplate=f"x %{{x}}, y %{{y}}<br>{hover} %{{z:.2f}}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", scaleanchor="x", visible=False)
    figure.update_xaxes(visible=False)
    figure.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=350)  # top: room for the toolbar
    return figure


def probability_figure(label_names, probabilities, highlight: int) -> go.Figure:
    colours = ["#d62728" if i == highlight else "#7f7f7f" for i in range(len(label_names))]
    figure = go.Figure(
        go.Bar(
            x=[float(p) for p in probabilities],
            y=list(label_names),
            orientation="h",
            marker_color=colours,
            text=[f"{p:.1%}" for p in probabilities],
            textposition="auto",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    figure.update_xaxes(range=[0, 1], tickformat=".0%")
    figure.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=200)  # top: room for the toolbar
    return figure


def png_bytes(picture: np.ndarray) -> bytes:
    """Encode a uint8 RGB (or grey) array as PNG bytes in memory."""
    if picture.dtype != np.uint8:
        picture = np.uint8(np.clip(picture, 0, 1) * 255)
    if picture.ndim == 3:
        picture = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def difference_figure(difference: np.ndarray, names: tuple[str, str], max_side: int = 256) -> go.Figure:
    """Diverging map of heatmap A minus heatmap B (red: A looks more, blue: B looks more)."""
    return _map_figure(difference, "RdBu_r", (-1, 1), f"{names[0]} minus {names[1]}", "difference", max_side)


def faithfulness_figure(check) -> go.Figure:
    """Deletion and insertion curves of the heatmap beside the random maps' (core.faithfulness)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=(
        f"Deletion (lower is better): AUC {check.deletion_auc:.2f} vs {check.random_deletion_auc:.2f}",
        f"Insertion (higher is better): AUC {check.insertion_auc:.2f} vs {check.random_insertion_auc:.2f}",
    ))  # fmt: skip
    x = [100 * f for f in check.fractions]
    for column, (ours, random) in enumerate(((check.deletion, check.random_deletion),
                                             (check.insertion, check.random_insertion)), start=1):  # fmt: skip
        figure.add_trace(go.Scatter(x=x, y=list(ours), name="heatmap", line={"color": "#d62728"},
                                    showlegend=column == 1), row=1, col=column)  # fmt: skip
        figure.add_trace(go.Scatter(x=x, y=list(random), name="random maps", line={"color": "#7f7f7f", "dash": "dash"},
                                    showlegend=column == 1), row=1, col=column)  # fmt: skip
    figure.update_xaxes(title_text="% of the head's pixels, hottest first", range=[0, 100])
    figure.update_yaxes(title_text=f"probability of '{check.target_label}'", range=[0, 1], col=1)
    figure.update_yaxes(range=[0, 1], col=2)
    figure.update_layout(margin={"l": 0, "r": 0, "t": 40, "b": 0}, height=320)
    return figure


def sanity_figure(check) -> go.Figure:
    """Similarity of the heatmap to the original as layers are randomised, top down (core.sanity)."""
    steps = [f"+ {group}" for group in check.groups]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=steps, y=list(check.spearman), name="rank correlation", mode="lines+markers"))
    figure.add_trace(go.Scatter(x=steps, y=list(check.ssim), name="SSIM", mode="lines+markers",
                                line={"dash": "dash"}))  # fmt: skip
    figure.update_yaxes(range=[-0.2, 1.05], title_text="similarity to the original heatmap")
    figure.update_xaxes(title_text="layers randomised so far (from the output)")
    figure.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=320)
    return figure


CLASS_COLOURS = ("#d62728", "#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e")  # tumours bright, notumor grey


def volume_figure(scores, current: int | None = None) -> go.Figure:
    """Class probabilities along a volume (core.volume.VolumeScores): one line per class,
    a dashed line at the slice shown, open circles on slices unlike the training images.
    Clicking a point selects its slice."""
    figure = go.Figure()
    scored = [s for s in scores.slices if s.probabilities is not None]
    x = [s.index for s in scored]
    for position, name in enumerate(scores.label_names):
        figure.add_trace(go.Scatter(
            x=x, y=[s.probabilities[position] for s in scored], name=name, mode="lines+markers",
            line={"color": CLASS_COLOURS[position % len(CLASS_COLOURS)]},
            marker={"size": 6, "symbol": ["circle-open" if s.unfamiliar else "circle" for s in scored]},
            hovertemplate=f"slice %{{x}}: {name} %{{y:.1%}}<extra></extra>",
        ))  # fmt: skip
    if current is not None:
        figure.add_vline(x=current, line_dash="dash", line_color="black", annotation_text=f"slice {current}")
    figure.update_yaxes(range=[0, 1], tickformat=".0%", title="probability")
    figure.update_xaxes(title="slice", range=[-1, len(scores.slices)])  # every slice, as the slider has
    figure.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, height=260, clickmode="event+select",
                         legend={"orientation": "h", "y": 1.15})  # fmt: skip
    return figure
