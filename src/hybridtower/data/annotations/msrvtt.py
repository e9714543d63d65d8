"""MSR-VTT in the CLIP4Clip layout (also used by X-Pool, TeachCLIP, ProST).

Files under ROOT::

    MSRVTT_data.json            {"videos": [{"video_id", "split": train|validate|test, ...}],
                                 "sentences": [{"video_id", "caption", "sen_id"}]}
    MSRVTT_train.9k.csv         one column ``video_id``: the 9k training ids of split 1k-A
    MSRVTT_train.7k.csv         one column ``video_id``: official train + val (7,010 ids)
    MSRVTT_JSFUSION_test.csv    ``key,vid_key,video_id,sentence``: 1k-A test, one caption per video
    videos/                     video files named by id, any extension, any depth (``--video-root`` to move)

Splits: ``train-9k`` / ``train-7k`` (CSV ids, all their captions from MSRVTT_data.json),
``train-full`` / ``val`` / ``test-3k`` (MSRVTT_data.json ``split`` = train / validate / test; test-3k is
the 2,990-video x 20-caption full test), ``test-1ka`` (the JSFusion CSV alone; MSRVTT_data.json is not
needed for it). A split is listed when the files it needs exist.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .base import CaptionRecord, DataError, MediaIndex, Reader, build_split, read_json, register_reader

DATA_JSON = "MSRVTT_data.json"
CSV_9K = "MSRVTT_train.9k.csv"
CSV_7K = "MSRVTT_train.7k.csv"
CSV_TEST = "MSRVTT_JSFUSION_test.csv"

_NEEDS = {
    "train-9k": (CSV_9K, DATA_JSON),
    "train-7k": (CSV_7K, DATA_JSON),
    "train-full": (DATA_JSON,),
    "val": (DATA_JSON,),
    "test-1ka": (CSV_TEST,),
    "test-3k": (DATA_JSON,),
}
_OFFICIAL = {"train-full": "train", "val": "validate", "test-3k": "test"}


def read_id_csv(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "video_id" not in rows[0]:
        raise DataError(f"{path}: expected a header with a 'video_id' column")
    return [r["video_id"].strip() for r in rows if r.get("video_id", "").strip()]


def read_jsfusion_csv(path: Path) -> list[CaptionRecord]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        text_col = "sentence" if "sentence" in fields else "sentences" if "sentences" in fields else None
        if "video_id" not in fields or text_col is None:
            raise DataError(f"{path}: expected header key,vid_key,video_id,sentence; got {fields}")
        return [CaptionRecord(r["video_id"].strip(), r[text_col].strip()) for r in reader]


@register_reader
class MSRVTTReader(Reader):
    name = "msrvtt"
    description = (
        "ROOT/MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, MSRVTT_JSFUSION_test.csv, "
        "videos/ (by id, any extension); splits train-9k, train-7k, train-full, val, test-1ka, test-3k"
    )

    def splits(self, root: Path) -> list[str]:
        return [s for s, files in _NEEDS.items() if all((root / f).is_file() for f in files)]

    def check_split(self, root: Path, split):
        if split in _NEEDS:
            absent = [f for f in _NEEDS[split] if not (root / f).is_file()]
            if absent:
                raise DataError(f"msrvtt split {split!r} needs {absent} under {root}, which is missing")
            return split
        return super().check_split(root, split)

    def load(self, root: Path, split: str, video_root: Path | None = None):
        index = MediaIndex(self.video_folder(root, video_root))
        if split == "test-1ka":
            captions = read_jsfusion_csv(root / CSV_TEST)
            ids = [c.video_id for c in captions]
            return build_split(split, ids, captions, index, format=self.name, root=root)
        data = read_json(root / DATA_JSON)
        if not isinstance(data, dict) or "sentences" not in data or "videos" not in data:
            raise DataError(f"{root / DATA_JSON}: expected an object with 'videos' and 'sentences'")
        if split in ("train-9k", "train-7k"):
            ids = read_id_csv(root / (CSV_9K if split == "train-9k" else CSV_7K))
        else:
            want = _OFFICIAL[split]
            ids = [v["video_id"] for v in data["videos"] if v.get("split") == want]
        wanted = set(ids)
        captions = [
            CaptionRecord(s["video_id"], str(s["caption"]).strip())
            for s in data["sentences"]
            if s.get("video_id") in wanted
        ]
        return build_split(split, ids, captions, index, format=self.name, root=root)
