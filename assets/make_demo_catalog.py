"""Generate the project's own demo product catalogue (``catalog.jsonl`` + ``images/<id>.jpg``).

The demo catalogue exists so the app, tests and benchmarks have realistic-looking product data without
ever shipping third-party or retailer photos. Every image is drawn here with PIL, so the catalogue is
covered by the project's own licence and can be regenerated at any time:

    python assets/make_demo_catalog.py [--out DIR]      # default: assets/demo_catalog

Output is deterministic (fixed seeds, fixed JPEG settings, no timestamps), so running the script twice
gives byte-identical files and a test can check that the committed catalogue is up to date.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
Point = tuple[float, float]
Box = tuple[float, float, float, float]
# A shape draws itself onto a drawing surface with a given fill; shapes are combined into masks so that
# several primitives (e.g. a rectangle plus an ellipse) can form one part with a single outline.
Shape = Callable[[ImageDraw.ImageDraw, int | RGB], None]

DEFAULT_OUT = Path(__file__).resolve().parent / "demo_catalog"
IMAGE_SIZE = 256
SCALE = 2  # draw at 2x and downsample with LANCZOS: ImageDraw itself does not anti-alias
CANVAS = IMAGE_SIZE * SCALE
JPEG_QUALITY = 85
OUTLINE_PX = 6  # at 2x, i.e. 3 px in the final image
SEED = 20240501

PALETTE: dict[str, RGB] = {
    "red": (200, 38, 46),
    "navy": (31, 47, 98),
    "green": (46, 139, 72),
    "white": (243, 243, 240),
    "yellow": (242, 196, 38),
    "teal": (28, 140, 143),
    "black": (38, 38, 42),
    "orange": (236, 118, 30),
    "grey": (134, 136, 142),
    "brown": (122, 78, 48),
    "blue": (42, 104, 204),
    "beige": (214, 194, 158),
    "pink": (236, 128, 170),
    "purple": (118, 68, 162),
    "tan": (190, 136, 82),
    "gum": (196, 150, 98),
}


@dataclass(frozen=True)
class Product:
    """One catalogue entry; ``detail`` and ``accent`` drive the small visual difference between siblings."""

    category: str
    name: str
    brand: str
    color: str
    price: float
    kind: str  # search-style noun phrase, e.g. "cotton crew-neck T-shirt"
    description: str
    detail: str = "plain"
    accent: str = "white"


CATEGORY_CODES: dict[str, str] = {
    "T-shirts": "TSH",
    "Mugs": "MUG",
    "Sneakers": "SNK",
    "Backpacks": "BPK",
    "Caps": "CAP",
    "Umbrellas": "UMB",
    "Watches": "WCH",
    "Headphones": "HPH",
}

# One block per product reads better than the formatter's one-argument-per-line layout.
# fmt: off
PRODUCTS: tuple[Product, ...] = (
    # T-shirts
    Product("T-shirts", "Classic Crew Tee", "Northwind", "red", 19.95, "cotton crew-neck T-shirt",
            "A soft red crew-neck T-shirt in 100% organic cotton jersey. Regular fit with a ribbed collar."),
    Product("T-shirts", "Breton Stripe Tee", "Quillfield", "navy", 24.90, "striped cotton T-shirt",
            "Navy cotton T-shirt with three white chest stripes, inspired by classic sailor shirts.",
            detail="stripes"),
    Product("T-shirts", "Everyday Pocket Tee", "Tolvane", "green", 22.50, "cotton pocket T-shirt",
            "Forest green T-shirt with a chest pocket, cut from heavyweight combed cotton.",
            detail="pocket"),
    Product("T-shirts", "Circle Logo Tee", "Sorrelmark", "white", 17.99, "cotton logo T-shirt",
            "Crisp white cotton-blend T-shirt with a printed red circle logo on the chest.",
            detail="logo", accent="red"),
    # Mugs
    Product("Mugs", "Morning Mug", "Okkerlund", "yellow", 12.90, "ceramic coffee mug",
            "Sunny yellow glazed ceramic mug holding 350 ml. Dishwasher and microwave safe."),
    Product("Mugs", "Enamel Camp Mug", "Brambleway", "teal", 14.50, "enamel camping mug",
            "Lightweight teal enamel steel mug with a dark rolled rim, made for campfires and desks alike.",
            detail="rim", accent="black"),
    Product("Mugs", "Banded Stoneware Mug", "Fennick", "white", 15.95, "stoneware mug",
            "White stoneware mug with a hand-painted navy band. Holds 300 ml of tea or coffee.",
            detail="band", accent="navy"),
    Product("Mugs", "Night Shift Mug", "Cobaltine", "black", 13.50, "ceramic logo mug",
            "Matte black ceramic mug with a white circle logo and a comfortable loop handle.",
            detail="logo"),
    # Sneakers
    Product("Sneakers", "Court Classic", "Wrenhollow", "white", 89.95, "leather court sneaker",
            "Clean white leather low-top sneaker with a green heel tab and a gum rubber sole.",
            detail="heel_tab", accent="green"),
    Product("Sneakers", "Trail Sprint", "Drumlin & Co", "orange", 109.00, "mesh running sneaker",
            "Bright orange breathable mesh running shoe with a white side stripe and cushioned sole.",
            detail="side_stripe"),
    Product("Sneakers", "Canvas Low", "Northwind", "black", 54.90, "canvas sneaker",
            "Black cotton canvas low-top sneaker with a white rubber toe cap. A timeless everyday shoe.",
            detail="toe_cap"),
    Product("Sneakers", "City Knit", "Tolvane", "grey", 79.50, "knit sneaker",
            "Grey recycled-knit sneaker with a navy logo badge and a light foam sole.",
            detail="logo", accent="navy"),
    # Backpacks
    Product("Backpacks", "Daypack 20", "Okkerlund", "navy", 59.90, "polyester daypack backpack",
            "Navy 20-litre daypack in recycled polyester with a zipped front pocket and padded straps."),
    Product("Backpacks", "Commuter Pack", "Brambleway", "yellow", 79.00, "waterproof commuter backpack",
            "Yellow waterproof tarpaulin backpack with a reflective grey stripe for dark evening rides.",
            detail="stripe", accent="grey"),
    Product("Backpacks", "Campus Pack", "Fennick", "red", 44.95, "nylon school backpack",
            "Red nylon backpack with a front pocket and a stitched white logo patch. Fits a 15-inch laptop.",
            detail="logo"),
    Product("Backpacks", "Heritage Rucksack", "Quillfield", "brown", 119.00, "waxed canvas rucksack",
            "Brown waxed-canvas rucksack with tan leather buckle straps and a roomy front pocket.",
            detail="buckles", accent="tan"),
    # Caps
    Product("Caps", "Six-Panel Cap", "Sorrelmark", "black", 22.00, "cotton twill baseball cap",
            "Black cotton twill six-panel baseball cap with an adjustable strap at the back."),
    Product("Caps", "Contrast Brim Cap", "Wrenhollow", "blue", 24.50, "two-tone baseball cap",
            "Blue cotton baseball cap with a contrasting white brim and a curved peak.",
            detail="brim"),
    Product("Caps", "Trail Logo Cap", "Drumlin & Co", "green", 19.90, "logo baseball cap",
            "Green polyester sports cap with a round yellow logo patch on the front panel.",
            detail="logo", accent="yellow"),
    Product("Caps", "Band Cap", "Cobaltine", "beige", 21.50, "canvas baseball cap",
            "Beige washed-canvas cap with a brown band around the crown for a vintage look.",
            detail="stripe", accent="brown"),
    # Umbrellas
    Product("Umbrellas", "Storm Compact Umbrella", "Northwind", "black", 29.95, "compact folding umbrella",
            "Black wind-resistant folding umbrella with a polyester canopy and a curved wooden handle."),
    Product("Umbrellas", "Fairway Golf Umbrella", "Quillfield", "red", 39.90, "large golf umbrella",
            "Large red and white panelled golf umbrella in pongee fabric with a fibreglass frame.",
            detail="panels"),
    Product("Umbrellas", "Polka Umbrella", "Tolvane", "navy", 27.50, "polka dot umbrella",
            "Navy polyester umbrella printed with white polka dots. Automatic open button.",
            detail="dots"),
    Product("Umbrellas", "Sunny Day Umbrella", "Okkerlund", "yellow", 24.95, "stick umbrella",
            "Yellow stick umbrella with a navy trim along the canopy edge and a J-hook handle.",
            detail="trim", accent="navy"),
    # Watches
    Product("Watches", "Field Watch 40", "Fennick", "brown", 149.00, "leather strap field watch",
            "Field watch with a cream dial, steel case and a brown genuine leather strap.",
            detail="field"),
    Product("Watches", "Diver 200", "Cobaltine", "blue", 189.00, "silicone strap dive watch",
            "Water-resistant dive watch with a dark dial, blue rotating bezel and blue silicone strap.",
            detail="diver", accent="blue"),
    Product("Watches", "Minimal 38", "Brambleway", "black", 129.00, "minimalist wrist watch",
            "Minimalist watch with a clean white dial, slim steel case and black vegan leather strap.",
            detail="minimal"),
    Product("Watches", "Chrono Sport", "Wrenhollow", "orange", 219.00, "sport chronograph watch",
            "Sport chronograph with two sub-dials on a black face and an orange rubber strap.",
            detail="chrono"),
    # Headphones
    Product("Headphones", "Studio Over-Ear", "Drumlin & Co", "black", 129.00, "over-ear studio headphones",
            "Black closed-back over-ear headphones with memory-foam cushions and a steel headband."),
    Product("Headphones", "Travel ANC", "Sorrelmark", "white", 199.00, "noise-cancelling headphones",
            "White wireless noise-cancelling headphones with a grey logo on each ear cup and plastic shell.",
            detail="logo", accent="grey"),
    Product("Headphones", "Kids Volume-Safe", "Quillfield", "purple", 34.90, "kids headphones",
            "Purple lightweight kids headphones in soft plastic with a pink stripe along the headband.",
            detail="stripe", accent="pink"),
    Product("Headphones", "Arena Gaming Headset", "Tolvane", "green", 89.00, "gaming headset",
            "Green gaming headset with a flexible boom microphone and breathable fabric cushions.",
            detail="mic"),
)
# fmt: on


# --------------------------------------------------------------------------------------------------
# Colour helpers
# --------------------------------------------------------------------------------------------------


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend ``a -> b``; used for every shade/tint so colours stay consistent across drawings."""
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def darker(c: RGB, t: float) -> RGB:
    return mix(c, (0, 0, 0), t)


