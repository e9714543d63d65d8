"""Search by example: an image (``search_image``) or an indexed video / window (``similar``, "more like this").

    data = read_image_file("frame.jpg")                  # or the bytes of an upload
    result = search_image(searcher, data, k=10)          # videos that look like the image
    result = similar(searcher, hit.id, start=hit.start)  # videos like this one (itself excluded)

How an image becomes a query vector (:func:`encode_image`): the image is decoded to RGB, preprocessed
EXACTLY as the index's frames are (``encode.preprocess_for(model)`` through
``data.video.transforms.preprocess_frames``: same size, resize mode, interpolation, mean/std), repeated
into a still video of the model's ``T = cfg.video.num_frames`` frames, and encoded by the index's own
video encoder (``model.encode_video``). The query is then a row of the same kind as the index's rows,
compared with them by the same inner product:

- Two-Tower mean pooling (CLIP4Clip meanP): every frame is the same, so the vector is exactly the
  normalised CLIP image embedding of the picture;
- CLIP-ViP: the video-proxy encoder's video CLS over the still video;
- PIG: the video encoder, ITS patch selection, pseudo-query generator and fusion all run on the still
  video: the image gets its own pseudo-query and fused vector, as a video showing only that picture would;
- X-Pool (``index_kind = "frames+rerank"``): the index's first-stage rows are the normalised mean of
  each video's frame features; the image's is its normalised CLIP image embedding (mean of T identical
  frames), and the ranking is that cosine over every video (exact). It is NOT re-ranked with X-Pool's
  fusion: the fusion was trained to pool frames under a text query, and an image embedding sits on the
  other side of CLIP's modality gap, where its behaviour is unmeasured. :meth:`Searcher.search_vector`
  says so in the result's notes.

``similar`` takes the stored row of a video (its window starting at ``start``) as the query, and excludes
every row of the source video from the results. A ``start`` that is not a window start takes the window
that contains it (centred nearest; a note says which); past the last window, or on a video stored as one
whole-file row, it is a QueryError that says so. :func:`find_video` names a video by id, by its path
relative to the indexed folder, or by any path to the same file (absolute, relative, through links).

Scores of both are cosines between two video-side vectors: higher than text-to-video scores for the
same content, so the text-calibrated weak-match cue (:mod:`.calibration`) is not applied to them.

Images come as bytes (an upload) or a path (:func:`read_image_file`: opened with
``core.io.open_regular``, so a FIFO or device is refused without blocking). An empty, undecodable,
oversized (> :data:`MAX_IMAGE_BYTES`) or absurd image (more than :data:`MAX_IMAGE_PIXELS` pixels: a
decompression bomb) raises :class:`QueryError` with a message that names no absolute path. Only common
photo formats are decoded (:data:`IMAGE_FORMATS`), never PIL's rarer plugins (EPS would run Ghostscript).
16-bit and float greyscale images are scaled to 8 bits (not clipped). An image goes through the index's own
frame transform (``data.video.transforms.preprocess_frames``), which cuts a frame more than
``MAX_ASPECT`` times longer than wide to its centre before a "shortest" resize, so a 1 x 200000 strip
cannot make a 100 GB float copy.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..core.display import printable, printable_path
from .searcher import QueryError, SearchResult, check_k

__all__ = ["IMAGE_FORMATS", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "DecodedImage", "decode_image", "encode_image",
           "find_video", "read_image_file", "search_image", "similar"]

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # larger files / uploads are refused before decoding
MAX_IMAGE_PIXELS = 80_000_000  # width x height above this is refused from the header alone (below PIL's own 89 MP warning)
SHRINK_ABOVE_PIXELS = 16_000_000  # larger images are box-reduced by an integer factor first (bounded float memory)
#: Images of more than BIG_DECODE_PIXELS are decoded at most BIG_DECODE_SLOTS at a time in this process:
#: a 250 KB PNG of 80 MP takes ~350 MB and ~1 s to decode, so 40 concurrent uploads could take 14 GB.
BIG_DECODE_PIXELS = 4_000_000
BIG_DECODE_SLOTS = 2
_BIG_DECODES = threading.BoundedSemaphore(BIG_DECODE_SLOTS)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "PPM")


@dataclass
class DecodedImage:
    rgb: np.ndarray  # uint8 [H, W, 3] (after any reduction)
    width: int  # size in the file
    height: int
    format: str  # PIL's format name (JPEG, PNG, ...)


# ----- images -----------------------------------------------------------------------------------------
def read_image_file(path) -> bytes:
    """The bytes of the image file ``path`` (at most :data:`MAX_IMAGE_BYTES`). A missing file, a folder,
    FIFO or device, an unreadable or oversized file raises QueryError naming the file by its base name."""
    from ..core.io import open_regular

    name = printable_path(os.path.basename(os.fspath(path)) or os.fspath(path))
    try:
        fd, st = open_regular(path)
    except FileNotFoundError:
        raise QueryError(f"image file {name} does not exist") from None
    except OSError as exc:
        raise QueryError(f"cannot open image file {name}: {exc.strerror or type(exc).__name__}") from None
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > MAX_IMAGE_BYTES:
            raise QueryError(f"image file {name} is {st.st_size / 2**20:.0f} MiB; the limit is "
                             f"{MAX_IMAGE_BYTES // 2**20} MiB")
        try:
            data = fh.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise QueryError(f"cannot read image file {name}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise QueryError(f"image file {name} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    return data


def decode_image(data, min_side: int = 224) -> DecodedImage:
    """Image bytes -> RGB uint8 ``[H, W, 3]``. Raises QueryError for empty, oversized, undecodable or
    absurdly large images. Orientation from EXIF is applied (a phone photo is searched as it is shown);
    an animated image gives its first frame; transparency is dropped (as in a video frame). An image of
    more than 16 MP is first box-reduced by the smallest integer factor that brings it to 16 MP (short
    side kept >= ``min_side``), so its float copy stays bounded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise QueryError(f"the image must be bytes, got {type(data).__name__}")
    if not data:
        raise QueryError("the image is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise QueryError(f"the image is {len(data) / 2**20:.0f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
    Image.init()
    try:
        im = Image.open(io.BytesIO(data), formats=[f for f in IMAGE_FORMATS if f in Image.OPEN])
    except UnidentifiedImageError:
        raise QueryError("the image cannot be decoded: not a JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF or PPM "
                         "file") from None
    except Image.DecompressionBombError:
        raise QueryError(f"the image is too large to decode (over {MAX_IMAGE_PIXELS // 1_000_000} MP)") from None
    except Exception as exc:  # any failure of a decoder on untrusted bytes: the image is unusable
        raise QueryError(f"the image cannot be decoded: {type(exc).__name__}") from None
    with im:
        w, h = im.size
        fmt = im.format or "image"
        if w < 1 or h < 1:
            raise QueryError(f"the image has no pixels ({w}x{h})")
        if w * h > MAX_IMAGE_PIXELS:
            raise QueryError(f"the image is {w}x{h} ({w * h / 1e6:.0f} MP); the limit is "
                             f"{MAX_IMAGE_PIXELS // 1_000_000} MP")
        # images over BIG_DECODE_PIXELS: at most BIG_DECODE_SLOTS decoded at once (bounded memory)
        with _BIG_DECODES if w * h > BIG_DECODE_PIXELS else contextlib.nullcontext():
            try:
                factor = _reduce_factor(w, h, min_side)
                if factor > 1 and fmt == "JPEG":
                    im.draft("RGB", (w // factor, h // factor))  # JPEG: decode at 1/2, 1/4, 1/8 scale directly
                frame = ImageOps.exif_transpose(im) or im
                factor = _reduce_factor(*frame.size, min_side)
                if factor > 1:
                    frame = frame.reduce(factor)
                rgb = _to_rgb8(frame)
            except Image.DecompressionBombError:
                raise QueryError(f"the image is too large to decode (over {MAX_IMAGE_PIXELS // 1_000_000} MP)") from None
            except Exception as exc:  # truncated or corrupt data, bad EXIF, an unsupported mode or compression
                raise QueryError(f"the image cannot be decoded: {type(exc).__name__}: "
                                 f"{printable(str(exc))[:200]}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise QueryError("the image cannot be decoded to RGB pixels")
    return DecodedImage(np.ascontiguousarray(rgb), int(w), int(h), str(fmt))


def _to_rgb8(frame) -> np.ndarray:
    """RGB uint8 of a PIL image. 16- and 32-bit integer and float greyscale images (16-bit PNG, TIFF) are
    scaled to 8 bits over their type's range (PIL's own ``convert("RGB")`` clips them: a 16-bit photo would
    come out white)."""
    mode = frame.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(frame)
        if mode == "F":
            a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            peak = 1.0 if a.size and float(a.max()) <= 1.0 else 255.0  # a float image in [0, 1], else 8-bit values
            gray = np.clip(a / peak * 255.0 + 0.5, 0, 255)
        else:
            a = a.astype(np.int64)
            peak = 65535 if mode.startswith("I;16") or (a.size and int(a.max()) <= 65535) else int(a.max())
            gray = np.clip(a, 0, None) * 255.0 / max(1, peak) + 0.5
        gray = gray.astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(frame.convert("RGB"), dtype=np.uint8)


def _reduce_factor(w: int, h: int, min_side: int) -> int:
    f = 1
    while (w // f) * (h // f) > SHRINK_ABOVE_PIXELS and min(w, h) // (f + 1) >= min_side:
        f += 1
    return f


def _model_lock(searcher):
    lock = getattr(searcher, "_lock", None)  # the searcher serialises its model calls with it
    return lock if lock is not None else contextlib.nullcontext()


def encode_rgb(searcher, rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> unit float32 ``[D]``: the still video of the model's T frames, preprocessed as
    the index's frames and encoded by the index's video encoder (see the module doc)."""
    import torch
    import torch.nn.functional as F

    from ..data.video.transforms import preprocess_frames
    from ..encode import preprocess_for

    # a text-only model (Searcher.open) loads its video tower now, verified against the index
    model = searcher.full_model() if hasattr(searcher, "full_model") else searcher.model
    cfg = preprocess_for(model)
    x = preprocess_frames(rgb[None], cfg)  # [1, 3, S, S], the index's frame transform
    t = int(model.cfg.video.num_frames)
    frames = x.unsqueeze(0).expand(1, t, *x.shape[1:]).contiguous()
    device = getattr(searcher, "device", None) or next(model.parameters()).device
    with _model_lock(searcher), torch.no_grad():
        out = model.encode_video(frames.to(device)).float()
        if not model.query_independent:  # X-Pool: [1, T, D] frame features -> the first-stage row
            out = F.normalize(out.mean(dim=1), dim=-1)
    v = out.cpu().numpy()
    if v.ndim != 2 or v.shape[0] != 1:
        raise QueryError(f"this index's model gives {list(v.shape[1:])} vectors per video; image search "
                         f"needs one")
    v = v[0].astype(np.float32)
    if v.shape[0] != searcher.dim:
        raise QueryError(f"the model's image vector has {v.shape[0]} numbers, the index's rows {searcher.dim}")
    norm = float(np.linalg.norm(v))
    if not np.all(np.isfinite(v)) or norm == 0.0:
        raise QueryError("the model produced no usable vector for this image (non-finite or zero)")
    return v / norm


def encode_image(searcher, data: bytes) -> np.ndarray:
    """Image bytes -> unit float32 ``[D]`` in the index's space (QueryError for a bad image)."""
    return encode_rgb(searcher, decode_image(data, _image_size(searcher)).rgb)


def _image_size(searcher) -> int:
    try:
        return int(searcher.model.preprocess_config()["image_size"])
    except Exception:  # a stand-in model in a test
        return 224


# ----- searches -----------------------------------------------------------------------------------------
def _text_cue_off(result: SearchResult) -> None:
    """The weak-match threshold is calibrated on text-to-video scores: not meaningful here."""
    for h in result.hits:
        h.weak = False
    result.weak_threshold = None


def search_image(searcher, data: bytes, k: int = 10) -> SearchResult:
    """The ``k`` indexed videos (windows) most similar to the image ``data`` (bytes). Scores are cosines
    between the image's still-video vector and the index's rows. ``query`` of the result is ``""``; its
    first note describes the image."""
    t0 = time.perf_counter()
    k = check_k(k)
    img = decode_image(data, _image_size(searcher))
    vec = encode_rgb(searcher, img.rgb)
    result = searcher.search_vector(vec, k)
    _text_cue_off(result)
    t = int(searcher.model.cfg.video.num_frames)
    result.notes.insert(0, f"image query: {img.width}x{img.height} {img.format}, encoded as a still {t}-frame video")
    result.took_ms = (time.perf_counter() - t0) * 1e3
    return result


def similar(searcher, id, start: float | None = None, k: int = 10) -> SearchResult:
    """"More like this": the ``k`` videos most similar to indexed video ``id`` (its window starting at
    ``start`` seconds where the index stores windows), using its stored row as the query. Every row of
    the source video is excluded. Unknown ids raise QueryError."""
    t0 = time.perf_counter()
    k = check_k(k)
    entry = searcher.entry(id)
    if entry is None:
        raise QueryError(f"no video with id {printable(repr(id))} in this index")
    vid = int(entry.id)
    if start is not None:
        try:
            start = float(start)
        except (TypeError, ValueError):
            raise QueryError(f"start must be a number of seconds, got {printable(repr(start))}") from None
        if not np.isfinite(start) or start < 0:
            raise QueryError(f"start must be a number of seconds >= 0, got {start}")
    vec = searcher.vector(vid, start=start)
    used = None
    if vec is None and start is not None:
        used = _window_containing(searcher, vid, start)
        vec = searcher.vector(vid, start=used[0])
    if vec is None:
        where = f" starting at {start:g} s" if start is not None else ""
        raise QueryError(f"video {vid} has no stored window{where}")
    result = searcher.search_vector(vec, k, exclude_id=vid)
    _text_cue_off(result)
    src = printable(entry.video_id) + (f" from {start:g} s" if start is not None else "")
    result.notes.insert(0, f"more like this: {src} (id {vid}; excluded from the results)")
    if used is not None:
        result.notes.insert(1, f"no window of video {vid} starts at {_clock(start)}: used the window "
                               f"{_clock(used[0])}-{_clock(used[1])}, which contains it")
    result.took_ms = (time.perf_counter() - t0) * 1e3
    return result


def _clock(seconds: float) -> str:
    """``750.5`` -> ``"12:30.5"``, ``3723`` -> ``"1:02:03"`` (as search prints times); absurd values as seconds."""
    if not (math.isfinite(seconds) and 0 <= seconds < 1e7):
        return f"{seconds:g} s"
    whole = int(seconds)
    frac = f"{seconds - whole:.1f}"[1:] if seconds - whole >= 0.05 else ""
    h, rem = divmod(whole, 3600)
    m, sec = divmod(rem, 60)
    return (f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}") + frac


def _window_containing(searcher, vid: int, start: float) -> tuple[float, float]:
    """The stored window of video ``vid`` that contains ``start`` seconds (the one centred nearest it),
    for a time that is not itself a window start. QueryError when the video is one whole-file row (no
    windows) or ``start`` lies past its last window."""
    rows_of = getattr(searcher, "rows_of", None)
    rows = rows_of(vid) if callable(rows_of) else []
    spans = sorted({(float(r["start"]), float(r["end"])) for r in rows
                    if r.get("start") is not None and r.get("end") is not None
                    and math.isfinite(float(r["start"])) and math.isfinite(float(r["end"]))})
    if not spans:
        raise QueryError(f"video {vid} has no stored window starting at {start:g} s: it is stored as one "
                         f"whole-file vector (it is not longer than the index's window); leave out the start")
    end = max(e for _, e in spans)
    inside_ = [sp for sp in spans if sp[0] <= start < sp[1]] or [sp for sp in spans if start == sp[1] == end]
    if not inside_:
        raise QueryError(f"video {vid} has no stored window starting at {start:g} s: {_clock(start)} is past "
                         f"its end (its windows cover {_clock(spans[0][0])}-{_clock(end)})")
    return min(inside_, key=lambda sp: (abs((sp[0] + sp[1]) / 2 - start), sp[0]))


def _display_ref(s: str) -> str:
    """How an error names the user's reference: as given, or by its base name when it is an absolute path."""
    try:
        absolute = os.path.isabs(s)
    except (TypeError, ValueError):
        absolute = False
    if not absolute:
        return printable(s)
    return printable(os.path.basename(s.rstrip("/" + os.sep)) or "(a folder)")


def _same_file_entry(searcher, s: str):
    """The entry whose file is the file ``s`` names (any path to it: absolute, relative to the current
    folder, through links), else None. Only entries that resolve to the same real path match."""
    try:
        if not os.path.isfile(s):  # a folder ("/"), FIFO or device is no indexed video: no scan of the entries
            return None
        real = os.path.realpath(s)
    except (OSError, ValueError):  # a NUL byte, an unreadable folder
        return None
    entries = list(searcher.entries)
    for e in entries:  # cheap pass: the recorded path is already the real one
        if e.path == real:
            return e
    for e in entries:
        try:
            if os.path.realpath(e.path) == real:
                return e
        except (OSError, ValueError):
            continue
    return None


def find_video(searcher, ref) -> int:
    """The id of an indexed video named by ``ref``: its id (an int, or a string of ASCII digits), its path
    relative to the indexed folder (``video_id``, exactly or as search prints it, with ``\\xNN`` escapes for
    bytes that are not UTF-8), or any path to the same file. Raises QueryError otherwise."""
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        if searcher.entry(int(ref)) is not None:
            return int(ref)
        raise QueryError(f"no video with id {int(ref)} in this index")
    if not isinstance(ref, str) or not ref.strip():
        raise QueryError("name a video by its id or its path relative to the indexed folder")
    s = ref.strip()
    # ASCII digits only ("²" and "١٢" are str.isdigit() too), and short enough for int()'s limit
    if s.isascii() and s.isdigit() and len(s) <= 30 and searcher.entry(int(s)) is not None:
        return int(s)
    want = s.replace(os.sep, "/")
    while want.startswith("./"):
        want = want[2:]
    for e in searcher.entries:
        if e.video_id in (ref, s) or e.video_id.replace(os.sep, "/") == want:  # a name may end in a space
            return int(e.id)
    # the name as search prints it: bytes that are not UTF-8 and control characters as \xNN escapes
    shown = [e for e in searcher.entries if printable(e.video_id) in (s, want) and printable(e.video_id) != e.video_id]
    if len(shown) == 1:
        return int(shown[0].id)
    e = _same_file_entry(searcher, s)
    if e is not None:
        return int(e.id)
    raise QueryError(f"no video with id or relative path {_display_ref(s)!r} in this index")
