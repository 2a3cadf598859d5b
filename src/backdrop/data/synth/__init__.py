"""Deterministic synthetic product photography with exact masks.

Every item is a studio packshot of one apparel product (tee, longsleeve, trousers, shorts, dress or
accessory) on a light seamless background, rendered from ``numpy.random.default_rng([seed, index])``
alone, so items can be rendered independently, in any order, on any worker.

How an item is made:

1. Photo size and framing: a portrait-leaning aspect (2:3, 3:4, 4:5, 1:1), each side in
   ``[min_side, max_side]``; the product is scaled and offset so that it fills a random share of the
   frame.
2. Geometry: a category builder returns a parametric silhouette (polygons, strokes, ellipses) in a
   local frame where the product is about one unit tall, plus interior details (seams, collars,
   waistbands, pockets, hardware) and fold lines.  The silhouette is drawn 2-4x supersampled and box
   downsampled: the soft coverage antialiases the photo, the mask is that coverage thresholded at
   one half, so it is exactly 0 or 255 and exactly matches the product's pixels.
3. Background: vertical gradient, optional table horizon, vignette, soft drop shadow behind the
   product and a contact shadow on the floor (the shadows belong to the background, never the mask).
4. Product appearance: solid colour or a print (stripes, gingham checks, dots, denim twill, heather
   grain), low-frequency shading, folds, darker edges, seams and hardware.
5. Sensor noise; JPEG compression happens when :func:`synthesize` writes the photo.

``style`` says which of the three colour regimes an item uses: ``normal``, ``white_on_white`` (white
product on a near-white background, the low-contrast hard case) or ``black_on_black``.

``variety`` (``synth.variety``): ``classic`` is the one studio above, byte for byte what it always
was; ``broad`` puts the same products on a per-item studio, light, camera, framing, product extras
and distractors (:mod:`.variety`, rendered by :mod:`.broad`) so a model learns products, not a studio.

The package: :mod:`.geometry` (curves and the drawing recipe of a shape), :mod:`.garments` (one
builder per category), :mod:`.studio` (size, colours, backdrop, drawing, noise, prints, fabrics),
:mod:`.product` (the product's layers and appearance), :mod:`.variety` / :mod:`.broad` (the broad
look) and :mod:`.render` (:func:`render_item`, :func:`synthesize`).
"""

from backdrop.data.synth.render import (
    CATEGORIES,
    JPEG_QUALITY,
    LABEL_FIELDS,
    STYLES,
    SynthItem,
    render_item,
    stem_for,
    synthesize,
)

__all__ = [
    "CATEGORIES",
    "JPEG_QUALITY",
    "LABEL_FIELDS",
    "STYLES",
    "SynthItem",
    "render_item",
    "stem_for",
    "synthesize",
]