def lighter(c: RGB, t: float) -> RGB:
    return mix(c, (255, 255, 255), t)


def luminance(c: RGB) -> float:
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255


def outline_of(c: RGB) -> RGB:
    """Outline colour: clearly darker than the fill, but light fills get a mid grey so they don't look inked."""
    return darker(c, 0.45) if luminance(c) < 0.85 else (150, 150, 150)


# --------------------------------------------------------------------------------------------------
# Shapes (all coordinates are on the 2x canvas)
# --------------------------------------------------------------------------------------------------


def polygon(points: Sequence[Point]) -> Shape:
    pts = [tuple(p) for p in points]
    return lambda d, fill: d.polygon(pts, fill=fill)


def ellipse(box: Box) -> Shape:
    return lambda d, fill: d.ellipse(box, fill=fill)


def circle(center: Point, radius: float) -> Shape:
    cx, cy = center
    return ellipse((cx - radius, cy - radius, cx + radius, cy + radius))


def rrect(box: Box, radius: float) -> Shape:
    return lambda d, fill: d.rounded_rectangle(box, radius=radius, fill=fill)


def pieslice(box: Box, start: float, end: float) -> Shape:
    return lambda d, fill: d.pieslice(box, start, end, fill=fill)


def arc_points(center: Point, radius: float, start: float, end: float, steps: int = 48) -> list[Point]:
    """Points on a circular arc; angles in degrees, 0 = +x, growing clockwise (y points down)."""
    cx, cy = center
    out = []
    for i in range(steps + 1):
        a = math.radians(start + (end - start) * i / steps)
        out.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return out


