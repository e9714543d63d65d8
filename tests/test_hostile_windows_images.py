"""Hostile input for the features of session 1: moment windows, image search / "more like this", previews,
the weak-match cue and export. Each test is a finding of an adversarial pass (it failed before its fix) or,
marked ``xfail(strict=True)``, one in a file owned elsewhere (the reason says what to change).

Everything runs on tiny generated data; every call that could block runs under ``within`` (a timeout)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blocking import within
from hybridtower.core.errors import ConfigError
from hybridtower.data.video import windows as W
from hybridtower.index import IndexOptions, QueryError, Searcher, build_index
from hybridtower.index import image_query as iq
from tiny_index import make_videos, write_ramp_video

OPTS = dict(progress=False, batch_size=8, num_workers=0)
REPO = Path(__file__).resolve().parents[1]


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _tiny_ckpt(path: Path) -> Path:
    from hybridtower import hub

    torch.manual_seed(0)
    return hub.save_model(hub.create_model("meanp-tiny").eval(), path)


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    """Three 64x64 clips (< 1 s: whole-file rows) and one 40 s video cut into 10 s windows every 5 s."""
    from hybridtower.data.synthetic.long import write_long_video

    root = tmp_path_factory.mktemp("hostile")
    make_videos(root / "synth", n=3, frames=8)
    lib = root / "synth" / "videos"
    write_long_video(lib / "long.mp4", 40, 10, 20, seed=1)
    ckpt = _tiny_ckpt(root / "m.safetensors")
    build_index([lib], root / "idx", ckpt, IndexOptions(**OPTS, window=10, stride=5))
    s = Searcher.open(root / "idx")
    long_id = iq.find_video(s, "long.mp4")
    short_id = next(e.id for e in s.entries if e.id != long_id)
    return types.SimpleNamespace(root=root, lib=lib, searcher=s, long_id=long_id, short_id=short_id,
                                 ckpt=ckpt)


# ----- images --------------------------------------------------------------------------------------
def test_16_bit_greyscale_png_keeps_its_picture():
    """PIL's convert("RGB") clips 16-bit greyscale to 255: a 16-bit scan was searched as a white page."""
    ramp = (np.arange(64, dtype=np.uint32)[None, :] * 1024).repeat(16, axis=0).astype(np.uint16)  # 0..64512
    img = iq.decode_image(_png(Image.fromarray(ramp)))
    grey = img.rgb[..., 0].astype(int)
    assert img.rgb.shape == (16, 64, 3) and (img.rgb[..., 0] == img.rgb[..., 2]).all()
    assert grey[0, 0] == 0 and grey[0, -1] >= 250 and 120 <= grey[0, 32] <= 135  # the ramp, scaled to 8 bits
    flt = iq.decode_image(_png(Image.fromarray(np.full((4, 4), 0.5, np.float32)), "TIFF"))  # float in [0, 1]
    assert 125 <= int(flt.rgb[0, 0, 0]) <= 130


def test_odd_images_decode_or_fail_cleanly():
    """1x1, CMYK, animated GIF, palette with transparency: decoded; SVG / PDF / EPS: refused by format."""
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    for data in (_png(Image.new("RGB", (1, 1), (9, 8, 7))), _png(Image.new("CMYK", (9, 5)), "JPEG"), buf.getvalue(),
                 _png(Image.new("LA", (3, 3)))):
        assert iq.decode_image(data).rgb.ndim == 3
    for data in (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', b"%PDF-1.4\n%\xe2\xe3\n",
                 b"%!PS-Adobe-3.0 EPSF-3.0\n"):
        with pytest.raises(QueryError, match="cannot be decoded"):
            iq.decode_image(data)


_WIDE = r"""
import dataclasses, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np, torch
from types import SimpleNamespace
from hybridtower import hub, encode
from hybridtower.index import image_query as iq
torch.manual_seed(0)
model = hub.create_model("meanp-tiny").eval()
base = encode.preprocess_for
encode.preprocess_for = lambda m: dataclasses.replace(base(m), resize_mode="shortest")  # open_clip's usual mode
stub = SimpleNamespace(model=model, device=torch.device("cpu"), dim=model.embed_dim)
rgb = np.zeros((1, 200000, 3), np.uint8)
rgb[:, 99000:101000] = 255
v = iq.encode_rgb(stub, rgb)
ref = iq.encode_rgb(stub, rgb[:, 99996:100004])  # the centre square the crop keeps
print("ok", round(float(v @ ref), 4))
"""


