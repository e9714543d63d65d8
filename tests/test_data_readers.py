"""Each annotation reader on small fixture files written in its real format."""

import json
import pickle

import pytest

from hybridtower.data.annotations import DataError, list_formats, list_splits, load_split, parse_data_spec


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # readers only look for files; decoding is tested elsewhere
    return path


@pytest.fixture()
def msrvtt_root(tmp_path):
    root = tmp_path / "msrvtt"
    root.mkdir()
    videos = [{"video_id": f"video{i}", "split": s, "id": i} for i, s in enumerate(["train"] * 4 + ["validate"] + ["test"] * 3)]
    sentences = []
    for v in videos:
        for k in range(3):
            sentences.append({"video_id": v["video_id"], "caption": f"caption {k} of {v['video_id']}", "sen_id": len(sentences)})
    (root / "MSRVTT_data.json").write_text(json.dumps({"info": {}, "videos": videos, "sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\nvideo3\nvideo4\n")
    (root / "MSRVTT_train.7k.csv").write_text("video_id\nvideo0\nvideo1\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr5,video5,a man sings\nret1,msr6,video6,a dog runs\nret2,msr7,video7,a cat sleeps\n"
    )
    for i in range(8):
        if i == 3:
            continue  # video3 missing
        ext = {0: "mp4", 1: "webm", 2: "avi"}.get(i, "mkv")
        _touch(root / "videos" / ("all" if i % 2 else "") / f"video{i}.{ext}")
    _touch(root / "videos" / "video0.avi")  # duplicate stem: .mp4 is preferred
    return root


def test_msrvtt_splits_and_counts(msrvtt_root):
    spec = f"msrvtt:{msrvtt_root}"
    assert list_splits(spec) == ["train-9k", "train-7k", "train-full", "val", "test-1ka", "test-3k"]
    tr = load_split(spec, "train-9k")
    assert [v.video_id for v in tr.videos] == [f"video{i}" for i in range(5)]
    assert len(tr.captions) == 15
    assert tr.missing == ["video3"]
    paths = {v.video_id: v.path for v in tr.videos}
    assert paths["video0"].name == "video0.mp4"
    assert paths["video1"].name == "video1.webm" and paths["video1"].parent.name == "all"
    assert paths["video3"] is None
    # captions of the missing video are kept and reported, not dropped
    s = tr.summary()
    assert s["videos_missing"] == 1 and s["captions_of_missing_videos"] == 3
    assert len(tr.available().captions) == 12
    assert len(load_split(spec, "train-7k").videos) == 2
    assert [v.video_id for v in load_split(spec, "val").videos] == ["video4"]
    t3 = load_split(spec, "test-3k")
    assert len(t3.videos) == 3 and len(t3.captions) == 9
    assert t3.caption_video_indices() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    t1 = load_split(spec, "test-1ka")
    assert [(c.video_id, c.text) for c in t1.captions] == [("video5", "a man sings"), ("video6", "a dog runs"), ("video7", "a cat sleeps")]


def test_msrvtt_1ka_works_without_data_json_and_reports_missing_file(msrvtt_root):
    (msrvtt_root / "MSRVTT_data.json").unlink()
    spec = f"msrvtt:{msrvtt_root}"
    assert list_splits(spec) == ["test-1ka"]
    assert len(load_split(spec, "test-1ka").captions) == 3
    with pytest.raises(DataError, match="MSRVTT_data.json"):
        load_split(spec, "train-9k")


def test_msrvtt_video_root_override(msrvtt_root, tmp_path):
    other = tmp_path / "elsewhere"
    _touch(other / "video5.mp4")
    t1 = load_split(f"msrvtt:{msrvtt_root}", "test-1ka", video_root=other)
    assert t1.missing == ["video6", "video7"]


def test_clipvip_jsonl_folder_and_file(tmp_path):
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train9k.jsonl").write_text(
        json.dumps({"clip_id": "video0", "text": ["a", "b"]}) + "\n" + json.dumps({"clip_id": "video1", "text": ["c"]}) + "\n"
    )
    (root / "annotations" / "test1ka.jsonl").write_text(json.dumps({"clip_id": "video2", "text": "d"}) + "\n")
    _touch(root / "videos" / "all" / "video0.mp4")
    _touch(root / "videos" / "all" / "video2.webm")
    assert sorted(list_splits(f"clipvip:{root}")) == ["test1ka", "train9k"]
    tr = load_split(f"clipvip:{root}", "train9k")
    assert [(c.video_id, c.text) for c in tr.captions] == [("video0", "a"), ("video0", "b"), ("video1", "c")]
    assert tr.missing == ["video1"]
    te = load_split(f"clipvip:{root / 'annotations' / 'test1ka.jsonl'}")  # one file = one split
    assert te.name == "test1ka" and te.videos[0].path.name == "video2.webm"


def test_clipvip_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"clip_id": "a", "text": "t"}\n{"clip": "b"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:2"):
        load_split(f"clipvip:{p}")


def _msvd_lists(root):
    (root / "train_list.txt").write_text("vidA_1_5\nvidB_2_9\n")
    (root / "val_list.txt").write_text("vidC_0_3\n")
    (root / "test_list.txt").write_text("vidD_4_8\n")
    _touch(root / "videos" / "vidA_1_5.avi")
    _touch(root / "videos" / "vidD_4_8.mp4")


def test_msvd_json(tmp_path):
    root = tmp_path / "msvd"
    root.mkdir()
    _msvd_lists(root)
    caps = {"vidA_1_5": ["a dog", "a puppy"], "vidB_2_9": ["x"], "vidC_0_3": ["y", "z"], "vidD_4_8": ["w"] * 3}
    (root / "captions_msvd.json").write_text(json.dumps(caps))
    assert list_splits(f"msvd:{root}") == ["train", "val", "test"]
    tr = load_split(f"msvd:{root}", "train")
    assert tr.summary()["captions"] == 3 and tr.missing == ["vidB_2_9"]
    assert load_split(f"msvd:{root}", "test").summary()["captions_per_video"]["max"] == 3


def test_msvd_raw_captions_pickle(tmp_path):
    root = tmp_path / "msvd"
    root.mkdir()
    _msvd_lists(root)
    caps = {"vidA_1_5": [["a", "dog", "runs"], ["the", "dog"]], "vidB_2_9": [["x"]], "vidC_0_3": [["y"]], "vidD_4_8": [["w"]]}
    with open(root / "raw-captions.pkl", "wb") as fh:
        pickle.dump(caps, fh)
    tr = load_split(f"msvd:{root}", "train")
    assert [c.text for c in tr.captions] == ["a dog runs", "the dog", "x"]


def test_msvd_pickle_with_objects_is_refused(tmp_path):
    root = tmp_path / "msvd"
    root.mkdir()
    _msvd_lists(root)
    with open(root / "raw-captions.pkl", "wb") as fh:
        pickle.dump({"vidA_1_5": [DataError("boom")]}, fh)
    with pytest.raises(DataError, match="only plain"):
        load_split(f"msvd:{root}", "train")


def test_vatex_with_and_without_lists(tmp_path):
    root = tmp_path / "vatex"
    root.mkdir()
    train = [{"videoID": "abc_000010_000020", "enCap": ["one", "two"], "chCap": ["x"]}]
    val = [{"videoID": "def_000001_000011", "enCap": ["three"]}, {"videoID": "ghi_000002_000012", "enCap": ["four", "five"]}]
    (root / "vatex_training_v1.0.json").write_text(json.dumps(train))
    (root / "vatex_validation_v1.0.json").write_text(json.dumps(val))
    _touch(root / "videos" / "abc_000010_000020.mp4")
    assert list_splits(f"vatex:{root}") == ["train", "val"]
    tr = load_split(f"vatex:{root}", "train")
    assert [c.text for c in tr.captions] == ["one", "two"] and not tr.missing
    assert load_split(f"vatex:{root}", "val").summary()["captions"] == 3
    (root / "test_list.txt").write_text("ghi_000002_000012\n")
    (root / "train_list.txt").write_text("abc_000010_000020\ndef_000001_000011\n")
    assert list_splits(f"vatex:{root}") == ["train", "test"]
    te = load_split(f"vatex:{root}", "test")
    assert [c.text for c in te.captions] == ["four", "five"]
    assert load_split(f"vatex:{root}", "train").summary()["captions"] == 3


def test_didemo_joins_sentences_into_one_paragraph(tmp_path):
    root = tmp_path / "didemo"
    root.mkdir()
    anns = [
        {"video": "111@N00_222_abc.mov", "description": "a girl  waves ", "times": [[0, 0]], "annotation_id": 1},
        {"video": "333@N00_444_def.mov", "description": "a car passes", "times": [[1, 2]], "annotation_id": 2},
        {"video": "111@N00_222_abc.mov", "description": "she jumps", "times": [[3, 3]], "annotation_id": 3},
    ]
    (root / "test_data.json").write_text(json.dumps(anns))
    _touch(root / "videos" / "111@N00_222_abc.mp4")  # re-encoded: found by stem
    te = load_split(f"didemo:{root}", "test")
    assert [(c.video_id, c.text) for c in te.captions] == [
        ("111@N00_222_abc", "a girl waves she jumps"),
        ("333@N00_444_def", "a car passes"),
    ]
    assert te.missing == ["333@N00_444_def"]
    assert te.summary()["captions_per_video"] == {"min": 1, "mean": 1.0, "max": 1}


def test_generic_jsonl(tmp_path):
    p = tmp_path / "mine" / "captions.jsonl"
    p.parent.mkdir()
    rows = [
        {"video": "clips/a.mp4", "caption": "first"},
        {"video": "clips/a.mp4", "caption": "second"},
        {"video": "clips/b.mp4", "caption": "third"},
        {"video": "clips/c.mp4", "caption": "fourth"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _touch(p.parent / "clips" / "a.mp4")
    _touch(p.parent / "clips" / "b.webm")  # re-encoded
    d = load_split(f"jsonl:{p}")
    assert d.name == "all"
    assert [v.video_id for v in d.videos] == ["clips/a.mp4", "clips/b.mp4", "clips/c.mp4"]
    assert d.videos[1].path.name == "b.webm"
    assert d.missing == ["clips/c.mp4"] and len(d.captions) == 4
    assert load_split(f"jsonl:{p.parent}").summary()["videos"] == 3  # folder -> captions.jsonl


def test_generic_jsonl_splits_and_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(
        json.dumps({"video": "a.mp4", "caption": "x", "split": "train"}) + "\n" + json.dumps({"video": "b.mp4", "caption": "y", "split": "test"}) + "\n"
    )
    assert list_splits(f"jsonl:{p}") == ["train", "test", "all"]
    assert [v.video_id for v in load_split(f"jsonl:{p}", "test").videos] == ["b.mp4"]
    with pytest.raises(DataError, match="several splits"):
        load_split(f"jsonl:{p}")
    with pytest.raises(DataError, match="no split 'val'"):
        load_split(f"jsonl:{p}", "val")
    p.write_text(json.dumps({"video": "a.mp4", "text": "x"}) + "\n")
    with pytest.raises(DataError, match=r"c.jsonl:1.*caption"):
        load_split(f"jsonl:{p}")


def test_images_reader(tmp_path):
    p = tmp_path / "images.jsonl"
    p.write_text(json.dumps({"image": "im/1.png", "caption": "a red circle"}) + "\n")
    _touch(tmp_path / "im" / "1.png")
    d = load_split(f"images:{tmp_path}")
    assert d.format == "images" and d.videos[0].path.name == "1.png" and not d.missing


def test_data_spec_parsing():
    assert parse_data_spec("msrvtt:datasets/msrvtt")[0] == "msrvtt"
    assert str(parse_data_spec("jsonl:a:b.jsonl")[1]) == "a:b.jsonl"
    with pytest.raises(DataError, match="FORMAT:ROOT"):
        parse_data_spec("datasets/msrvtt")
    with pytest.raises(DataError, match="known formats"):
        parse_data_spec("msrvt:x")
    with pytest.raises(DataError, match="does not exist"):
        load_split("msvd:/nonexistent/path", "test")
    assert set(list_formats()) == {"msrvtt", "clipvip", "msvd", "vatex", "didemo", "jsonl", "images"}
