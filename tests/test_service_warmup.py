"""service.warmup: warm-up encodes at the sizes asked, a frozen heap, errors stop the start-up."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from hybridtower.service import warmup


class FakeSearcher:
    def __len__(self):
        return 0

    def __init__(self, fail: bool = False):
        self.calls: list[list[str]] = []
        self.fail = fail

    def encode_queries(self, texts):
        if self.fail:
            raise RuntimeError("model broken")
        self.calls.append(list(texts))
        return np.zeros((len(texts), 4), np.float32)


@pytest.fixture
def unfreeze():
    yield
    gc.unfreeze()


def test_prepare_warms_batch_one_and_the_largest_and_freezes(unfreeze):
    s = FakeSearcher()
    keep = [object() for _ in range(100)]  # alive across the call: frozen
    info = warmup.prepare_to_serve(s, max_batch=16)
    assert [len(c) for c in s.calls] == [1, 16] and info["warm_batch_sizes"] == [1, 16]
    assert len(set(s.calls[1])) == 16  # distinct texts
    assert info["frozen_objects"] == gc.get_freeze_count() > len(keep)
    assert not gc.get_objects(2) or len(gc.get_objects(2)) < info["frozen_objects"]  # full collections walk less
    gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_prepare_without_freeze_and_without_encode_queries(unfreeze):
    s = FakeSearcher()
    info = warmup.prepare_to_serve(s, None, freeze=False)
    assert [len(c) for c in s.calls] == [1] and info["frozen_objects"] == 0 and gc.get_freeze_count() == 0

    class Plain:
        searched = []

        def search(self, q, k=10):
            self.searched.append((q, k))

    p = Plain()
    assert warmup.warm_up_encoder(p, (1, 8)) == [1] and p.searched == [(warmup.WARM_TEXT, 1)]


def test_a_model_that_cannot_encode_stops_the_start_up():
    with pytest.raises(RuntimeError, match="model broken"):
        warmup.prepare_to_serve(FakeSearcher(fail=True), 8, freeze=False)


def test_real_searcher_warm_up_returns_its_vectors_shape(tmp_path, unfreeze):
    """With a real tiny searcher: warm-up runs the real encoder at 1 and 4 (no error, the searcher still works)."""
    from tiny_index import make_videos, save_tiny

    from hybridtower.index import IndexOptions, build_index
    from hybridtower.index.searcher import Searcher

    videos = make_videos(tmp_path / "clips", n=3)
    ckpt = save_tiny(tmp_path / "m.safetensors")
    build_index([videos[0].parent], tmp_path / "idx", str(ckpt), IndexOptions(progress=False, num_workers=0))
    s = Searcher.open(tmp_path / "idx")
    before = s.search("a red ball", k=3)
    info = warmup.prepare_to_serve(s, max_batch=4)
    assert info["warm_batch_sizes"] == [1, 4] and info["frozen_objects"] > 10_000
    after = s.search("a red ball", k=3)
    assert [h.id for h in after.hits] == [h.id for h in before.hits]


@pytest.mark.parametrize("extra, expect", [([], 32), (["--no-batching"], None), (["--max-batch", "8"], 8)])
def test_serve_prepares_before_it_prints_its_address(tmp_path, monkeypatch, unfreeze, extra, expect):
    """`hybridtower serve` warms the encoder at its batcher's largest batch and freezes the heap before it
    serves (so the address it prints means ready)."""
    from hybridtower.cli.main import main
    from hybridtower.service import server

    calls = []
    monkeypatch.setattr(warmup, "prepare_to_serve", lambda s, n: calls.append(("prepare", n)) or {})
    monkeypatch.setattr(server, "serve_forever", lambda app, sock, **kw: calls.append("serve"))
    import hybridtower.cli.commands.serve as serve_cmd
    import hybridtower.service as service

    monkeypatch.setattr(service, "create_app", lambda searcher, **kw: object())

    monkeypatch.setattr(serve_cmd, "open_searcher", lambda *a: FakeSearcher())
    index = tmp_path / "idx"
    assert main(["serve", str(index), "--port", "0", "--preview-cache", str(tmp_path / "previews"), *extra]) == 0
    assert calls == [("prepare", expect), "serve"]


def test_serve_threads_sets_torchs_threads_and_refuses_zero(tmp_path, monkeypatch, unfreeze):
    import torch

    from hybridtower.cli.main import main
    from hybridtower.service import server

    import hybridtower.cli.commands.serve as serve_cmd
    import hybridtower.service as service

    monkeypatch.setattr(warmup, "prepare_to_serve", lambda s, n: {})
    monkeypatch.setattr(server, "serve_forever", lambda app, sock, **kw: None)
    monkeypatch.setattr(service, "create_app", lambda searcher, **kw: object())
    monkeypatch.setattr(serve_cmd, "open_searcher", lambda *a: FakeSearcher())
    before = torch.get_num_threads()
    try:
        args = [str(tmp_path / "idx"), "--port", "0", "--preview-cache", str(tmp_path / "previews")]
        assert main(["serve", *args, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["serve", *args, "--threads", "0"]) == 2
    finally:
        torch.set_num_threads(before)
