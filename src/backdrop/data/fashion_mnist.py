"""Real product photos from Fashion-MNIST (Zalando Research, MIT licence), as studio packshots with exact masks.

Fashion-MNIST ships 70,000 real Zalando catalogue photos, 28x28 grey, negated (product bright on a
0 background), 10 classes; Debian's `dataset-fashion-mnist` installs the four idx files (gzipped)
under /usr/share/datasets/fashion-mnist/. Each selected product is rendered like `backdrop data synth`:

1. The 28x28 intensity is upsampled bicubically to the product's pixel size at 4x supersampling and
   thresholded: bicubic interpolation gives smooth contours instead of 28-px staircases. The 4x
   coverage is box-averaged back down; the photo is composited with that soft coverage
   (antialiased edge) and the mask is the coverage thresholded at one half: exactly 0/255 and exactly
   the product's pixels.
2. Appearance: the product's own luminance (the inverse of the negated idx values: seams, prints,
   shading of the real photo) modulates a tint (apparel palette, random hues, white-on-white,
   black-on-black), so one grey product becomes many coloured ones.
3. Studio background: light sweep gradient, vignette, a soft drop shadow that belongs to the
   background, sensor noise; JPEG quality varies per item.

Only the **train** split may be used for training. The test split renders into a drop whose
`drop.json` says `"training": false`, which `backdrop ingest` refuses, and `render_drop` refuses to
write the test split into the training drop folder at all.

``variety: broad`` (``fashion_mnist.variety``, or ``backdrop data drop``) shoots each product on a
per-item studio, light, camera, framing and product extras (:mod:`backdrop.data.synth.variety`);
``classic`` renders what it always did.

Items are chosen by a seeded permutation of the split (a larger `n` extends a smaller one) and
each is rendered from `numpy.random.default_rng([seed, source_index])` alone: deterministic,
order-independent, resumable.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from backdrop.data.synth.geometry import uniform
from backdrop.data.synth.studio import background, pick_colour, pick_size
from backdrop.data.synth.variety import (
    LOOK_FIELDS,
    LOOK_SALT,
    check_variety,
    compose,
    cut_shift,
    draw_look,
    fill_range,
    paste,
    place,
)
from backdrop.io import atomic_path, write_csv, write_json

log = logging.getLogger(__name__)

PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot")
SPLITS = {"train": "train", "test": "t10k"}  # split → idx file prefix
LABEL_FIELDS = ["stem", "split", "source_index", "class_id", "class_name", "style", "width", "height",
                "x0", "y0", "side"]
THRESHOLD = 0.12   # idx intensity (0..1) above which a pixel is product
SUPERSAMPLE = 4


@dataclass(frozen=True)
class FashionItem:
    stem: str
    split: str
    source_index: int
    class_id: int
    class_name: str
    style: str
    width: int
    height: int
    x0: int      # the 28x28 source square's place in the photo: left, top, side (px)
    y0: int
    side: int


# ---------------------------------------------------------------------------------------------- reading

def find_source(source_dir: Path | None = None) -> Path:
    """The folder with the idx files: `source_dir`, else where dpkg says the package put them."""
    candidates = [Path(source_dir)] if source_dir else []
    candidates.append(DEFAULT_DIR)
    try:
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, timeout=30)
        candidates += [Path(line).parent for line in listing.stdout.splitlines()
                       if Path(line).name.startswith("train-images-idx3-ubyte")]
    except (OSError, subprocess.SubprocessError):
        pass
    for folder in candidates:
        if any(folder.glob("train-images-idx3-ubyte*")):
            return folder
    raise FileNotFoundError(
        f"Fashion-MNIST idx files not found in {', '.join(map(str, dict.fromkeys(candidates)))}: "
        f"install the Debian package ({'apt-get install ' + PACKAGE}, or `make install`)")


def idx_path(source: Path, split: str, kind: str) -> Path:
    """`train-images-idx3-ubyte[.gz]` / `t10k-labels-idx1-ubyte[.gz]`, gzipped or not."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    name = f"{SPLITS[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for path in (source / f"{name}.gz", source / name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{source}: neither {name}.gz nor {name}")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (big-endian magic 0x0000 08 NDIM, NDIM uint32 dims, then uint8 data) as an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        if len(head) != 4 or head[:3] != b"\0\0\x08" or not 1 <= head[3] <= 4:
            raise ValueError(f"{path}: not an unsigned-byte idx file (magic {head.hex()})")
        dims = tuple(int(d) for d in np.frombuffer(fh.read(4 * head[3]), ">u4"))
        data = fh.read()
    if len(data) != math.prod(dims):
        raise ValueError(f"{path}: header says {dims} = {math.prod(dims)} bytes, file has {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(dims)


def load_split(split: str, source_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(images (N, 28, 28) uint8, labels (N,) uint8, {idx file name: sha256}) of one split."""
    source = find_source(source_dir)
    paths = [idx_path(source, split, "images"), idx_path(source, split, "labels")]
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{source}: {split} images {images.shape} and labels {labels.shape} disagree")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    return images, labels, digests


def select(total: int, n: int, seed: int) -> np.ndarray:
    """`n` source indices: a prefix of one seeded permutation, so a larger `n` extends a smaller one."""
    if not 1 <= n <= total:
        raise ValueError(f"n must be in 1..{total}, got {n}")
    return np.random.default_rng([int(seed), 0xF5]).permutation(total)[:n]


def stem_for(split: str, source_index: int) -> str:
    return f"fmnist-{split}-{source_index:05d}"


# ---------------------------------------------------------------------------------------------- rendering

def _upsample(x: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(x, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def render_product(
    pixels: np.ndarray,
    label: int,
    split: str,
    source_index: int,
    seed: int,
    *,
    min_side: int = 320,
    max_side: int = 512,
    white_share: float = 0.1,
    black_share: float = 0.05,
    variety: str = "classic",
) -> tuple[Image.Image, Image.Image, FashionItem]:
    """One 28x28 Fashion-MNIST product → (RGB studio photo, L mask in {0, 255}, metadata).

    ``variety="broad"`` shoots it on a per-item look (:mod:`backdrop.data.synth.variety`);
    ``"classic"`` renders exactly what it always did."""
    check_variety(variety)
    rng = np.random.default_rng([int(seed), int(source_index)])
    width, height = pick_size(rng, min_side, max_side)
    r = rng.random()
    style = "white_on_white" if r < white_share else "black_on_black" if r < white_share + black_share else "normal"
    if variety == "broad":
        return _render_broad(pixels, label, split, source_index, seed, rng, width, height, style)

    # ---- framing: the 28x28 square scaled to a share of the short side, offset off-centre
    side = max(16, int(round(min(width, height) * uniform(rng, 0.62, 0.92))))
    x0 = int(round((width - side) * (0.5 + uniform(rng, -0.35, 0.35))))
    y0 = int(round((height - side) * (0.5 + uniform(rng, -0.3, 0.3))))
    x0, y0 = min(max(x0, 0), width - side), min(max(y0, 0), height - side)

    # ---- coverage: bicubic upsampling at 4x, threshold, box-average → smooth antialiased contour
    x = pixels.astype(np.float32) * np.float32(1 / 255)
    coverage = _coverage(x, side)  # (side, side) in [0, 1]
    if not (coverage >= 0.5).any():
        raise ValueError(f"{stem_for(split, source_index)}: no product pixel above the threshold")

    # ---- background: studio sweep + vignette + soft shadow of the product (background only)
    top, bottom = background(rng, style)
    yy = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    xx = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    light = 1.0 - np.float32(uniform(rng, 0.04, 0.16)) * (((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.5)
    shadow = Image.new("L", (width, height), 0)
    dx, dy = int(round(uniform(rng, -0.03, 0.05) * side)), int(round(uniform(rng, 0.0, 0.05) * side))
    shadow.paste(Image.fromarray((coverage * 255).astype(np.uint8), "L"), (x0 + dx, y0 + dy))
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(1.0, uniform(rng, 0.015, 0.04) * side)))
    strength = uniform(rng, 0.08, 0.25)
    light = light * (1.0 - np.float32(strength) * np.asarray(shadow, np.float32) * np.float32(1 / 255))
    grad = yy ** np.float32(uniform(rng, 0.7, 1.6))
    photo = (top + (bottom - top) * grad[..., None]) * light[..., None]  # (H, W, 3) float

    # ---- product: its own luminance (idx values are negated) modulates the tint
    lum = 1.0 - np.clip(_upsample(x, side), 0.0, 1.0)
    colour = pick_colour(rng, style, "cotton")
    shade = np.float32(uniform(rng, 0.45, 0.6)) + np.float32(uniform(rng, 0.45, 0.6)) * lum
    if style == "white_on_white":
        shade = 0.9 + 0.1 * shade
    product = colour[None, None, :] * shade[..., None]
    a = coverage[..., None]
    crop = photo[y0:y0 + side, x0:x0 + side]
    photo[y0:y0 + side, x0:x0 + side] = crop + (product - crop) * a
    photo += rng.normal(0.0, uniform(rng, 0.8, 2.4), photo.shape).astype(np.float32)
    photo_img = Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8), "RGB")

    mask = np.zeros((height, width), np.uint8)
    mask[y0:y0 + side, x0:x0 + side] = np.where(coverage >= 0.5, 255, 0)
    item = FashionItem(stem_for(split, source_index), split, int(source_index), int(label),
                       CLASSES[int(label)], style, width, height, x0, y0, side)
    return photo_img, Image.fromarray(mask, "L"), item


def _coverage(x: np.ndarray, side: int) -> np.ndarray:
    """Soft coverage (side, side) in [0, 1] of intensities ``x`` (28, 28) in [0, 1]."""
    hi = _upsample(x, side * SUPERSAMPLE) > THRESHOLD
    return np.asarray(Image.fromarray(hi.astype(np.uint8) * 255, "L").reduce(SUPERSAMPLE),
                      np.float32) * np.float32(1 / 255)


def _render_broad(pixels, label, split, source_index, seed, rng, width, height, style):
    """The broad look: framing, backdrop, light, camera and product extras from the item's look."""
    look = draw_look(seed, source_index)
    lrng = np.random.default_rng([int(seed), int(source_index), LOOK_SALT, 1])
    f_lo, f_hi = fill_range(look)
    side = max(16, int(round(min(width, height) * uniform(lrng, f_lo, f_hi) * 1.05)))
    x0 = int(round(place(lrng, look, width - side, side)))
    y0 = int(round(place(lrng, look, height - side, side)))
    x = pixels.astype(np.float32) * np.float32(1 / 255)
    coverage = _coverage(x, side)
    ys, xs = np.nonzero(coverage >= 0.5)
    if ys.size == 0:
        raise ValueError(f"{stem_for(split, source_index)}: no product pixel above the threshold")
    dx, dy = cut_shift(lrng, look, width, height, (x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1,
                                                   ys.max() - ys.min() + 1))
    x0, y0 = int(round(x0 + dx)), int(round(y0 + dy))
    lum = 1.0 - np.clip(_upsample(x, side), 0.0, 1.0)
    colour = pick_colour(rng, style, "cotton")
    shade = np.float32(uniform(rng, 0.45, 0.6)) + np.float32(uniform(rng, 0.45, 0.6)) * lum
    if style == "white_on_white":
        shade = 0.9 + 0.1 * shade
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = colour * np.float32(0.8)
    paste(canvas, colour[None, None, :] * shade[..., None], x0, y0)
    full = paste(np.zeros((height, width), np.float32), coverage, x0, y0)
    if not (full >= 0.5).any():
        raise ValueError(f"{stem_for(split, source_index)}: the product left the frame")
    photo, mask = compose(lrng, look, style, colour, canvas, full, float(side))
    item = FashionItem(stem_for(split, source_index), split, int(source_index), int(label),
                       CLASSES[int(label)], style, width, height, x0, y0, side)
    return photo, mask, item


def jpeg_options(seed: int, source_index: int, variety: str = "classic") -> dict:
    """PIL save options: quality 78-95 classic, the look's quality and chroma subsampling broad."""
    if check_variety(variety) == "classic":
        return {"quality": int(np.random.default_rng([int(seed), int(source_index), 1]).integers(78, 96))}
    look = draw_look(seed, source_index)
    return {"quality": look.jpeg_quality, "subsampling": look.subsampling}


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or path.is_relative_to(folder) or folder.is_relative_to(path)


def render_drop(
    out_dir: Path,
    split: str,
    n: int,
    seed: int,
    *,
    min_side: int = 320,
    max_side: int = 512,
    white_share: float = 0.1,
    black_share: float = 0.05,
    source_dir: Path | None = None,
    training_drop: Path | None = None,
    variety: str = "classic",
    progress: bool = True,
) -> list[FashionItem]:
    """Render `n` products of `split` into a vendor drop: images/<stem>.jpg + masks/<stem>.png.

    Also writes `labels.csv` (class per stem) and `drop.json` (source, split, idx sha256s,
    `"training": split == "train"`, metadata list). `split="test"` refuses to write into (or over)
    `training_drop`, the folder `backdrop ingest` reads for training.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if split != "train" and training_drop is not None and _inside(out_dir, Path(training_drop)):
        raise ValueError(f"the Fashion-MNIST {split} split is for evaluation only: refusing to write it "
                         f"into the training drop {training_drop}; pass another --out")
    images, labels, digests = load_split(split, source_dir)
    chosen = select(len(images), n, seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    items = []
    for idx in tqdm(chosen, desc=f"fashion-mnist {split}", unit="img", disable=not progress):
        photo, mask, item = render_product(images[idx], int(labels[idx]), split, int(idx), seed,
                                           min_side=min_side, max_side=max_side,
                                           white_share=white_share, black_share=black_share, variety=variety)
        with atomic_path(out_dir / "images" / f"{item.stem}.jpg") as tmp:
            photo.save(tmp, format="JPEG", **jpeg_options(seed, int(idx), variety))
        with atomic_path(out_dir / "masks" / f"{item.stem}.png") as tmp:
            mask.save(tmp, format="PNG")
        items.append(item)
    write_csv(out_dir / "labels.csv", (vars(it) for it in items), LABEL_FIELDS)
    descriptor = {
        "source": "fashion-mnist", "package": PACKAGE, "split": split, "training": split == "train",
        "license": "MIT (Zalando Research, Fashion-MNIST)", "n": n, "seed": seed,
        "idx_sha256": digests, "metadata": ["labels.csv"],
        "note": "train split only for training" if split == "train" else
                "EVALUATION ONLY: backdrop ingest refuses this drop",
    }
    if variety != "classic":
        write_csv(out_dir / "looks.csv", (draw_look(seed, it.source_index).row(it.stem) for it in items),
                  LOOK_FIELDS)
        descriptor.update(variety=variety, metadata=["labels.csv", "looks.csv"])
    write_json(out_dir / "drop.json", descriptor)
    return items
