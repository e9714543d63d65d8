"""Decoding: every container the generator writes, seek == sequential, VFR, short, rotation, broken input."""

import pickle
from fractions import Fraction

import av
import numpy as np
import pytest

from hybridtower.data.synthetic import VIDEO_FORMATS, render_frames, sample_scene, write_video
from hybridtower.data.video import (
    VideoDecodeError,
    decode_frames,
    probe_video,
    read_all_frames,
    read_frames,
)


def _bars(n, h=48, w=64):
    """Frame k has gray level 10 + 20 k (identifiable after lossy coding) and a moving bar."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for k in range(n):
        frames[k] = 10 + (20 * k) % 230
    return frames


def _level(frame) -> int:
    return int(round((float(np.median(frame)) - 10) / 20))


@pytest.mark.parametrize("ext,fmt,codec", VIDEO_FORMATS)
def test_every_synth_container_decodes(tmp_path, ext, fmt, codec):
    rng = np.random.default_rng(0)
    scene = sample_scene(rng, 12)
    frames = render_frames(scene, 96, 64)
    path = tmp_path / f"clip.{ext}"
    write_video(frames, path, fmt, codec, 10)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (96, 64, 12)
    assert abs(info.fps - 10) < 1e-6
    out = read_frames(path, 12)
    assert out.shape == (12, 64, 96, 3) and out.dtype == np.uint8
    # lossy, yuv420 colour: still close to what was rendered
    assert np.abs(out.astype(int) - frames.astype(int)).mean() < 6
    assert np.array_equal(read_all_frames(path), out)


@pytest.mark.parametrize("ext,fmt,codec", [("mp4", "mp4", "libx264"), ("avi", "avi", "mpeg4"), ("webm", "webm", "libvpx-vp9")])
def test_seek_matches_sequential_on_long_video(tmp_path, ext, fmt, codec):
    path = tmp_path / f"long.{ext}"
    n = 240
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.codec_context.gop_size = 20
    if codec == "libvpx-vp9":
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
    for k, arr in enumerate(_bars(n)):
        f = av.VideoFrame.from_ndarray(arr, format="rgb24")
        f.pts = k
        for p in stream.encode(f):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)
    container.close()
    seek = read_frames(path, 12, seek=True, seek_min_gap=0.2)
    seq = read_frames(path, 12, seek=False)
    assert np.array_equal(seek, seq)
    expected = [(10 + 20 * i) % 230 for i in [10, 30, 50, 70, 90, 110, 130, 150, 170, 190, 210, 230]]
    assert [int(round(float(np.median(f)))) for f in seek] == pytest.approx(expected, abs=3)
    assert np.array_equal(decode_frames(path, [230, 10, 10]), seek[[11, 0, 0]])


def test_short_video_repeats_frames(tmp_path):
    path = tmp_path / "short.mp4"
    write_video(_bars(3), path, "mp4", "libx264", 10)
    out = read_frames(path, 12)
    assert out.shape[0] == 12
    assert [_level(f) for f in out] == [0] * 4 + [1] * 4 + [2] * 4


def test_variable_frame_rate_samples_by_time(tmp_path):
    path = tmp_path / "vfr.mkv"
    pts_ms = [0, 40, 80, 120, 160, 200, 1000, 1040, 2000, 2040, 2080, 3000]
    container = av.open(str(path), "w", format="matroska")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.options = {"crf": "10"}
    stream.codec_context.time_base = Fraction(1, 1000)
    for k, arr in enumerate(_bars(len(pts_ms))):
        f = av.VideoFrame.from_ndarray(arr, format="rgb24")
        f.pts, f.time_base = pts_ms[k], Fraction(1, 1000)
        for p in stream.encode(f):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)
    container.close()
    info = probe_video(path)
    assert info.duration > 2.9
    out = read_frames(path, 6, "uniform")
    # targets spread over time: the frame displayed at each target time (not the 6 first frames)
    fps, n = info.fps, info.num_frames
    targets = [info.start_time + ((2 * k + 1) * n // 12) / fps for k in range(6)]
    half = 0.5 / fps
    want = [max(i for i, p in enumerate(pts_ms) if p / 1000 <= t + half) for t in targets]
    assert [_level(f) for f in out] == want
    assert len(set(want)) >= 3 and max(want) >= 9  # the later, sparse frames are reached
    assert np.array_equal(out, read_frames(path, 6, "uniform", seek=False))


def test_rotation_metadata_is_applied(tmp_path):
    path = tmp_path / "rot.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
    stream.set_display_rotation(90)
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, 48:] = 255  # white block on the right
    for k in range(4):
        f = av.VideoFrame.from_ndarray(arr, format="rgb24")
        f.pts = k
        for p in stream.encode(f):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)
    container.close()
    info = probe_video(path)
    assert info.rotation == 90 and info.display_size == (32, 64)
    out = read_frames(path, 2)
    assert out.shape == (2, 64, 32, 3)
    # counter-clockwise by 90 degrees: the right edge becomes the top
    assert out[0, :10].mean() > 200 and out[0, -20:].mean() < 50


# ---- broken inputs: one error type naming the file and the reason --------------------------


def _good_mp4(path):
    write_video(_bars(12), path, "mp4", "libx264", 10)
    return path


def _expect(path, reason_part):
    with pytest.raises(VideoDecodeError) as exc:
        read_frames(path, 12)
    err = exc.value
    assert err.path == str(path)
    assert reason_part in err.reason
    # the message names the file by its base name, never the full path
    assert f"video {path.name}:" in str(err) and str(path.parent) not in str(err) and err.reason in str(err)
    return err


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.mp4", "does not exist")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    _expect(p, "empty")


def test_truncated_mp4(tmp_path):
    good = _good_mp4(tmp_path / "good.mp4").read_bytes()
    p = tmp_path / "trunc.mp4"
    p.write_bytes(good[: len(good) // 2])
    _expect(p, "truncated")


def test_truncated_webm_with_header_intact(tmp_path):
    path = tmp_path / "t.webm"
    write_video(_bars(60, 64, 96), path, "webm", "libvpx-vp9", 10)
    data = path.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    _expect(cut, "truncated")


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    _expect(p, "not a readable video")


def test_audio_only_file_has_no_video_stream(tmp_path):
    p = tmp_path / "a.mka"
    c = av.open(str(p), "w", format="matroska")
    s = c.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 8000, 0
    for pk in s.encode(frame):
        c.mux(pk)
    for pk in s.encode():
        c.mux(pk)
    c.close()
    _expect(p, "no video stream")


def test_unknown_codec(tmp_path):
    good = tmp_path / "g.mkv"
    write_video(_bars(12), good, "matroska", "libx264", 10)
    data = good.read_bytes()
    assert b"V_MPEG4/ISO/AVC" in data
    bad = tmp_path / "codec.mkv"
    bad.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_ZZZZZ/ISO/ZZZ"))
    _expect(bad, "codec")


def test_zero_frames(tmp_path):
    p = tmp_path / "zero.avi"
    c = av.open(str(p), "w", format="avi")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()  # header with a video stream, then no frame at all
    c.close()
    _expect(p, "zero")


def test_error_survives_pickling(tmp_path):
    err = VideoDecodeError(tmp_path / "x.mp4", "file is empty (0 bytes)")
    back = pickle.loads(pickle.dumps(err))
    assert back.path == err.path and back.reason == err.reason and str(back) == str(err)


# --- a header that overstates the video (issue 12): what the index reads counts the packets ---


def _lying_mp4(path, claimed_times: int = 20):
    """A 5 s MP4 whose movie and media headers (mvhd, mdhd) claim ``claimed_times`` as long."""
    import struct

    write_video(_bars(50, 32, 32), path, "mp4", "mpeg4", 10)
    b = bytearray(path.read_bytes())
    for box in (b"mvhd", b"mdhd"):
        i = b.find(box)
        assert b[i + 4] == 0  # version 0: 32-bit timescale at +16, duration at +20
        b[i + 20:i + 24] = struct.pack(">I", struct.unpack(">I", b[i + 20:i + 24])[0] * claimed_times)
    path.write_bytes(bytes(b))
    return path


def test_a_matroska_header_that_overstates_is_counted_by_the_index_reader(tmp_path, monkeypatch):
    import random

    from hybridtower.data.video import decode as D
    from test_hostile_windows_images import _lying_mkv

    liar = _lying_mkv(tmp_path / "liar.mkv", claimed_s=36000)  # 5 s of video, a '10 h' header
    honest = _lying_mkv(tmp_path / "honest.mkv", claimed_s=5)
    assert probe_video(liar).duration == pytest.approx(36000) and not probe_video(liar).frames_exact
    counted = []
    real_count = D._count_packets
    monkeypatch.setattr(D, "_count_packets", lambda *a: counted.append(1) or real_count(*a))
    # classed as long by its header: counted before its windows are planned
    frames, info = D.read_frames_or_probe(liar, 12, "uniform", None, 2.0)
    assert frames is None and info.duration == pytest.approx(5.0) and info.num_frames == 50 and info.frames_exact
    assert len(counted) == 1
    # long by its header, short in truth: sampled like the honest file, same random state
    for window in (30.0, 0.0):
        for mode in ("uniform", "random"):
            got, info = D.read_frames_or_probe(liar, 12, mode, random.Random(3), window)
            want = read_frames(honest, 12, mode, random.Random(3))
            assert info.duration == pytest.approx(5.0) and np.array_equal(got, want), (window, mode)
    # training / evaluation (read_frames) keep refusing it: a lying header looks like a file cut short
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_frames(liar, 12)
    # files whose header is right pay nothing: no packet count
    counted.clear()
    D.read_frames_or_probe(honest, 12, "uniform", None, 30.0)
    D.read_frames_or_probe(honest, 12, "uniform", None, 0.0)
    assert D.read_frames_or_probe(_good_mp4(tmp_path / "g.mp4"), 12, "uniform", None, 0.5)[0] is None
    assert not counted


def test_an_mp4_header_that_overstates_is_not_believed(tmp_path):
    """MP4 has an exact frame count, and FFmpeg takes the stream's duration from its sample table, not
    from the movie / media headers: a header claiming 20x the length changes nothing."""
    from hybridtower.data.video import decode as D

    liar = _lying_mp4(tmp_path / "liar.mp4")
    info = probe_video(liar)
    assert info.frames_exact and info.num_frames == 50 and info.duration == pytest.approx(5.0)
    frames, info = D.read_frames_or_probe(liar, 12, "uniform", None, 10.0)
    assert frames is not None and frames.shape[0] == 12