def test_extreme_aspect_image_does_not_allocate_gigabytes(tmp_path):
    """A 200000x1 image (a few hundred bytes as PNG, 0.2 MP: under every limit) under a "shortest" resize
    (open_clip's) made a S x 200000*S float copy: 9.8 GB at S = 64, 120 GB at 224, a crash or the OOM
    killer. Run under a 4 GB address-space limit, it must now encode, as the centre part the crop keeps."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _WIDE], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ok") and float(r.stdout.split()[1]) > 0.999


# ----- "more like this": references and start times -------------------------------------------------
def test_video_references_that_are_not_ids_are_query_errors(windowed):
    """'²' and '١٢' pass str.isdigit(); int('²') raised ValueError (a traceback from `search --like ²`), and a
    5000-digit id hit int()'s digit limit (ValueError again)."""
    s = windowed.searcher
    for ref in ("²", "⁵", "9" * 5000, "1" * 40, "\0", "١٢"):
        with pytest.raises(QueryError, match="no video with id"):
            iq.find_video(s, ref)


def test_like_by_any_path_to_the_indexed_file(windowed, tmp_path, monkeypatch):
    """An absolute path, a path from the current folder or a link to the indexed file names it; a link
    inside the folder to a file outside the index does not, and the error shows no absolute path."""
    s, lib = windowed.searcher, windowed.lib
    assert iq.find_video(s, str(lib / "long.mp4")) == windowed.long_id
    link = tmp_path / "shortcut.mp4"
    link.symlink_to(lib / "long.mp4")
    assert iq.find_video(s, str(link)) == windowed.long_id
    monkeypatch.chdir(lib.parent)
    assert iq.find_video(s, "videos/long.mp4") == windowed.long_id
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not indexed")
    (tmp_path / "lib").mkdir()
    trap = tmp_path / "lib" / "trap.mp4"
    trap.symlink_to(outside)
    for ref in (str(trap), str(outside), str(tmp_path / "gone.mp4"), os.fsdecode(str(tmp_path).encode() + b"/\xff.mp4")):
        with pytest.raises(QueryError) as exc:
            iq.find_video(s, ref)
        assert str(tmp_path) not in str(exc.value) and "/tmp" not in str(exc.value)


def test_start_inside_a_window_uses_the_window_that_contains_it(windowed):
    """Windows start at 0, 5, 10, ... s; --start 8 said "no stored window starting at 8 s" although two
    windows show 8 s. It now takes the one centred nearest 8 s (5-15 s) and says so."""
    s, vid = windowed.searcher, windowed.long_id
    res = iq.similar(s, vid, start=8, k=2)
    assert vid not in [h.id for h in res.hits]
    assert any("used the window 0:05-0:15" in n for n in res.notes), res.notes
    same = iq.similar(s, vid, start=5, k=2)  # what the note names
    assert [(h.id, round(h.score, 5)) for h in res.hits] == [(h.id, round(h.score, 5)) for h in same.hits]
    assert iq.similar(s, vid, start=40, k=1).hits  # the end of the file: its last window


@pytest.mark.parametrize("start, message", [
    (41, "past its end"), (1e300, "past its end"), (7200, "its windows cover 0:00-0:40"),
])
def test_start_past_the_end_is_a_clear_error(windowed, start, message):
    with pytest.raises(QueryError, match=message):
        iq.similar(windowed.searcher, windowed.long_id, start=start)


@pytest.mark.parametrize("start", [float("nan"), float("inf"), -1.0, "1e309", "12:30", "nan"])
def test_bad_start_values(windowed, start):
    with pytest.raises(QueryError, match="start must be"):
        iq.similar(windowed.searcher, windowed.long_id, start=start)


def test_start_on_a_short_video_says_it_has_no_windows(windowed):
    with pytest.raises(QueryError, match="whole-file vector"):
        iq.similar(windowed.searcher, windowed.short_id, start=3)
    assert iq.similar(windowed.searcher, windowed.short_id, start=0, k=1).hits  # 0: the whole file


def test_cli_like_with_hostile_references(windowed, capsys):
    from hybridtower.cli.main import main

    idx = str(windowed.root / "idx")
    for ref in ("²", "9" * 5000):
        assert within(60, main, ["search", idx, "--like", ref]) == 2
        err = capsys.readouterr().err
        assert "no video with id" in err and "Traceback" not in err
    assert within(60, main, ["search", idx, "--like", "long.mp4", "--start", "0:08", "--json"]) == 0
    assert "used the window 0:05-0:15" in capsys.readouterr().out


def test_start_clock_fields_out_of_range_are_refused():
    from hybridtower.cli.commands.search import parse_time

    for text in ("12:99", "1:75:00", "0:60", "1_000"):
        with pytest.raises(ValueError):
            parse_time(text)


