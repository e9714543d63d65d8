"""MSVD (YouTube clips, about 40 captions per video).

Files under ROOT::

    captions_msvd.json          {video_id: [caption, ...]}  (X-Pool's JSON), or
    raw-captions.pkl            {video_id: [[token, ...], ...]}  (CLIP4Clip; tokens joined with spaces)
    train_list.txt, val_list.txt, test_list.txt   one video id per line (1,200 / 100 / 670)
    videos/                     video files named by id, any extension (``--video-root`` to move)

Splits: ``train``, ``val``, ``test`` (those whose list file exists). The pickle is read with an
unpickler that only accepts plain dicts, lists and strings.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from .base import CaptionRecord, DataError, MediaIndex, Reader, build_split, read_json, read_lines, register_reader


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # refuse every class: only builtin containers/strings are allowed
        raise DataError(f"raw-captions.pkl refers to {module}.{name}; only plain dicts/lists/strings are accepted")


def load_msvd_captions(root: Path) -> dict[str, list[str]]:
    js, pk = root / "captions_msvd.json", root / "raw-captions.pkl"
    if js.is_file():
        data = read_json(js)
        if not isinstance(data, dict):
            raise DataError(f"{js}: expected an object mapping video id to a list of captions")
        return {k: [str(c).strip() for c in (v if isinstance(v, list) else [v])] for k, v in data.items()}
    if pk.is_file():
        try:
            with open(pk, "rb") as fh:
                data = _PlainUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataError(f"cannot read {pk}: {exc}") from None
        if not isinstance(data, dict):
            raise DataError(f"{pk}: expected a dict video id -> list of captions")
        out = {}
        for k, caps in data.items():
            out[str(k)] = [" ".join(c) if isinstance(c, (list, tuple)) else str(c) for c in caps]
        return out
    raise DataError(f"msvd: neither {js.name} nor {pk.name} found under {root}")


@register_reader
class MSVDReader(Reader):
    name = "msvd"
    description = (
        "ROOT/captions_msvd.json or raw-captions.pkl, {train,val,test}_list.txt, videos/ (by id); "
        "splits train, val, test"
    )

    def splits(self, root: Path) -> list[str]:
        return [s for s in ("train", "val", "test") if (root / f"{s}_list.txt").is_file()]

    def load(self, root: Path, split: str, video_root: Path | None = None):
        caps = load_msvd_captions(root)
        ids = read_lines(root / f"{split}_list.txt")
        captions = [CaptionRecord(v, c) for v in ids for c in caps.get(v, [])]
        index = MediaIndex(self.video_folder(root, video_root))
        return build_split(split, ids, captions, index, format=self.name, root=root)
