"""Text-only load for text search: ``hub.load_model(parts="text")`` reads only the text tower (and what
scoring needs), ``Searcher.open`` uses it when the index records per-part weight digests, the video tower is
loaded (and verified) on first need, and every tensor that is used is verified against the index."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_index import make_videos, save_tiny

from hybridtower import hub
from hybridtower.index import IndexMismatchError, IndexOptions, Searcher, build_index, identity
from hybridtower.index.store import manifest_digest

OPTS = dict(progress=False, batch_size=2, num_workers=0)
QUERIES = ("a red ball bounces", "a blue square", "something moving left")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("textonly")
    vids = make_videos(root / "data", n=3)
    out = {"root": root, "folder": vids[0].parent}
    for preset in ("pig-tiny", "xpool-tiny"):
        ckpt = save_tiny(root / f"{preset}.safetensors", preset, seed=1)
        build_index([vids[0].parent], root / f"idx-{preset}", ckpt, IndexOptions(**OPTS))
        out[preset] = (ckpt, root / f"idx-{preset}")
    return out


@pytest.fixture(autouse=True)
def _fresh_cache():
    identity._CACHE.clear()  # each test loads its checkpoints itself
    yield
    identity._CACHE.clear()


def _manifest(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text())


def _write_manifest(index: Path, m: dict) -> None:
    m["digest"] = manifest_digest(m)
    (index / "manifest.json").write_text(json.dumps(m))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tampered(ckpt: Path, out: Path, which: str) -> Path:
    """A copy of ``ckpt`` with one tensor of the text tower (``which="text"``) or of the video tower
    changed (same names, shapes and metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    prefix = "text_encoder." if which == "text" else "video_encoder."
    name = next(k for k in sorted(state) if k.startswith(prefix) and state[k].is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] += 0.25
    save_file(state, str(out), metadata=meta)
    return out


def _results(searcher: Searcher) -> list:
    return [[(h.id, round(h.score, 5)) for h in searcher.search(q, k=3).hits] for q in QUERIES]


@pytest.mark.parametrize("preset", ["pig-tiny", "xpool-tiny"])
def test_load_by_parts_reads_only_the_text_part(built, preset, monkeypatch):
    """No byte of the video tower is read; the text part equals the full load; adopting the rest makes
    the model equal, tensor for tensor, to ``load_model``."""
    import safetensors

    ckpt, _ = built[preset]
    read: list[str] = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **kw):
            self._f = real(*a, **kw)

        def __enter__(self):
            self._f.__enter__()
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self._f.get_tensor(name)

        def __getattr__(self, name):
            return getattr(self._f, name)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    model = hub.load_model(ckpt, parts="text")
    monkeypatch.undo()
    full = hub.load_model(ckpt)
    text = hub.text_part_keys(model)
    assert hub.is_partial(model) and sorted(read) == sorted(text)
    assert "logit_scale" in text and any(k.startswith("text_encoder.") for k in text)
    assert any(k.startswith("fusion.") for k in text) == (preset == "xpool-tiny")  # X-Pool re-ranks with it
    own, ref = model.state_dict(), full.state_dict()
    assert set(own) == set(ref)
    for k, v in own.items():
        assert v.is_meta == (k not in text), k
        if k in text:
            assert torch.equal(v, ref[k]), k
    tokens = full.tokenize(list(QUERIES))
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), full.encode_text(tokens))
    hub.adopt_rest(model, hub.read_rest(model))
    assert not hub.is_partial(model)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    frames = torch.rand(1, model.cfg.video.num_frames, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_video(frames), full.encode_video(frames))


def test_bad_parts_and_open_clip_models_load_whole(built):
    ckpt, _ = built["pig-tiny"]
    with pytest.raises(ValueError, match="parts"):
        hub.load_model(ckpt, parts="video")


