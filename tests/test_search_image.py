"""Search by image and "more like this" (hybridtower.index.image_query) on a small index built with the
shipped demo PIG: an image lands in the index's space, finds the video it was taken from, bad images are
refused with clear errors, and the source of "more like this" is excluded."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from blocking import within
from hybridtower.index import IndexOptions, QueryError, Searcher, build_index
from hybridtower.index import image_query as iq
from tiny_index import make_videos

DEMO_CKPT = Path(__file__).resolve().parents[1] / "src" / "hybridtower" / "assets" / "demo-pig-tiny.safetensors"
OPTS = dict(progress=False, batch_size=8, num_workers=0)
STILL = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _png(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def _write_still(path: Path, rgb: np.ndarray, frames: int = 8) -> None:
    """A lossless (FFV1) video showing ``rgb`` in every frame."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = rgb.shape[1], rgb.shape[0], "bgr0"
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgsearch")
    clips = make_videos(root / "synth", n=5, frames=12)
    _write_still(root / "synth" / "videos" / "still.mkv", STILL)
    build_index([root / "synth" / "videos"], root / "idx", DEMO_CKPT, IndexOptions(**OPTS))
    return SimpleNamespace(root=root, clips=clips, searcher=Searcher.open(root / "idx"))


def _middle_frame(path: Path) -> np.ndarray:
    from hybridtower.data.video.decode import read_frames

    return read_frames(path, 1, "uniform")[0]


# ----- the image lands in the index's space ------------------------------------------------------
def test_image_of_a_still_video_equals_its_row(index):
    """The image is preprocessed and encoded exactly as the index's frames: a video that shows only
    that image (lossless) has, as its stored row, the image's query vector."""
    s = index.searcher
    still_id = iq.find_video(s, "still.mkv")
    v = iq.encode_image(s, _png(STILL))
    assert v.dtype == np.float32 and v.shape == (s.dim,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    assert float(v @ s.vector(still_id)) > 0.9999
    res = iq.search_image(s, _png(STILL), k=2)
    assert res.hits[0].id == still_id and res.hits[0].score > 0.9999
    assert res.notes[0] == "image query: 64x64 PNG, encoded as a still 8-frame video"
    assert res.query == "" and res.took_ms > 0


def test_a_frame_finds_the_video_it_was_taken_from(index):
    """The middle frame of each synthetic clip, as a PNG: its own video ranks first for most clips and
    in the top 3 for all (chance: 1 in 6 for first)."""
    s = index.searcher
    firsts, ranks = 0, []
    for clip in index.clips:
        res = iq.search_image(s, _png(_middle_frame(clip)), k=6)
        order = [h.video_id for h in res.hits if h.video_id != "still.mkv"]
        rank = order.index(clip.name)
        ranks.append(rank)
        firsts += rank == 0
    assert firsts >= 3, ranks
    assert max(ranks) <= 2, ranks


def test_jpeg_and_exif_orientation(index):
    rgb = np.zeros((40, 64, 3), np.uint8)
    rgb[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img = iq.decode_image(_png(rgb, "JPEG", exif=exif.tobytes(), quality=95))
    assert (img.width, img.height, img.format) == (64, 40, "JPEG")
    assert img.rgb.shape == (64, 40, 3)  # shown (and searched) upright
    assert iq.encode_image(index.searcher, _png(rgb, "JPEG")).shape == (index.searcher.dim,)


def test_meanp_and_xpool_image_vector_is_the_clip_image_embedding():
    """Two-Tower mean pooling of a still video = the normalised CLIP image embedding; X-Pool's
    first-stage vector (normalised mean of frame features) is the same."""
    from hybridtower import hub
    from hybridtower.data.video.transforms import preprocess_frames
    from hybridtower.encode import preprocess_for

    rgb = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    for preset in ("meanp-tiny", "xpool-tiny"):
        torch.manual_seed(0)
        model = hub.create_model(preset).eval()
        stub = SimpleNamespace(model=model, device=torch.device("cpu"), dim=model.embed_dim)
        v = iq.encode_image(stub, _png(rgb))
        with torch.no_grad():
            x = preprocess_frames(rgb[None], preprocess_for(model))
            ref = torch.nn.functional.normalize(model.video_encoder.visual(x), dim=-1)[0].numpy()
        np.testing.assert_allclose(v, ref, atol=1e-5)


def test_big_images_are_reduced_before_the_float_copy(monkeypatch):
    monkeypatch.setattr(iq, "SHRINK_ABOVE_PIXELS", 10_000)
    rgb = np.full((300, 400, 3), 128, np.uint8)
    img = iq.decode_image(_png(rgb), min_side=50)
    assert (img.width, img.height) == (400, 300)
    assert img.rgb.shape[0] * img.rgb.shape[1] <= 10_000 * 1.5 and min(img.rgb.shape[:2]) >= 50
    small = iq.decode_image(_png(rgb), min_side=224)  # never below the model's input size
    assert small.rgb.shape[:2] == (300, 400)


# ----- bad images ------------------------------------------------------------------------------------
def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, message", [
    (b"", "the image is empty"),
    (b"this is not an image at all", "cannot be decoded"),
    (_png(STILL)[:120], "cannot be decoded"),  # truncated
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "cannot be decoded"),  # EPS: never Ghostscript
    (_png_header_only(9_000, 9_000), "the limit is 80 MP"),  # 81 MP: refused from the header
    (_png_header_only(20_000, 20_000), "too large"),  # 400 MP: PIL's own bomb check
    ("a string", "must be bytes"),
])
def test_bad_images_are_query_errors(index, data, message):
    with pytest.raises(QueryError, match=message):
        iq.search_image(index.searcher, data)