def ring(center: Point, r_outer: float, r_inner: float, start: float, end: float) -> Shape:
    """A thick arc as one polygon, so handles and headbands get a proper outline on both edges."""
    return polygon(arc_points(center, r_outer, start, end) + arc_points(center, r_inner, end, start))


def bezier(p0: Point, p1: Point, p2: Point, steps: int = 24) -> list[Point]:
    """Quadratic Bezier samples, for gently curved edges such as a cap's brim."""
    out = []
    for i in range(steps + 1):
        t = i / steps
        u = 1 - t
        out.append(
            (u * u * p0[0] + 2 * u * t * p1[0] + t * t * p2[0], u * u * p0[1] + 2 * u * t * p1[1] + t * t * p2[1])
        )
    return out


def polar(center: Point, radius: float, degrees: float) -> Point:
    """Point at ``radius`` from ``center``; 0 degrees is 12 o'clock, clockwise like a watch."""
    a = math.radians(degrees - 90)
    return (center[0] + radius * math.cos(a), center[1] + radius * math.sin(a))


def thick_line(points: Sequence[Point], width: float) -> Shape:
    pts = [tuple(p) for p in points]
    return lambda d, fill: d.line(pts, fill=fill, width=round(width), joint="curve")


# --------------------------------------------------------------------------------------------------
# Painter: fills parts with a soft gradient, outlines them, adds highlights
# --------------------------------------------------------------------------------------------------


