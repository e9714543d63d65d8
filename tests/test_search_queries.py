"""Online search: every odd query gets a defined answer; ids (never paths) address videos; the CLI."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hybridtower.index import IndexOptions, QueryError, Searcher, build_index, clean_query
from tiny_index import make_videos, save_tiny

OPTS = dict(progress=False, batch_size=4, num_workers=0)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    make_videos(root / "synth", n=4)
    ckpt = save_tiny(root / "pig.safetensors")
    build_index([root / "synth" / "videos"], root / "idx", ckpt, IndexOptions(**OPTS))
    return {"root": root, "dir": root / "idx", "ckpt": ckpt, "searcher": Searcher.open(root / "idx")}


@pytest.mark.parametrize(
    "raw,cleaned",
    [
        ("a red ball", "a red ball"),
        ("  a \t red\n\nball  ", "a red ball"),
        ("a\x00red\x07ball\x1b[31m", "a red ball [31m"),
        ("zero\u200bwidth", "zerowidth"),
        ("ein roter Ball über dem Tisch", "ein roter Ball über dem Tisch"),
        ("赤いボールが跳ねる", "赤いボールが跳ねる"),
        ("a cat 🐈‍⬛ jumps", "a cat 🐈‍⬛ jumps"),
    ],
)
def test_clean_query(raw, cleaned):
    assert clean_query(raw)[0] == cleaned


@pytest.mark.parametrize(
    "raw,message",
    [("", "empty"), (None, "empty"), ("   \t\n ", "only whitespace"), ("\x00\x01\x7f", "control"),
     ("\u200b\u200b", "control or invisible"), (123, "must be text")],
)
def test_unanswerable_queries_raise_query_error(index, raw, message):
    with pytest.raises(QueryError, match=message):
        index["searcher"].search(raw, k=3)


def test_long_query_is_truncated_and_says_so(index):
    s = index["searcher"]
    long = " ".join(["a small red ball bounces on the floor"] * 10)
    res = s.search(long, k=2)
    assert res.truncated and res.num_tokens > s.context_length == 32
    assert any("the model reads only the first 32" in n for n in res.notes)
    assert len(res.hits) == 2
    # what is beyond the context changes nothing: the same ranking and scores as its first 30 tokens
    prefix_tokens = s.model.tokenize([long])
    assert prefix_tokens.shape[1] == 32 and int(prefix_tokens[0, -1]) == 49407  # ends with EOT
    huge = s.search("ball " * 5000, k=1)
    assert huge.truncated and any("first 1000 characters" in n for n in huge.notes)


def test_normal_queries(index):
    s = index["searcher"]
    res = s.search("a red ball bounces", k=3)
    assert not res.truncated and not res.notes and len(res.hits) == 3
    assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
    assert all(Path(h.path).is_file() and s.video_path(h.id) == Path(h.path) for h in res.hits)
    assert res.query == "a red ball bounces" and res.took_ms > 0
    for q in ("über ein Ball", "赤いボール", "🐈 cat"):
        assert len(s.search(q, k=2).hits) == 2
    control = s.search("a red\x00 ball\x1b bounces", k=3)
    assert control.query == "a red ball bounces" and any("control" in n for n in control.notes)
    assert [h.id for h in control.hits] == [h.id for h in res.hits]


@pytest.mark.parametrize("k", [0, -1, 1001, "5", 2.5, True, None])
def test_bad_k(index, k):
    with pytest.raises(QueryError, match="k must be"):
        index["searcher"].search("ball", k=k)


def test_k_larger_than_index(index):
    res = index["searcher"].search("ball", k=50)
    assert len(res.hits) == 4 and any("holds 4 video" in n for n in res.notes)


@pytest.mark.parametrize("bad", [-1, 4, 10**9, "0", "../etc/passwd", None, 1.5, "/etc/passwd"])
def test_video_path_only_for_indexed_ids(index, bad):
    assert index["searcher"].video_path(bad) is None


def test_video_path_known_ids(index):
    s = index["searcher"]
    assert sorted(s.video_path(i).name for i in range(len(s))) == sorted(p.name for p in (index["root"] / "synth" / "videos").iterdir())


def test_concurrent_searches_agree(index):
    s = index["searcher"]
    queries = ["a red ball", "blue square", "a green circle moves"] * 4
    expected = {q: [h.id for h in s.search(q, k=4).hits] for q in set(queries)}
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: (q, [h.id for h in s.search(q, k=4).hits]), queries))
    assert all(ids == expected[q] for q, ids in got)


def test_empty_index_answers_with_no_hits(index, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"nope")
    s = build_index([folder], tmp_path / "idx", index["ckpt"], IndexOptions(**OPTS))
    assert s.count == 0 and s.exit_code == 3
    res = Searcher.open(tmp_path / "idx").search("ball", k=5)
    assert res.hits == [] and "the index is empty" in res.notes


def test_search_cli(index, capsys):
    from hybridtower.cli.main import main

    assert main(["search", str(index["dir"]), "a red ball", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["hits"]) == 2 and out["index"]["count"] == 4 and out["index"]["model"] == "pig-tiny"
    assert {"id", "video_id", "path", "score"} <= set(out["hits"][0])
    assert main(["search", str(index["dir"]), "a red ball", "-k", "3"]) == 0
    text = capsys.readouterr().out
    assert text.count("video") >= 3 and "3 of 4 videos in" in text
    assert main(["search", str(index["dir"]), "   "]) == 2
    assert "only whitespace" in capsys.readouterr().err
    assert main(["search", str(index["root"] / "nope"), "ball"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["search", str(index["root"]), "ball"]) == 2
    assert "is not an index" in capsys.readouterr().err


def test_moved_checkpoint_is_a_clear_error(index, tmp_path):
    from hybridtower.index import IndexFormatError

    ck = tmp_path / "pig.safetensors"
    shutil.copy2(index["ckpt"], ck)
    idx = tmp_path / "idx"
    build_index([sorted((index["root"] / "synth" / "videos").iterdir())[0]], idx, ck, IndexOptions(**OPTS))
    ck.rename(tmp_path / "moved.safetensors")
    with pytest.raises(IndexFormatError, match="not there any more"):
        Searcher.open(idx)
    assert len(Searcher.open(idx, checkpoint=tmp_path / "moved.safetensors")) == 1