def test_oversized_bytes_and_bad_k(index, monkeypatch):
    with pytest.raises(QueryError, match="k must be"):
        iq.search_image(index.searcher, _png(STILL), k=0)
    monkeypatch.setattr(iq, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(QueryError, match="limit is"):
        iq.encode_image(index.searcher, _png(STILL))


def test_read_image_file_refuses_fifos_folders_missing_and_big_files(tmp_path, monkeypatch):
    good = tmp_path / "photo.png"
    good.write_bytes(_png(STILL))
    assert iq.read_image_file(good) == good.read_bytes()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, message in ((fifo, "FIFO"), (tmp_path, "folder"), (tmp_path / "gone.jpg", "does not exist")):
        with pytest.raises(QueryError, match=message) as exc:
            within(5, iq.read_image_file, path)
        assert str(tmp_path) not in str(exc.value)
    monkeypatch.setattr(iq, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(QueryError, match="photo.png is .* the limit") as exc:
        iq.read_image_file(good)
    assert str(tmp_path) not in str(exc.value)


# ----- more like this -------------------------------------------------------------------------------
def test_similar_excludes_the_source_and_ranks_like_its_vector(index):
    s = index.searcher
    for e in s.entries[:3]:
        res = iq.similar(s, e.id, k=3)
        assert len(res.hits) == 3 and e.id not in [h.id for h in res.hits]
        assert res.notes[0].startswith(f"more like this: {e.video_id} (id {e.id}")
        plain = s.search_vector(s.vector(e.id), k=4)  # the same ranking with the source left in
        assert plain.hits[0].id == e.id
        assert [h.id for h in res.hits] == [h.id for h in plain.hits if h.id != e.id][:3]
        assert all(getattr(h, "weak", False) is False for h in res.hits)


def test_similar_with_k_past_the_collection(index):
    s = index.searcher
    res = iq.similar(s, s.entries[0].id, k=50)
    assert len(res.hits) == len(s) - 1
    assert any("other video" in n or "k=50" in n for n in res.notes)


def test_similar_errors_and_find_video(index):
    s = index.searcher
    e = s.entries[1]
    assert iq.find_video(s, e.id) == e.id
    assert iq.find_video(s, str(e.id)) == e.id
    assert iq.find_video(s, e.video_id) == e.id
    assert iq.find_video(s, "./" + e.video_id) == e.id
    for ref in (10_000, "nope.mp4", "", None, True):
        with pytest.raises(QueryError):
            iq.find_video(s, ref)
    with pytest.raises(QueryError, match="no video with id"):
        iq.similar(s, 10_000)
    with pytest.raises(QueryError, match="no video with id"):
        iq.similar(s, "3")  # ids are ints; find_video turns names into them
    with pytest.raises(QueryError, match="start must be"):
        iq.similar(s, e.id, start=-1)
    with pytest.raises(QueryError, match="k must be"):
        iq.similar(s, e.id, k=0)


def test_text_weak_cue_is_not_applied_to_image_or_example_queries(index):
    """The weak-match threshold is calibrated for text: a searcher that has one flags text hits, but
    image and more-like-this results carry no weak flag and no threshold."""
    s = index.searcher
    if not hasattr(s, "weak_threshold"):
        pytest.skip("this Searcher has no weak_threshold yet")
    old = s.weak_threshold
    s.weak_threshold = 10.0  # every score is below it
    try:
        assert all(h.weak for h in s.search("a red circle", k=3).hits)
        for res in (iq.search_image(s, _png(STILL), k=3), iq.similar(s, s.entries[0].id, k=3)):
            assert res.hits and not any(h.weak for h in res.hits)
            assert getattr(res, "weak_threshold", None) is None
    finally:
        s.weak_threshold = old


def test_similar_with_a_start_time(index):
    s = index.searcher
    e = s.entries[0]
    if "start" not in __import__("inspect").signature(s.vector).parameters:
        pytest.skip("this Searcher stores one row per video and takes no start")
    res = iq.similar(s, e.id, start=0, k=2)  # a whole-file video "starts" at 0
    assert e.id not in [h.id for h in res.hits] and "from 0 s" in res.notes[0]
    with pytest.raises(QueryError, match="no stored window starting at 99 s"):
        iq.similar(s, e.id, start=99)


def test_xpool_index_ranks_an_image_by_mean_pooled_rows(tmp_path):
    """X-Pool: the image's vector (its normalised CLIP image embedding) is compared with every video's
    mean-pooled first-stage row; no fusion re-rank, and the result says so."""
    from tiny_index import save_tiny

    make_videos(tmp_path / "synth", n=3, frames=8)
    ckpt = save_tiny(tmp_path / "xpool.safetensors", "xpool-tiny")
    build_index([tmp_path / "synth" / "videos"], tmp_path / "idx", ckpt, IndexOptions(**OPTS))
    s = Searcher.open(tmp_path / "idx")
    assert s.manifest["index_kind"] == "frames+rerank"
    data = _png(STILL)
    v = iq.encode_image(s, data)
    res = iq.search_image(s, data, k=3)
    assert any("not re-ranked" in n for n in res.notes)
    expected = sorted(((float(v @ s.vector(e.id)), e.id) for e in s.entries), reverse=True)
    assert [h.id for h in res.hits] == [i for _, i in expected]
    np.testing.assert_allclose([h.score for h in res.hits], [sc for sc, _ in expected], atol=1e-5)
    more = iq.similar(s, s.entries[0].id, k=2)
    assert len(more.hits) == 2 and s.entries[0].id not in [h.id for h in more.hits]
