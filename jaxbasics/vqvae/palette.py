"""A palette tokenizer: structure codes that say *where* each of a few colours goes, and the
colours themselves as a second, small set of codes.

A plain VQ-VAE writes outline and colour into the same codes, so that one shape in 1,000
colours needs 1,000 times the codes, and a prior over them must learn every shape once per
colour. With ``palette_slots = J`` (``docs/prior.md``, "A tokenizer that keeps the colours
apart"), the model instead

1. encodes only the image's *colour distances* (:func:`distances`: from each pixel to its 12
   neighbours within 2 pixels and to the 4 corners), which no rotation or reflection of colour
   space changes, so the structure codes are colour-blind;
2. decodes the structure codes to J soft masks, one per palette slot (softmax over slots);
3. reads slot j's colour off the image, the mean of the pixels under mask j
   (:func:`read_palette`), rounded to :data:`LEVELS` levels per channel with a straight-through
   gradient: :data:`CODES` = 512 colour codes;
4. paints the image: each pixel is the mask-weighted sum of the palette (:func:`compose`).

A code map is then ``(h + 1, w)``: one row of J colour codes (offset by K, the structure
codes' count, and padded with :data:`CODES` + K to the map's width), then the h rows of
structure codes; one vocabulary of ``K + CODES + 1`` codes, so every prior models it
unchanged. :func:`vocabulary` says which codes each position may hold, which the samplers
use to draw each row from its own codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics import checks
from jaxbasics.autodiff import straight_through

# Levels per colour channel, and the colour codes they give (index r + 8 g + 64 b).
LEVELS = 8
CODES = LEVELS**3
# The neighbours (dy, dx) within 2 pixels, each pair of pixels once, then the 4 corners.
OFFSETS = tuple((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) > (0, 0))
CORNERS = ((0, 0), (0, -1), (-1, 0), (-1, -1))
# The structure encoder's input channels.
INPUT_CHANNELS = len(OFFSETS) + len(CORNERS)
# Colour distances are squashed as tanh(d / SCALE): the data's noise is below it.
SCALE = 0.1


def _norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(v**2, axis=-1) + 1e-6)


def distances(x: jax.Array) -> jax.Array:
    """(B, H, W, 3) images -> (B, H, W, 16) squashed colour distances: the structure input.

    Channel i < 12 is ``tanh(|x[p] - x[p + offset_i]| / 0.1)`` for the 12 :data:`OFFSETS`
    (edge pixels repeated past the border), the last 4 the same to the 4 corner pixels, so
    that one background stripe can be told from the other. A rotation or reflection of
    colour space (a channel permutation, a negation) leaves every distance as it was.

    >>> x = jnp.zeros((1, 8, 8, 3)).at[0, 3:5, 3:5].set(0.5)  # a grey square on black
    >>> d = distances(x)
    >>> d.shape, float(d[0, 0, 0].max()) < 0.02, float(d[0, 3, 3, -1]) > 0.99
    ((1, 8, 8, 16), True, True)
    """
    h, w = x.shape[1:3]
    p = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    d = [_norm(p[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] - x) for dy, dx in OFFSETS]
    d += [_norm(x - x[:, cy, cx][:, None, None]) for cy, cx in CORNERS]
    return jnp.tanh(jnp.stack(d, axis=-1) / SCALE)


def round_colours(c: jax.Array) -> jax.Array:
    """Colours in [-0.5, 0.5] rounded to :data:`LEVELS` levels per channel, gradient straight
    through (:func:`jaxbasics.autodiff.straight_through`).

    >>> c = round_colours(jnp.array([-0.5, 0.0, 0.3, 0.9]))
    >>> ((c + 0.5) * 7).round().tolist()  # levels 0..7; 0.9 is clipped to the top one
    [0.0, 4.0, 6.0, 7.0]
    """
    b = (c + 0.5) * (LEVELS - 1)
    return straight_through(b, jnp.round(jnp.clip(b, 0, LEVELS - 1))) / (LEVELS - 1) - 0.5


def read_palette(masks: jax.Array, x: jax.Array) -> jax.Array:
    """The palette read off the images: slot j's colour is the mean of ``x`` under mask j,
    rounded (:func:`round_colours`).

    Args:
      masks: (B, H, W, J) soft masks, summing to 1 over the slots.
      x: (B, H, W, 3) images in [-0.5, 0.5].

    Returns:
      (B, J, 3) colours on the grid of :data:`LEVELS` levels per channel. An empty slot's
      colour is near 0 (grey).

    >>> m = jnp.zeros((1, 2, 2, 2)).at[0, 0, :, 0].set(1).at[0, 1, :, 1].set(1)
    >>> x = jnp.zeros((1, 2, 2, 3)).at[0, 0].set(0.5).at[0, 1].set(-0.5)
    >>> read_palette(m, x).tolist()
    [[[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]]]
    """
    weight = jnp.sum(masks, axis=(1, 2))[..., None]
    return round_colours(jnp.einsum("bhwj,bhwc->bjc", masks, x) / (weight + 1e-3))


def compose(masks: jax.Array, colours: jax.Array) -> jax.Array:
    """Paint: each pixel is ``sum_j masks[..., j] * colours[j]``.

    >>> m = jnp.array([[[[0.25, 0.75]]]])           # one pixel, two slots
    >>> c = jnp.array([[[0.5, 0.5, 0.5], [-0.5, 0.5, 0.1]]])
    >>> compose(m, c).tolist()
    [[[[-0.25, 0.5, 0.20000000298023224]]]]
    """
    return jnp.einsum("bhwj,bjc->bhwc", masks, colours)


def paint(masks: jax.Array, x: jax.Array) -> jax.Array:
    """A palette tokenizer's reconstruction of ``x``: its palette under ``masks``, composed.

    >>> paint(jnp.ones((1, 2, 2, 1)), jnp.full((1, 2, 2, 3), 0.5))[0, 0].tolist()
    [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    """
    return compose(masks, read_palette(masks, x))


def colour_indices(colours: jax.Array) -> jax.Array:
    """(..., 3) colours on the grid -> (...) int32 colour codes in [0, 512): r + 8 g + 64 b.

    >>> colour_indices(jnp.array([[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [0.5, 0.5, 0.5]])).tolist()
    [0, 7, 511]
    """
    digits = jnp.round((colours + 0.5) * (LEVELS - 1)).astype(jnp.int32)
    return digits[..., 0] + LEVELS * digits[..., 1] + LEVELS**2 * digits[..., 2]


def index_colours(indices: jax.Array) -> jax.Array:
    """(...) colour codes -> (..., 3) float32 colours; inverse of :func:`colour_indices`.

    >>> index_colours(jnp.array([0, 7, 511])).tolist()
    [[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]
    """
    indices = jnp.asarray(indices)
    digits = jnp.stack([indices % LEVELS, indices // LEVELS % LEVELS, indices // LEVELS**2], -1)
    return digits.astype(jnp.float32) / (LEVELS - 1) - 0.5


def vocabulary(rows: int, width: int, num_structure: int, slots: int) -> np.ndarray:
    """Which codes each position of an ``(rows, width)`` palette code map may hold.

    Row 0: the first ``slots`` positions a colour code ``K + c`` (c < 512), the rest the
    padding code ``K + 512``; rows 1.. a structure code in [0, K). ``K = num_structure``.

    Returns:
      (rows, width, K + 513) bool.

    >>> v = vocabulary(2, 3, 4, 2)
    >>> v.shape, v[0, 0].nonzero()[0][[0, -1]].tolist(), v[0, 2].nonzero()[0].tolist()
    ((2, 3, 517), [4, 515], [516])
    >>> v[1].nonzero()[1].reshape(3, 4).tolist()[0]
    [0, 1, 2, 3]
    """
    allowed = np.zeros((rows, width, num_structure + CODES + 1), bool)
    allowed[0, :slots, num_structure : num_structure + CODES] = True
    allowed[0, slots:, num_structure + CODES] = True
    allowed[1:, :, :num_structure] = True
    return allowed


def colour_row(colours: jax.Array, num_structure: int, width: int) -> jax.Array:
    """(B, J, 3) palettes -> (B, 1, width) the code map's first row (see :func:`vocabulary`).

    >>> colour_row(jnp.full((1, 2, 3), 0.5), 4, 3).tolist()
    [[[515, 515, 516]]]
    """
    codes = colour_indices(colours) + num_structure
    pad = jnp.full((codes.shape[0], width - codes.shape[1]), num_structure + CODES, jnp.int32)
    return jnp.concatenate([codes, pad], axis=1)[:, None]


def encode_map(indices: jax.Array, masks: jax.Array, x: jax.Array, num_structure: int) -> jax.Array:
    """A palette tokenizer's code maps: the colour row of ``x``'s palette under ``masks`` (the
    decoded ``indices``), then the (B, h, w) structure ``indices``.

    Raises:
      ValueError: maps narrower than the palette (images under 4 J pixels wide).

    >>> masks = jnp.zeros((1, 4, 12, 2)).at[..., 0].set(1.0)  # every pixel in slot 0, 1 empty
    >>> encode_map(jnp.zeros((1, 1, 3), jnp.int32), masks, jnp.full((1, 4, 12, 3), 0.5), 4)
    Array([[[515, 296, 516],
            [  0,   0,   0]]], dtype=int32)
    """
    slots, width = masks.shape[-1], indices.shape[2]
    if width < slots:
        raise ValueError(
            f"a palette of {slots} colours needs code maps at least that wide: images at "
            f"least {4 * slots} pixels wide, got {x.shape[2]}."
        )
    row = colour_row(read_palette(masks, x), num_structure, width)
    return jnp.concatenate([row, indices], axis=1)


def split_map(indices: jax.Array, num_structure: int, slots: int) -> tuple[jax.Array, jax.Array]:
    """(B, h + 1, w) palette code maps -> their (B, h, w) structure codes and (B, J, 3) colours.

    Each code is checked against its position's vocabulary (:func:`vocabulary`) where the
    values are known; under ``jit``, a code outside it is clipped into it (a colour code past
    the colours becomes the nearest colour, a structure code past K becomes K - 1).

    Raises:
      ValueError: a map of another shape, a code outside [0, K + 513), or a code its position
        may not hold (one line).

    >>> s, c = split_map(jnp.array([[[4, 515, 516], [1, 2, 3]]]), 4, 2)
    >>> s.tolist(), c.tolist()
    ([[[1, 2, 3]]], [[[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]])
    >>> split_map(jnp.array([[[4, 5, 6], [1, 2, 3]]]), 4, 2)
    Traceback (most recent call last):
    ...
    ValueError: a palette code map holds code 6 at row 0, column 2, where only 516 may go.
    """
    indices = checks.indices("indices", indices, num_structure + CODES + 1)
    b, rows, width = indices.shape
    if rows < 2 or width < slots:
        raise ValueError(
            f"palette code maps are (B, h + 1, w) with w >= {slots} (a row of colours, then h "
            f"rows of structure), got shape {tuple(indices.shape)}."
        )
    allowed = vocabulary(rows, width, num_structure, slots)
    if not isinstance(indices, jax.core.Tracer):
        host = np.asarray(indices)
        ok = np.take_along_axis(np.broadcast_to(allowed, (b, *allowed.shape)), host[..., None], -1)
        if not ok.all():
            i, r, c = (int(v) for v in np.argwhere(~ok[..., 0])[0])
            where = np.flatnonzero(allowed[r, c])
            may = f"{where[0]}" if len(where) == 1 else f"codes in [{where[0]}, {where[-1]}]"
            raise ValueError(
                f"a palette code map holds code {host[i, r, c]} at row {r}, column {c}, "
                f"where only {may} may go."
            )
    low = jnp.asarray(allowed.argmax(-1))
    high = jnp.asarray(allowed.shape[-1] - 1 - allowed[..., ::-1].argmax(-1))
    indices = jnp.clip(indices, low, high)
    colours = index_colours(indices[:, 0, :slots] - num_structure)
    return indices[:, 1:], colours
