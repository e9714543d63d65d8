"""DiDeMo (LocalizingMoments), read as paragraph-to-video retrieval.

Files under ROOT::

    train_data.json, val_data.json, test_data.json
                                [{"video": "<file name>", "description": "...", "times": [[s, e], ...],
                                  "annotation_id": ..., ...}, ...]
    videos/                     video files named like ``video`` (matched by stem, any extension)

Splits: ``train``, ``val``, ``test``. All descriptions of a video are joined with single spaces, in file
order, into ONE paragraph caption per video (the CLIP4Clip / PIG convention: the paragraph is the
query). The reader is chosen by name; nothing is inferred from a path containing "didemo".
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from .base import CaptionRecord, DataError, MediaIndex, Reader, build_split, read_json, register_reader


@register_reader
class DiDeMoReader(Reader):
    name = "didemo"
    description = "ROOT/{train,val,test}_data.json (LocalizingMoments), videos/; one paragraph per video"

    def splits(self, root: Path) -> list[str]:
        return [s for s in ("train", "val", "test") if (root / f"{s}_data.json").is_file()]

    def load(self, root: Path, split: str, video_root: Path | None = None):
        path = root / f"{split}_data.json"
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of {{'video', 'description'}} objects")
        sentences: OrderedDict[str, list[str]] = OrderedDict()
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "video" not in item or "description" not in item:
                raise DataError(f"{path}: item {i} lacks 'video' or 'description'")
            vid = os.path.splitext(str(item["video"]))[0]
            text = " ".join(str(item["description"]).split())
            if text:
                sentences.setdefault(vid, []).append(text)
            else:
                sentences.setdefault(vid, [])
        captions = [CaptionRecord(v, " ".join(s)) for v, s in sentences.items() if s]
        index = MediaIndex(self.video_folder(root, video_root))
        return build_split(split, list(sentences), captions, index, format=self.name, root=root)