@pytest.mark.parametrize("preset,old_kind", [("pig-tiny", "none"), ("xpool-tiny", "none"), ("pig-tiny", "rule")])
def test_searcher_opens_text_only_and_answers_as_a_whole_model(built, preset, old_kind, tmp_path):
    """A new index opens text-only; an index built before per-part digests (none in its manifest), or with
    digests under another rule, opens with the whole model and the full weights check, as before; both give
    the same hits."""
    ckpt, index = built[preset]
    m = _manifest(index)["model"]
    assert identity.recorded_parts(m) and m["weights_parts"]["rule"] == identity.PARTS_RULE
    new = Searcher.open(index)
    assert hub.is_partial(new.model)
    got = _results(new)
    old = _copy(index, tmp_path / "old")
    manifest = _manifest(old)
    if old_kind == "none":
        del manifest["model"]["weights_parts"]
    else:
        manifest["model"]["weights_parts"]["rule"] = "text-v1"
    _write_manifest(old, manifest)
    identity._CACHE.clear()
    legacy = Searcher.open(old)
    assert not hub.is_partial(legacy.model)
    assert _results(legacy) == got
    # a model kept whole in the cache also answers a text-only open (no second load)
    again = Searcher.open(index)
    assert again.model is legacy.model and _results(again) == got


def test_a_tampered_text_tensor_is_refused_on_open(built, tmp_path):
    ckpt, index = built["pig-tiny"]
    bad = _tampered(ckpt, tmp_path / "bad.safetensors", "text")
    with pytest.raises(IndexMismatchError, match="text tower") as err:
        Searcher.open(index, checkpoint=bad)
    assert "text tower" in str(err.value).splitlines()[0]
    # an index without per-part digests refuses it too (full weights check)
    old = _copy(index, tmp_path / "old")
    manifest = _manifest(old)
    del manifest["model"]["weights_parts"]
    _write_manifest(old, manifest)
    with pytest.raises(IndexMismatchError, match="weights_sha256"):
        Searcher.open(old, checkpoint=bad)


def test_a_tampered_video_tensor_is_refused_when_the_video_tower_loads(built, tmp_path):
    """Text search reads only the (verified) text tower, so it answers; the first use of the video tower
    (image search) reads and verifies the rest and refuses it, leaving the model text-only."""
    from hybridtower.index import image_query

    ckpt, index = built["pig-tiny"]
    good = _results(Searcher.open(index))
    identity._CACHE.clear()
    bad = _tampered(ckpt, tmp_path / "bad.safetensors", "video")
    s = Searcher.open(index, checkpoint=bad)
    assert _results(s) == good
    with pytest.raises(IndexMismatchError, match="video tower"):
        s.full_model()
    assert hub.is_partial(s.model)
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(IndexMismatchError, match="video tower"):
        image_query.encode_rgb(s, rgb)
    # the same model made whole through another index's searcher is still checked against this index
    identity._CACHE.clear()
    ok = Searcher.open(index)
    ok.full_model()
    assert not hub.is_partial(ok.model)


def test_full_model_is_loaded_once_from_many_threads(built, monkeypatch):
    ckpt, index = built["pig-tiny"]
    s = Searcher.open(index)
    calls = []
    real = hub.read_rest
    monkeypatch.setattr(hub, "read_rest", lambda m: calls.append(1) or real(m))
    got, errors = [], []
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            got.append(s.full_model())
            s.search("a red ball", k=2)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and all(m is s.model for m in got) and not hub.is_partial(s.model)
    full = hub.load_model(ckpt)
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in s.model.state_dict().items())


def test_image_search_materialises_and_matches_a_whole_model(built, tmp_path):
    from hybridtower.index import image_query

    _, index = built["pig-tiny"]
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    s = Searcher.open(index)
    assert hub.is_partial(s.model)
    v = image_query.encode_rgb(s, rgb)
    assert not hub.is_partial(s.model)
    old = _copy(index, tmp_path / "old")
    manifest = _manifest(old)
    del manifest["model"]["weights_parts"]
    _write_manifest(old, manifest)
    identity._CACHE.clear()
    whole = Searcher.open(old)
    assert not hub.is_partial(whole.model)
    np.testing.assert_array_equal(v, image_query.encode_rgb(whole, rgb))


def test_part_digest_is_the_same_on_one_thread_and_sees_every_byte(built, monkeypatch):
    import os

    ckpt, _ = built["pig-tiny"]
    state = hub.load_model(ckpt).state_dict()
    many = identity.tensors_sha256(state)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert identity.tensors_sha256(state) == many
    name = sorted(state)[-1]
    changed = dict(state, **{name: state[name].clone()})
    changed[name].view(-1)[-1] += 1e-3
    assert identity.tensors_sha256(changed) != many
    renamed = {("x" + k if k == name else k): v for k, v in state.items()}
    assert identity.tensors_sha256(renamed) != many