class Painter:
    """Draws layered "parts" onto a 2x canvas so every product gets the same photo-icon look.

    Each part is rasterised to a mask first; that lets one routine apply a top-left-lit gradient, an
    outline along the mask edge (also for unions of primitives) and clipping of details to their parent.
    """

    def __init__(self, background: RGB) -> None:
        self.background = background
        top = lighter(background, 0.35)
        self.img = Image.composite(
            Image.new("RGB", (CANVAS, CANVAS), background),
            Image.new("RGB", (CANVAS, CANVAS), top),
            Image.linear_gradient("L").resize((CANVAS, CANVAS)),
        )
        self.draw = ImageDraw.Draw(self.img)

    @staticmethod
    def mask(*shapes: Shape, clip: Image.Image | None = None) -> Image.Image:
        m = Image.new("L", (CANVAS, CANVAS), 0)
        d = ImageDraw.Draw(m)
        for shape in shapes:
            shape(d, 255)
        return ImageChops.multiply(m, clip) if clip is not None else m

    def shadow(self, box: Box, strength: float = 0.22) -> None:
        """Soft contact shadow under the product, which makes the drawing read as a photographed object."""
        m = self.mask(ellipse(box)).filter(ImageFilter.GaussianBlur(14))
        m = m.point(lambda v: round(v * strength))
        self.img.paste(darker(self.background, 0.6), (0, 0), m)

    def part(
        self, *shapes: Shape, color: RGB, clip: Image.Image | None = None, outline: bool = True, shading: float = 0.22
    ) -> Image.Image:
        """Fill the union of ``shapes`` with a lit gradient of ``color``; returns its mask for clipping."""
        m = self.mask(*shapes, clip=clip)
        bbox = m.getbbox()
        if bbox is None:
            return m
        w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
        gradient = Image.linear_gradient("L")  # 0 at the top, 255 at the bottom
        vertical = gradient.resize((w, h))
        horizontal = gradient.transpose(Image.Transpose.ROTATE_90).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        horizontal = horizontal.resize((w, h))
        ramp = Image.blend(vertical, horizontal, 0.4)
        fill = Image.composite(
            Image.new("RGB", (w, h), darker(color, shading)),
            Image.new("RGB", (w, h), lighter(color, shading * 0.8)),
            ramp,
        )
        self.img.paste(fill, bbox[:2], m.crop(bbox))
        if outline:
            self._outline(m, bbox, outline_of(color))
        return m

    def _outline(self, m: Image.Image, bbox: tuple[int, int, int, int], color: RGB) -> None:
        pad = OUTLINE_PX + 2
        box = (max(bbox[0] - pad, 0), max(bbox[1] - pad, 0), min(bbox[2] + pad, CANVAS), min(bbox[3] + pad, CANVAS))
        region = m.crop(box)
        eroded = region.filter(ImageFilter.MinFilter(2 * OUTLINE_PX + 1))
        self.img.paste(color, box[:2], ImageChops.subtract(region, eroded))

    def highlight(self, *shapes: Shape, clip: Image.Image, alpha: float = 0.3, blur: float = 10) -> None:
        """Soft white sheen inside a part (clipped to it), suggesting a light source at the top left."""
        m = self.mask(*shapes).filter(ImageFilter.GaussianBlur(blur))
        m = ImageChops.multiply(m, clip).point(lambda v: round(v * alpha))
        self.img.paste((255, 255, 255), (0, 0), m)

    def line(self, points: Sequence[Point], color: RGB, width: float, clip: Image.Image | None = None) -> None:
        """Seams, laces and hands: plain strokes, optionally clipped to a part."""
        if clip is None:
            self.draw.line([tuple(p) for p in points], fill=color, width=round(width), joint="curve")
            return
        m = self.mask(thick_line(points, width), clip=clip)
        self.img.paste(color, (0, 0), m)

    def finish(self) -> Image.Image:
        return self.img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------------------------------
