"""VATEX (English captions; 10 per video).

Files under ROOT::

    vatex_training_v1.0.json, vatex_validation_v1.0.json, (optional) vatex_public_test_english_v1.1.json
                                [{"videoID": "<youtube id>_<start>_<end>", "enCap": [10 captions], ...}]
    train_list.txt, val_list.txt, test_list.txt   (optional) one videoID per line, e.g. the common
                                25,991 / 1,500 / 1,500 protocol (TeachCLIP, CLIP4Clip)
    videos/                     video files named by videoID, any extension

Splits: with list files, ``train``/``val``/``test`` from the lists and captions from every VATEX JSON
found; without them, ``train`` = the training JSON and ``val`` = the validation JSON (``test`` too if the
public-test JSON with English captions is present). Chinese captions are ignored.
"""

from __future__ import annotations

from pathlib import Path

from .base import CaptionRecord, DataError, MediaIndex, Reader, build_split, read_json, read_lines, register_reader

_JSONS = {
    "train": "vatex_training_v1.0.json",
    "val": "vatex_validation_v1.0.json",
    "test": "vatex_public_test_english_v1.1.json",
}


def _read(path: Path) -> list[tuple[str, list[str]]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of {{'videoID', 'enCap'}} objects")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "videoID" not in item:
            raise DataError(f"{path}: item {i} has no 'videoID'")
        caps = item.get("enCap") or []
        out.append((str(item["videoID"]), [str(c).strip() for c in caps]))
    return out


@register_reader
class VATEXReader(Reader):
    name = "vatex"
    description = (
        "ROOT/vatex_training_v1.0.json, vatex_validation_v1.0.json (English 'enCap'), optional "
        "{train,val,test}_list.txt, videos/ (by videoID)"
    )

    def _has_lists(self, root: Path) -> bool:
        return any((root / f"{s}_list.txt").is_file() for s in _JSONS)

    def splits(self, root: Path) -> list[str]:
        if self._has_lists(root):
            return [s for s in _JSONS if (root / f"{s}_list.txt").is_file()]
        return [s for s, f in _JSONS.items() if (root / f).is_file()]

    def load(self, root: Path, split: str, video_root: Path | None = None):
        index = MediaIndex(self.video_folder(root, video_root))
        if self._has_lists(root):
            caps: dict[str, list[str]] = {}
            for f in _JSONS.values():
                if (root / f).is_file():
                    for vid, c in _read(root / f):
                        caps.setdefault(vid, []).extend(c)
            if not caps:
                raise DataError(f"vatex: no VATEX caption JSON ({list(_JSONS.values())}) under {root}")
            ids = read_lines(root / f"{split}_list.txt")
        else:
            items = _read(root / _JSONS[split])
            ids = [vid for vid, _ in items]
            caps = {}
            for vid, c in items:
                caps.setdefault(vid, []).extend(c)
        captions = [CaptionRecord(v, c) for v in dict.fromkeys(ids) for c in caps.get(v, [])]
        return build_split(split, ids, captions, index, format=self.name, root=root)
