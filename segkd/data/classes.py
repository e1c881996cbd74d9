"""Class names and colours of the public semantic data sets segkd reads by layout.

Palettes are flat ``[r0, g0, b0, r1, ...]`` lists of 256 colours (train id → colour), the form
Pillow's ``Image.putpalette`` takes; ids without a colour (255 = ignore) are black.
"""
from __future__ import annotations

# The 19 Cityscapes evaluation classes, in train-id order, with their labelIds and colours
# (cityscapesScripts' labels.py).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_LABEL_IDS: tuple[int, ...] = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
)  # fmt: skip
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# ADE20K SceneParsing's 150 classes (objectInfo150), in the order of labels 1..150.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

# CamVid as SegNet ships it (11 classes; label 11 is "Unlabelled"), with SegNet's colours.
CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
CAMVID_VOID = 11
CAMVID_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


def flat_palette(colors: tuple[tuple[int, int, int], ...]) -> list[int]:
    """256 colours, ``colors`` first and black after."""
    flat = [value for color in colors for value in color]
    return flat + [0] * (768 - len(flat))


def voc_palette(num_colors: int = 256) -> list[int]:
    """The VOC colour map as a flat ``[r0, g0, b0, r1, ...]`` list: bit j of the class index
    goes to bit 7 − ⌊j/3⌋ of the red, green or blue channel in turn. Used where a data set
    defines no colours of its own."""
    palette: list[int] = []
    for index in range(num_colors):
        rgb = [0, 0, 0]
        for j in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * j + channel)) & 1) << (7 - j)
        palette.extend(rgb)
    return palette


def layout_palette(layout: str) -> list[int]:
    """The palette of a layout's train ids (ADE20K and the others: the VOC bit pattern)."""
    if layout == "cityscapes":
        return flat_palette(CITYSCAPES_COLORS)
    if layout == "camvid":
        return flat_palette(CAMVID_COLORS)
    return voc_palette()