# Product drawings, one function per category
# --------------------------------------------------------------------------------------------------


def draw_tshirt(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    neck = [(314 - 116 * t, 96 + 40 * math.sin(math.pi * t)) for t in (i / 16 for i in range(17))]
    body = [
        (198, 96),
        (140, 110),
        (64, 178),
        (112, 248),
        (158, 222),
        (156, 432),
        (356, 432),
        (354, 222),
        (400, 248),
        (448, 178),
        (372, 110),
        *neck,
    ]
    p.shadow((130, 420, 382, 456))
    shirt = p.part(polygon(body), color=color)
    p.highlight(ellipse((150, 110, 300, 340)), clip=shirt, alpha=0.22, blur=24)
    seam = outline_of(color)
    p.line(neck, seam, 12, clip=shirt)
    p.line([(146, 116), (152, 170), (158, 224)], seam, 3, clip=shirt)
    p.line([(366, 116), (360, 170), (354, 224)], seam, 3, clip=shirt)
    p.line([(156, 414), (356, 414)], seam, 3, clip=shirt)
    if detail == "stripes":
        for y in (236, 276, 316):
            p.part(rrect((100, y, 420, y + 20), 0), color=accent, clip=shirt, outline=False, shading=0.08)
    elif detail == "pocket":
        p.part(rrect((286, 176, 338, 238), 6), color=darker(color, 0.08))
    elif detail == "logo":
        p.part(circle((256, 220), 36), color=accent)


def draw_mug(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    p.shadow((130, 404, 420, 452))
    p.part(ring((342, 292), 78, 46, -80, 80), color=color)
    body = p.part(rrect((146, 168, 346, 430), 28), ellipse((146, 146, 346, 194)), color=color)
    p.part(
        ellipse((162, 154, 330, 186)),
        color=darker(color, 0.45) if luminance(color) > 0.2 else (20, 20, 22),
        outline=False,
        shading=0.1,
    )
    if detail == "rim":
        p.draw.ellipse((146, 146, 346, 194), outline=accent, width=10)
        p.line([(160, 424), (332, 424)], accent, 10, clip=body)
    elif detail == "band":
        p.part(rrect((140, 262, 352, 306), 0), color=accent, clip=body, outline=False, shading=0.12)
    elif detail == "logo":
        p.part(circle((238, 292), 44), color=accent)
        p.part(circle((238, 292), 18), color=color, outline=False)
    p.highlight(rrect((170, 206, 200, 396), 14), clip=body, alpha=0.45, blur=6)


def draw_sneaker(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    sole_color = PALETTE["gum"] if luminance(color) > 0.85 else (238, 236, 228)
    p.shadow((70, 380, 460, 420))
    upper_pts = [
        (84, 356),
        (74, 300),
        (80, 252),
        (98, 222),
        (150, 212),
        (200, 232),
        (244, 208),
        (252, 176),
        (286, 172),
        (300, 200),
        (340, 246),
        (398, 276),
        (440, 300),
        (458, 330),
        (458, 356),
    ]
    upper = p.part(polygon(upper_pts), color=color)
    p.line(upper_pts[2:7], darker(color, 0.3), 34, clip=upper)  # padded collar
    p.highlight(ellipse((110, 220, 300, 300)), clip=upper, alpha=0.25, blur=18)
    if detail == "heel_tab":
        p.part(polygon([(60, 250), (126, 250), (118, 360), (60, 360)]), color=accent, clip=upper)
    elif detail == "side_stripe":
        p.part(polygon([(150, 340), (186, 340), (318, 252), (282, 252)]), color=accent, clip=upper)
    elif detail == "toe_cap":
        p.part(ellipse((384, 270, 500, 400)), color=accent, clip=upper)
    elif detail == "logo":
        p.part(circle((176, 300), 26), color=accent)
    lace = accent if luminance(color) > 0.85 else (245, 245, 240)
    for i in range(4):
        t = i / 3
        x, y = 232 + 80 * t, 222 + 44 * t
        p.line([(x - 18, y - 12), (x + 18, y + 12)], lace, 8)
        p.line([(x - 18, y + 10), (x + 16, y - 14)], lace, 8)
    p.part(rrect((68, 348, 470, 396), 22), color=sole_color)
    p.line([(80, 372), (458, 372)], darker(sole_color, 0.2), 3)


def draw_backpack(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    strap = darker(color, 0.25)
    p.shadow((130, 420, 382, 460))
    p.part(rrect((118, 150, 162, 392), 18), color=strap)
    p.part(rrect((350, 150, 394, 392), 18), color=strap)
    p.part(ring((256, 118), 42, 26, 180, 360), color=strap)
    body = p.part(rrect((146, 108, 366, 440), 72), color=color)
    p.highlight(ellipse((160, 110, 300, 300)), clip=body, alpha=0.25, blur=20)
    seam = outline_of(color)
    p.draw.arc((170, 124, 342, 330), 200, 340, fill=seam, width=5)
    if detail == "stripe":
        p.part(rrect((238, 100, 274, 300), 0), color=accent, clip=body, shading=0.1)
    if detail == "buckles":
        for x in (196, 292):
            p.part(rrect((x, 130, x + 24, 330), 6), color=accent)
            p.part(rrect((x - 5, 290, x + 29, 318), 4), color=(170, 170, 174), shading=0.3)
    pocket = p.part(rrect((176, 290, 336, 420), 32), color=darker(color, 0.06))
    p.line([(200, 310), (312, 310)], seam, 5, clip=pocket)
    p.part(rrect((296, 304, 306, 334), 3), color=(180, 180, 184), shading=0.3)
    if detail == "logo":
        p.part(rrect((226, 196, 286, 246), 8), color=accent)


def draw_cap(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    brim_color = accent if detail == "brim" else darker(color, 0.1)
    p.shadow((110, 290, 450, 340))
    p.part(pieslice((100, 250, 380, 292), 0, 180), color=darker(color, 0.35), outline=False)  # underside
    dome = p.part(pieslice((100, 130, 380, 410), 180, 360), color=color)
    p.highlight(ellipse((120, 120, 260, 250)), clip=dome, alpha=0.28, blur=18)
    seam = outline_of(color)
    p.line(arc_points((240, 270), 140, 230, 300, 24), seam, 3, clip=dome)
    p.line([(240, 130), (240, 270)], seam, 3, clip=dome)
    if detail == "stripe":
        p.part(rrect((90, 236, 390, 262), 0), color=accent, clip=dome, outline=False, shading=0.1)
    elif detail == "logo":
        p.part(circle((300, 208), 30), color=accent)
    p.part(circle((240, 128), 14), color=darker(color, 0.1))
    top_edge = bezier((246, 266), (370, 246), (474, 298))
    bottom_edge = bezier((474, 298), (380, 330), (256, 292))
    p.part(polygon(top_edge + bottom_edge), color=brim_color)


def draw_umbrella(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    cx, cy, r = 256, 284, 180
    junctions = [cx - r + 2 * r * k / 4 for k in range(5)]
    scallops: list[Point] = []
    for k in range(4, 0, -1):
        a, b = junctions[k], junctions[k - 1]
        scallops += [(a + (b - a) * t, cy - 24 * math.sin(math.pi * t)) for t in (i / 12 for i in range(12))]
    canopy_pts = arc_points((cx, cy), r, 180, 360) + scallops
    handle_color = (92, 64, 44)
    p.shadow((150, 430, 330, 462), strength=0.18)
    p.part(rrect((250, 270, 262, 424), 4), color=(70, 70, 74), outline=False)
    p.part(ring((232, 420), 30, 17, 0, 180), color=handle_color)
    p.part(rrect((251, 84, 261, 110), 4), color=(70, 70, 74))
    canopy = p.part(polygon(canopy_pts), color=color)

    def meridian(x_end: float) -> list[Point]:
        return [
            (cx + (x_end - cx) * math.sin(th), cy - r * math.cos(th))
            for th in (math.pi / 2 * i / 24 for i in range(25))
        ]

    if detail == "panels":
        for k in (0, 2):
            p.part(
                polygon(meridian(junctions[k]) + meridian(junctions[k + 1])[::-1]),
                color=accent,
                clip=canopy,
                outline=False,
                shading=0.12,
            )
    elif detail == "dots":
        dots = [
            circle((cx + dx + 27 * (row % 2), cy - 40 - 46 * row), 11)
            for row in range(4)
            for dx in range(-162, 163, 54)
        ]
        p.part(*dots, color=accent, clip=canopy, outline=False, shading=0.05)
    elif detail == "trim":
        band = ImageChops.subtract(canopy, ImageChops.offset(canopy, 0, -30))
        p.img.paste(accent, (0, 0), band)
    p.highlight(ellipse((110, 110, 260, 230)), clip=canopy, alpha=0.22, blur=20)
    rib = outline_of(color)
    for x in junctions[1:-1]:
        p.line(meridian(x), rib, 4, clip=canopy)
    p.draw.polygon([tuple(q) for q in canopy_pts], outline=rib, width=OUTLINE_PX)


def draw_watch(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    steel = (196, 198, 204)
    dark_face = detail in ("diver", "chrono")
    face_color = (30, 34, 44) if dark_face else (246, 242, 230)
    ink = (240, 240, 236) if dark_face else (40, 40, 44)
    c = (256, 256)
    p.shadow((160, 440, 352, 476), strength=0.15)
    strap = p.part(rrect((208, 36, 304, 476), 22), color=color)
    for y in (400, 430):
        p.part(ellipse((250, y, 262, y + 12)), color=darker(color, 0.5), outline=False, clip=strap)
    p.part(rrect((196, 140, 316, 372), 14), color=steel)  # lugs
    p.part(rrect((360, 242, 388, 270), 5), color=steel)  # crown
    p.part(circle(c, 112), color=steel)
    if detail == "diver":
        p.part(circle(c, 100), color=accent)
        for i in range(12):
            p.line([polar(c, 92, i * 30), polar(c, 84, i * 30)], (240, 240, 240), 4)
    face = p.part(circle(c, 80 if detail == "diver" else 94), color=face_color, shading=0.08)
    ticks = range(0, 12, 3) if detail == "minimal" else range(12)
    r_out = 72 if detail == "diver" else 84
    for i in ticks:
        major = i % 3 == 0
        p.line(
            [polar(c, r_out, i * 30), polar(c, r_out - (16 if major else 8), i * 30)], ink, 6 if major else 3, clip=face
        )
    if detail == "chrono":
        for dx in (-34, 34):
            p.part(circle((c[0] + dx, c[1] + 22), 20), color=(60, 64, 76), outline=False)
            p.line([(c[0] + dx, c[1] + 22), (c[0] + dx, c[1] + 8)], ink, 3)
    hour, minute = rng.uniform(0, 360), rng.uniform(0, 360)
    for angle, length, width in ((hour, 48, 9), (minute, 70, 6)):
        p.line([c, polar(c, length, angle)], ink, width)
    p.line([c, polar(c, 76, rng.uniform(0, 360))], PALETTE["red"], 3)
    p.part(circle(c, 7), color=steel, outline=False)
    p.highlight(ellipse((150, 150, 260, 250)), clip=face, alpha=0.18, blur=16)


def draw_headphones(p: Painter, color: RGB, accent: RGB, detail: str, rng: random.Random) -> None:
    steel = (190, 192, 198)
    cushion = (52, 52, 56) if luminance(color) > 0.2 else (78, 78, 84)
    p.shadow((90, 420, 422, 456))
    band = p.part(ring((256, 262), 166, 140, 180, 360), color=color)
    if detail == "stripe":
        p.part(ring((256, 262), 157, 149, 180, 360), color=accent, clip=band, outline=False, shading=0.1)
    p.part(ring((256, 262), 142, 126, 215, 325), color=cushion)  # headband padding
    for x in (92, 390):
        p.part(rrect((x, 240, x + 30, 300), 8), color=steel)
    if detail == "mic":
        p.line(arc_points((210, 330), 100, 90, 150, 20), (40, 40, 44), 12)
        p.part(ellipse((194, 414, 230, 446)), color=(40, 40, 44))
    for cup_box, pad_box in (((70, 272, 160, 414), (146, 286, 186, 400)), ((352, 272, 442, 414), (326, 286, 366, 400))):
        p.part(rrect(pad_box, 18), color=cushion)
        cup = p.part(rrect(cup_box, 36), color=color)
        p.highlight(ellipse((cup_box[0], cup_box[1], cup_box[0] + 60, cup_box[1] + 80)), clip=cup, alpha=0.25)
        if detail == "logo":
            mid = ((cup_box[0] + cup_box[2]) / 2, (cup_box[1] + cup_box[3]) / 2)
            p.part(circle(mid, 22), color=accent)
    p.highlight(ellipse((90, 80, 260, 200)), clip=band, alpha=0.25, blur=14)


Drawer = Callable[[Painter, RGB, RGB, str, random.Random], None]

DRAWERS: dict[str, Drawer] = {
    "T-shirts": draw_tshirt,
    "Mugs": draw_mug,
    "Sneakers": draw_sneaker,
    "Backpacks": draw_backpack,
    "Caps": draw_cap,
    "Umbrellas": draw_umbrella,
    "Watches": draw_watch,
    "Headphones": draw_headphones,
}


# --------------------------------------------------------------------------------------------------
# Catalogue assembly
# --------------------------------------------------------------------------------------------------


def product_id(index: int) -> str:
    return f"demo-{index + 1:03d}"


def background_for(product: Product, rng: random.Random) -> RGB:
    """Light, slightly varying studio backdrop; white products get a cooler, darker one so they stay visible."""
    base = (214, 220, 228) if luminance(PALETTE[product.color]) > 0.85 else (238, 236, 230)
    return (base[0] + rng.randint(-6, 6), base[1] + rng.randint(-6, 6), base[2] + rng.randint(-6, 6))


def render(product: Product, index: int) -> Image.Image:
    """Draw one product; the per-product seed keeps small random choices (tint, watch hands) stable."""
    rng = random.Random(SEED + index)
    painter = Painter(background_for(product, rng))
    DRAWERS[product.category](painter, PALETTE[product.color], PALETTE[product.accent], product.detail, rng)
    return painter.finish()


def catalog_row(product: Product, index: int) -> dict[str, object]:
    pid = product_id(index)
    return {
        "id": pid,
        "SKU": f"{CATEGORY_CODES[product.category]}-{product.color[:3].upper()}-{index + 1:04d}",
        "name": product.name,
        "brand": product.brand,
        "category": product.category,
        "color": product.color,
        "price": product.price,
        "description": product.description,
        "text": f"{product.color.capitalize()} {product.kind} by {product.brand}",
        "image_path": f"images/{pid}.jpg",
    }


def write_catalog(out_dir: Path, products: Sequence[Product] = PRODUCTS) -> list[dict[str, object]]:
    """Write ``catalog.jsonl`` and one JPEG per product; stale ``demo-*.jpg`` files are removed."""
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = [catalog_row(prod, i) for i, prod in enumerate(products)]
    expected = {Path(str(row["image_path"])).name for row in rows}
    for stale in sorted(images_dir.glob("demo-*.jpg")):
        if stale.name not in expected:
            stale.unlink()
    for i, (prod, row) in enumerate(zip(products, rows, strict=True)):
        # Fixed encoder settings and no metadata: the bytes depend only on the pixels.
        render(prod, i).save(
            out_dir / str(row["image_path"]), "JPEG", quality=JPEG_QUALITY, optimize=True, subsampling="4:2:0"
        )
    with open(out_dir / "catalog.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    rows = write_catalog(args.out)
    print(f"wrote {len(rows)} products to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