# ----- windows ---------------------------------------------------------------------------------------
def test_window_indices_refuse_broken_headers():
    """0 frames sampled frame -1; fps 0 sampled frame 0 for every window; NaN fps raised a bare ValueError
    from int(nan) (no reason); NaN / inf stride divided by zero or looped on NaN."""
    with pytest.raises(ValueError, match="no frames"):
        W.window_indices(0, 10.0, 0.0, 10.0, 4, "uniform")
    for fps in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="frame rate"):
            W.window_indices(100, fps, 0.0, 10.0, 4, "uniform")
    with pytest.raises(ValueError, match="not a finite time range"):
        W.window_indices(100, 10.0, float("nan"), 10.0, 4, "uniform")
    for window, stride in ((10.0, 0.0), (10.0, float("nan")), (float("nan"), 5.0)):
        with pytest.raises(ValueError, match="stride"):
            W.plan_windows(100.0, window, stride)
    assert W.plan_windows(float("inf"), 10, 5) is None and W.plan_windows(-3, 10, 5) is None
    assert len(W.plan_windows(1e300, 10.0, 5.0)) == W.MAX_WINDOWS  # a header claiming eons stays bounded


def _lying_mkv(path: Path, claimed_s: float, secs: int = 5, fps: int = 10) -> Path:
    """A ``secs``-second Matroska file whose header claims ``claimed_s`` seconds."""
    import struct

    write_ramp_video(path, secs * fps, fps, "matroska")
    b = bytearray(path.read_bytes())
    i = b.find(b"\x44\x89")  # Segment Info / Duration (milliseconds at the default timecode scale)
    assert b[i + 2] in (0x84, 0x88)
    b[i + 3:i + (7 if b[i + 2] == 0x84 else 11)] = struct.pack(">f" if b[i + 2] == 0x84 else ">d", claimed_s * 1000)
    path.write_bytes(bytes(b))
    return path


def test_a_header_that_claims_a_longer_video_does_not_lose_the_file(tmp_path, windowed):
    lib = tmp_path / "lib"
    lib.mkdir()
    _lying_mkv(lib / "liar.mkv", claimed_s=100)
    summary = within(120, build_index, [lib], tmp_path / "idx", windowed.ckpt, IndexOptions(**OPTS, window=10, stride=10))
    assert summary.encoded == 1 and not summary.skipped, summary.skipped


def test_a_ten_hour_header_on_five_seconds_gets_the_real_windows_quickly(tmp_path, windowed):
    """Before: windows planned to the claimed end (MAX_WINDOWS of them), every one up to the real end
    decoded, then the file skipped. Now its packets are counted first: 4 windows to 5 s, and the same
    file whole (window 0) is read for what it holds too."""
    lib = tmp_path / "lib"
    lib.mkdir()
    _lying_mkv(lib / "liar.mkv", claimed_s=36000)
    t0 = time.monotonic()
    summary = within(60, build_index, [lib], tmp_path / "idx", windowed.ckpt, IndexOptions(**OPTS, window=2, stride=1))
    assert summary.encoded == 1 and not summary.skipped and summary.windows == 4, summary
    assert time.monotonic() - t0 < 30
    rows = Searcher.open(tmp_path / "idx").rows_of(0)
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, pytest.approx(5.0, abs=0.2))]
    whole = within(60, build_index, [lib], tmp_path / "whole", windowed.ckpt, IndexOptions(**OPTS, window=0))
    assert whole.encoded == 1 and not whole.skipped, whole.skipped


def test_a_header_that_says_zero_or_nothing_is_read_from_the_frames(tmp_path, windowed):
    lib = tmp_path / "lib"
    lib.mkdir()
    _lying_mkv(lib / "zero.mkv", claimed_s=0)
    summary = within(120, build_index, [lib], tmp_path / "idx", windowed.ckpt, IndexOptions(**OPTS, window=2, stride=1))
    assert summary.encoded == 1 and not summary.skipped
    rows = Searcher.open(tmp_path / "idx").rows_of(0)
    assert rows[0]["start"] == 0.0 and rows[-1]["end"] == pytest.approx(5.0, abs=0.2)


# ----- previews --------------------------------------------------------------------------------------
def _avi(path: Path, frames: int = 20) -> Path:
    from hybridtower.data.synthetic import write_video

    clip = np.full((frames, 32, 48, 3), 30, np.uint8)
    for i in range(frames):
        clip[i, 4:20, i:i + 16] = (200, 40, 40)
    write_video(clip, path, "avi", "mpeg4", 10)
    return path


@pytest.fixture()
def avi(tmp_path):
    from hybridtower.service.files import open_indexed
    from test_service_api import entry_of

    lib = tmp_path / "lib"
    lib.mkdir()
    path = _avi(lib / "old.avi")
    entry = entry_of(1, "old.avi", path)

    def opened():
        return open_indexed(1, entry, (str(lib),))

    return types.SimpleNamespace(path=path, entry=entry, lib=lib, open=opened)


def _frames_in(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _get(cache, avi, start=0.0):
    v = avi.open()
    try:
        return within(60, cache.get, v, None, start)
    finally:
        v.close()


def test_a_link_planted_in_the_preview_cache_is_never_served(avi, tmp_path):
    """Someone who can write the cache folder puts a link where a preview will be: it was served (the
    cache followed it), i.e. any file the server can read. Now it is removed and a real preview made."""
    from hybridtower.service.previews import PreviewCache

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"server secret " * 100)
    cache = PreviewCache(tmp_path / "p")
    v = avi.open()
    try:
        target = cache.path_for(cache._key(cache.fingerprint(v, None), 0.0))
        assert cache.cached(v, None, 0.0) is None
    finally:
        v.close()
    target.parent.mkdir(parents=True)
    target.symlink_to(secret)
    out = _get(cache, avi)
    assert not out.is_symlink() and b"server secret" not in out.read_bytes() and _frames_in(out) == 20
    assert secret.read_bytes().startswith(b"server secret")  # the link's target is untouched


def test_a_link_planted_in_the_preview_cache_is_not_served_over_http(avi, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hybridtower.service import create_app
    from test_service_previews import Fake

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"server secret " * 100)
    app = create_app(Fake({1: avi.path}), thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
    cache = app.state.previews
    v = avi.open()
    try:
        target = cache.path_for(cache._key(cache.fingerprint(v, None), 0.0))
    finally:
        v.close()
    target.parent.mkdir(parents=True)
    target.symlink_to(secret)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = within(60, c.get, "/videos/1/preview")
    assert r.status_code == 200 and b"server secret" not in r.content and r.content[4:8] == b"ftyp"


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_corrupt_cached_preview_is_made_again(avi, tmp_path, damage):
    """A half-written or damaged cache file (a crash of another process sharing the folder, a full disk,
    a user) was served as it was, forever. It is checked once per process and made again when bad."""
    from hybridtower.service.previews import PreviewCache

    good = _get(PreviewCache(tmp_path / "p"), avi)
    data = good.read_bytes()
    good.write_bytes({"empty": b"", "truncated": data[: len(data) * 2 // 3], "garbage": os.urandom(len(data))}[damage])
    fresh = PreviewCache(tmp_path / "p")  # a restarted server over the same folder
    out = _get(fresh, avi)
    assert out == good and fresh.generated == 1 and _frames_in(out) == 20
    v = avi.open()
    try:
        assert fresh.cached(v, None, 0.0) == out  # now known good: answered without a check
    finally:
        v.close()


def test_a_preview_from_past_the_end_is_refused_without_decoding(avi, tmp_path, monkeypatch):
    """from=3000 on a 2 s file decoded the whole file to find no frame; each new `from` did it again."""
    from hybridtower.service import previews as pv

    decoded = []
    real = pv._inspect
    monkeypatch.setattr(pv, "_inspect", lambda *a: decoded.append(1) or real(*a))
    cache = pv.PreviewCache(tmp_path / "p")
    with pytest.raises(pv.PreviewError, match=r"from 3000 s: the video is 2\.0 s long") as exc:
        _get(cache, avi, 3000.0)
    assert "/" not in str(exc.value).replace("video 1 (old.avi)", "")
    with pytest.raises(pv.PreviewError, match="2.0 s long"):
        _get(cache, avi, 3030.0)  # the probe is remembered: no second open
    assert len(decoded) == 1 and not list((tmp_path / "p").rglob("*.mp4"))


def test_an_unwritable_cache_is_not_blamed_on_the_video(avi, tmp_path):
    """A cache path that cannot be written (here: a file where the folder should be; a read-only or full
    disk alike) said the VIDEO 'cannot be decoded' and remembered that for 30 s, so the preview stayed
    refused after the folder was fixed."""
    from hybridtower.service.previews import PreviewCache, PreviewError

    blocked = tmp_path / "p"
    blocked.write_bytes(b"a file, not a folder")
    cache = PreviewCache(blocked)
    with pytest.raises(PreviewError, match="preview cache cannot be written") as exc:
        _get(cache, avi)
    assert "cannot be decoded" not in str(exc.value) and str(tmp_path) not in str(exc.value)
    blocked.unlink()
    assert _frames_in(_get(cache, avi)) == 20  # fixed: made at once


def test_cache_folder_behind_a_link_works(avi, tmp_path):
    from hybridtower.service.previews import PreviewCache

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out = _get(PreviewCache(tmp_path / "link"), avi)
    assert _frames_in(out) == 20 and list((tmp_path / "real").rglob("*.mp4"))


def test_two_requests_for_one_preview_make_it_once(avi, tmp_path):
    from hybridtower.service.previews import PreviewCache

    cache = PreviewCache(tmp_path / "p")
    outs, errors = [], []

    def one():
        try:
            outs.append(_get(cache, avi))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(outs)) == 1 and cache.generated == 1 and _frames_in(outs[0]) == 20
    assert [p.name for p in outs[0].parent.iterdir()] == [outs[0].name]  # no temporary file left


def test_making_a_preview_opens_the_file_once_and_remembers_its_probe(avi, tmp_path, monkeypatch):
    """get() then plan() opened the file twice (the transcoder, then the probe); the transcoder's open
    now hands its probe to the cache."""
    from hybridtower.service import previews as pv

    opens = []
    real = pv._open_container
    monkeypatch.setattr(pv, "_open_container", lambda v: opens.append(1) or real(v))
    cache = pv.PreviewCache(tmp_path / "p")
    _get(cache, avi)
    v = avi.open()
    try:
        plan = cache.plan(v, None, 0.0)
    finally:
        v.close()
    assert plan.kind == "preview" and len(opens) == 1


def test_a_source_changed_after_indexing_gets_no_preview(avi, tmp_path):
    from hybridtower.service.files import NotServable

    avi.path.write_bytes(avi.path.read_bytes()[:500])  # truncated: size differs
    with pytest.raises(NotServable, match="changed since it was indexed"):
        avi.open()
    avi.path.unlink()
    os.mkfifo(avi.path)  # a FIFO under the indexed name: refused without blocking
    with pytest.raises(NotServable) as exc:
        within(5, avi.open)
    assert str(tmp_path) not in str(exc.value)


# ----- export and calibration -------------------------------------------------------------------------
def test_export_into_the_index_folder_is_refused(windowed):
    from hybridtower.index.export import export_index

    idx = windowed.root / "idx"
    for out in (idx / "vectors.npy", idx / "segments" / "x.parquet", idx / "sub" / "x.npy"):
        with pytest.raises(ConfigError, match="outside INDEX_DIR"):
            export_index(idx, out)
    assert not list(idx.rglob("vectors*")) and not (idx / "sub").exists()


def test_export_write_failure_is_a_clear_error_and_keeps_the_earlier_export(windowed, tmp_path, monkeypatch):
    """A failure after the .npy was replaced left a new .npy beside the old .jsonl (rows of two exports);
    an unwritable OUT raised a bare FileNotFoundError naming the absolute temporary path."""
    from hybridtower.index import export as ex

    idx = windowed.root / "idx"
    ex.export_index(idx, tmp_path / "v.npy")
    before = {p.name: p.read_bytes() for p in tmp_path.glob("v.*")}
    real = Path.write_text

    def fail_jsonl(self, *a, **kw):
        if ".jsonl." in self.name or self.name.endswith(".jsonl"):
            raise OSError(28, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", fail_jsonl)
    monkeypatch.setattr(ex, "atomic_write_text", lambda p, t: fail_jsonl(Path(p), t), raising=False)
    with pytest.raises(ConfigError, match="No space left") as exc:
        ex.export_index(idx, tmp_path / "v.npy", overwrite=True)
    assert str(tmp_path) not in str(exc.value)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("v.*")} == before
    monkeypatch.undo()
    blocked = tmp_path / "file"
    blocked.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot write the export") as exc:
        ex.export_index(idx, blocked / "x.parquet")
    assert str(tmp_path) not in str(exc.value)


def test_export_existing_output_error_names_no_absolute_path(windowed, tmp_path):
    from hybridtower.index.export import export_index

    idx = windowed.root / "idx"
    export_index(idx, tmp_path / "v.parquet")
    with pytest.raises(ConfigError, match="v.parquet already exist") as exc:
        export_index(idx, tmp_path / "v.parquet")
    assert str(tmp_path) not in str(exc.value)


def test_calibration_on_degenerate_indexes():
    """One video / identical vectors: every caption scores the same, spread 0, the threshold is that
    score and a hit AT it is not weak; a wrong, NaN or string manifest value gives no threshold."""
    from hybridtower.index import calibration as cal

    info = cal.measure_weak_match(lambda texts: np.full(len(texts), 0.21))
    assert info["threshold"] == pytest.approx(0.21) and info["spread"] == 0.0
    assert not cal.is_weak(0.21, info["threshold"]) and cal.is_weak(0.2, info["threshold"])
    nan = cal.measure_weak_match(lambda texts: np.full(len(texts), np.nan))
    assert nan["threshold"] is None and "finite" in nan["reason"]
    for bad in ({"weak_match": "0.3"}, {"weak_match": float("nan")}, {"weak_match": {"threshold": [0.3]}},
                {"weak_match": {"threshold": None}}, {"weak_match": []}):
        assert cal.weak_threshold(bad) is None


# ----- serving: names and the thumbnail cache -----------------------------------------------------------
def _app(tmp_path, files):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hybridtower.service import create_app
    from test_service_previews import Fake

    app = create_app(Fake(files), thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
    return app, TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_a_file_name_that_is_not_utf8_is_served(tmp_path):
    """/videos/ID of 'caf\\xe9.avi' (Latin-1 bytes) answered 500: Starlette percent-encodes the
    Content-Disposition name and a surrogate escape cannot be encoded."""
    lib = tmp_path / "lib"
    lib.mkdir()
    path = Path(os.fsdecode(os.fsencode(str(lib)) + b"/caf\xe9.avi"))
    _avi(path)
    app, c = _app(tmp_path, {0: path})
    with c:
        r = within(30, c.get, "/videos/0")
        assert r.status_code == 200 and r.content == path.read_bytes()
        assert "caf%EF%BF%BD.avi" in r.headers["content-disposition"]
        assert within(30, c.get, "/videos/0/thumbnail").status_code == 200


@pytest.mark.parametrize("damage", ["link", "truncated", "text"])
def test_the_thumbnail_cache_serves_only_whole_jpegs_it_made(tmp_path, damage):
    """A link planted in the thumbnail cache (by default INDEX_DIR/thumbnails, a folder users edit) was
    followed and its target served as image/jpeg: any file the server can read. A half-written or
    damaged cache file was served as it was. Both are now removed and the thumbnail made again."""
    lib = tmp_path / "lib"
    lib.mkdir()
    path = _avi(lib / "a.avi")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"server secret\n")
    app, c = _app(tmp_path, {0: path})
    with c:
        good = c.get("/videos/0/thumbnail").content
        (cached,) = list((tmp_path / "t").rglob("*.jpg"))
        cached.unlink()
        if damage == "link":
            cached.symlink_to(secret)
        else:
            cached.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"not a jpeg at all")
        r = within(30, c.get, "/videos/0/thumbnail")
    assert r.status_code == 200 and r.content == good and b"server secret" not in r.content
    assert not cached.is_symlink() and cached.read_bytes() == good and secret.read_bytes() == b"server secret\n"


def test_a_preview_of_a_very_wide_video(tmp_path):
    """A 20000 x 16 stream (within the decoding limit) was scaled only by height, so the H.264 encoder
    refused 20000 columns and the answer blamed the video ("cannot be decoded")."""
    import av

    from hybridtower.service.files import open_indexed
    from hybridtower.service.previews import PreviewCache
    from test_service_api import entry_of

    lib = tmp_path / "lib"
    lib.mkdir()
    path = lib / "strip.avi"
    with av.open(str(path), "w") as c:
        st = c.add_stream("ffv1", rate=5)
        st.width, st.height, st.pix_fmt = 20000, 16, "yuv420p"
        for _ in range(3):
            for p in st.encode(av.VideoFrame.from_ndarray(np.full((16, 20000, 3), 90, np.uint8), format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    v = open_indexed(0, entry_of(0, "strip.avi", path), (str(lib),))
    try:
        out = within(60, PreviewCache(tmp_path / "p").get, v)
    finally:
        v.close()
    with av.open(str(out)) as c:
        assert c.streams.video[0].width <= 4 * 480 and sum(1 for _ in c.decode(video=0)) == 3


def test_like_a_folder_or_the_root_names_no_path(windowed):
    for ref in ("/", str(windowed.lib), "."):
        with pytest.raises(QueryError) as exc:
            within(10, iq.find_video, windowed.searcher, ref)
        assert str(windowed.lib) not in str(exc.value) and "''" not in str(exc.value)


def test_similar_over_http_with_hostile_start_values(windowed, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hybridtower.service import create_app

    app = create_app(windowed.searcher, thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
    vid = windowed.long_id
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        body = c.get(f"/similar/{vid}?start=8&k=2").json()
        assert any("used the window 0:05-0:15" in n for n in body["notes"]) and vid not in [h["id"] for h in body["hits"]]
        for start in ("41", "9999999", "-1", "nan", "inf", "1e309", "12:30", "0x10", "%00"):
            r = c.get(f"/similar/{vid}?start={start}")
            assert r.status_code == 400, (start, r.status_code)
            assert str(windowed.root) not in r.text and "/tmp" not in r.text
        r = c.get(f"/similar/{windowed.short_id}?start=3")
        assert r.status_code == 400 and "whole-file" in r.json()["detail"]
        assert c.get("/similar/99999999999999999999999").status_code == 404


def test_big_images_are_decoded_a_few_at_a_time(monkeypatch):
    """A 250 KB PNG of 80 MP takes ~350 MB to decode: 40 such uploads at once (the server's thread pool)
    needed ~14 GB. Images over BIG_DECODE_PIXELS are now decoded BIG_DECODE_SLOTS at a time."""
    from PIL import ImageOps

    data = _png(Image.new("RGB", (2500, 2000), (10, 200, 30)))  # 5 MP
    active, peak, lock = [0], [0], threading.Lock()
    real = ImageOps.exif_transpose

    def slow(im, *a, **kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        import time
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return real(im, *a, **kw)

    monkeypatch.setattr(ImageOps, "exif_transpose", slow)
    threads = [threading.Thread(target=iq.decode_image, args=(data,)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] == iq.BIG_DECODE_SLOTS == 2
    small = _png(Image.new("RGB", (64, 64)))
    assert iq.decode_image(small).rgb.shape == (64, 64, 3)


def test_segment_start_of_hostile_times():
    """inf raised OverflowError (math.floor); a moment past the end of a known-length video planned a
    segment after the end, whose preview then failed."""
    from hybridtower.service.previews import segment_start

    assert segment_start(float("inf"), 3600.0, 120.0) == 0.0 == segment_start(float("nan"), 3600.0, 120.0)
    assert segment_start(3600.0, 3600.0, 120.0) == 3570.0 and segment_start(-5.0, None, 120.0) == 0.0
    last = segment_start(1e7, 3600.0, 120.0)
    assert last < 3600.0 and 3600.0 - last <= 120.0 and last % 30 == 0
    assert segment_start(745.0, 3600.0, 120.0) == 720.0  # ordinary moments unchanged


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_is_not_blamed_on_the_video(avi, tmp_path, monkeypatch):
    """ENOSPC while muxing the preview said the video "cannot be decoded" and refused it for 30 s."""
    import contextlib

    from hybridtower.service import previews as pv

    @contextlib.contextmanager
    def full_disk(out):
        yield Path("/dev/full")  # every write fails with ENOSPC

    monkeypatch.setattr(pv, "atomic_path", full_disk)
    cache = pv.PreviewCache(tmp_path / "p")
    for _ in range(2):  # not remembered against the video: each request tries again
        with pytest.raises(pv.PreviewError, match="preview cache cannot be written") as exc:
            _get(cache, avi)
        assert "cannot be decoded" not in str(exc.value) and "/dev/full" not in str(exc.value)
    assert not cache._failed


def test_like_names_that_are_not_utf8_or_start_with_spaces(windowed, tmp_path):
    """search prints a Latin-1 name as 'caf\\xe9.mp4'; --like with that text found nothing. A name starting
    with a space was stripped before matching, so it could not be named at all."""
    import shutil

    lib = tmp_path / "lib"
    lib.mkdir()
    src = windowed.lib / "long.mp4"
    latin = os.fsdecode(b"caf\xe9.mp4")
    shutil.copy2(src, lib / latin)
    shutil.copy2(src, lib / " lead.mp4")
    build_index([lib], tmp_path / "idx", windowed.ckpt, IndexOptions(**OPTS, window=0))
    s = Searcher.open(tmp_path / "idx")
    ids = {e.video_id: e.id for e in s.entries}
    assert iq.find_video(s, latin) == ids[latin]  # the exact (surrogate-escaped) name, as argv gives it
    assert iq.find_video(s, "caf\\xe9.mp4") == ids[latin]  # as search shows it
    assert iq.find_video(s, " lead.mp4") == ids[" lead.mp4"]


_WIDE_FRAMES = r"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np
from hybridtower.data.video.transforms import PreprocessConfig, preprocess_frames
frames = np.zeros((4, 2, 60000, 3), np.uint8)  # a 60000 x 2 stream: 0.12 MP a frame, under MAX_FRAME_PIXELS
out = preprocess_frames(frames, PreprocessConfig(image_size=64, resize_mode="shortest"))
print("ok", tuple(out.shape))
"""


def test_index_frames_of_extreme_aspect_do_not_allocate_gigabytes():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _WIDE_FRAMES], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-1000:]


def test_image_paths_that_are_devices_or_fifos_do_not_block(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "character device"), (fifo, "FIFO"), (tmp_path, "folder")):
        with pytest.raises(QueryError, match=what) as exc:
            within(5, iq.read_image_file, path)
        assert str(tmp_path) not in str(exc.value)



def test_start_against_rows_with_nan_times_and_absurd_clock_values():
    """A searcher whose rows carry NaN times (whole files, as stored) must not make the error itself fail."""
    fake = types.SimpleNamespace(rows_of=lambda vid: [{"start": float("nan"), "end": float("nan")}])
    with pytest.raises(QueryError, match="whole-file vector"):
        iq._window_containing(fake, 1, 5.0)
    two = types.SimpleNamespace(rows_of=lambda vid: [{"start": 0.0, "end": 10.0}, {"start": 5.0, "end": 12.0}])
    with pytest.raises(QueryError, match=r"1e\+300 s is past its end \(its windows cover 0:00-0:12\)"):
        iq._window_containing(two, 1, 1e300)


def test_image_search_over_http_with_hostile_images(windowed, tmp_path):
    pytest.importorskip("fastapi")
    import struct
    import zlib

    from fastapi.testclient import TestClient

    from hybridtower.service import create_app

    def header_only(w, h):
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))

    ok = {
        "1x1": _png(Image.new("RGB", (1, 1), (200, 10, 10))),
        "16-bit": _png(Image.fromarray(np.full((16, 16), 40000, np.uint16))),
        "strip": _png(Image.new("L", (30000, 1), 128)),
    }
    bad = {
        "bomb": header_only(30000, 30000),
        "81 MP": header_only(9000, 9000),
        "truncated": _png(Image.new("RGB", (64, 64), (1, 2, 3)))[:70],
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
    }
    app = create_app(windowed.searcher, thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        for name, data in ok.items():
            r = within(60, lambda d=data: c.post("/search/image?k=2", content=d, headers={"Content-Type": "image/png"}))
            assert r.status_code == 200 and len(r.json()["hits"]) == 2, (name, r.text[:300])
        for name, data in bad.items():
            r = within(60, lambda d=data: c.post("/search/image", content=d, headers={"Content-Type": "image/png"}))
            assert r.status_code == 400 and r.json()["error"] == "invalid_image", (name, r.text[:300])
            assert str(windowed.root) not in r.text and "/tmp" not in r.text


def _edit_manifest(index_dir: Path, **changes) -> None:
    """Change manifest keys and re-sign it (a user who knows the digest rule, or a tool that wrote it)."""
    import json

    from hybridtower.index import store

    m = store.read_manifest(index_dir)
    m.update(changes)
    m.pop("digest")
    m["digest"] = store.manifest_digest(m)
    (index_dir / "manifest.json").write_text(json.dumps(m))


def test_a_malformed_weak_match_gives_no_cue_and_search_still_works(windowed, tmp_path):
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(windowed.root / "idx", idx)
    for bad in ("broken", {"threshold": "0.3"}, {"threshold": None}, [], 7):
        _edit_manifest(idx, weak_match=bad)
        s = Searcher.open(idx)
        res = s.search("a red circle", k=2)
        assert s.weak_threshold is None and res.weak_threshold is None and not any(h.weak for h in res.hits)
    from hybridtower.index.export import export_index

    export_index(idx, tmp_path / "v.npy")  # export does not depend on the cue
    assert (tmp_path / "v.jsonl").read_text().count("\n") == s.num_rows


def test_an_index_rerun_repairs_a_malformed_weak_match(windowed, tmp_path):
    import shutil

    from hybridtower.index import store

    idx = tmp_path / "idx"
    shutil.copytree(windowed.root / "idx", idx)
    good = store.read_manifest(idx)["weak_match"]
    for bad in ("broken", {"threshold": "0.3"}, {"threshold": float("nan")}, {"rule": "x"}):
        _edit_manifest(idx, weak_match=bad)
        summary = within(120, build_index, [windowed.lib], idx, None, IndexOptions(**OPTS))
        assert summary.up_to_date
        assert store.read_manifest(idx)["weak_match"] == good and Searcher.open(idx).weak_threshold is not None
    from hybridtower.index.calibration import weak_threshold

    assert Searcher.open(idx).weak_threshold == weak_threshold({"weak_match": good}) == good["threshold"]


def test_an_index_rerun_keeps_a_recorded_reason_and_a_good_threshold(windowed, tmp_path, monkeypatch):
    """Not measured again: an index whose calibration recorded why it could not be measured, or that has a
    threshold (an up-to-date re-run costs no text encoding)."""
    import shutil

    from hybridtower.index import builder, store
    from hybridtower.index.weak_match import needs_calibration

    idx = tmp_path / "idx"
    shutil.copytree(windowed.root / "idx", idx)
    calls = []
    monkeypatch.setattr(builder, "calibrate_weak_match", lambda *a: calls.append(a))
    unmeasured = {"threshold": None, "reason": "only 3 caption(s) got a finite score (empty index?); need 8"}
    for kept in (store.read_manifest(idx)["weak_match"], unmeasured):
        _edit_manifest(idx, weak_match=kept)
        assert within(120, build_index, [windowed.lib], idx, None, IndexOptions(**OPTS)).up_to_date
        assert store.read_manifest(idx)["weak_match"] == kept and not calls
    again = [{}, None, {"weak_match": []}, {"weak_match": {"threshold": True}},
             {"weak_match": {"threshold": float("inf")}}, {"weak_match": {"threshold": None, "reason": ""}}]
    kept = [{"weak_match": {"threshold": 0.2}}, {"weak_match": {"threshold": 0}}, {"weak_match": unmeasured}]
    assert [needs_calibration(m) for m in again + kept] == [True] * len(again) + [False] * len(kept)
