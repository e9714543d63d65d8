"""Generic JSONL for users' own data: one line per caption.

``{"video": "relative/path.mp4", "caption": "text"}`` with optional ``"video_id"`` (default: the
``video`` path as written) and optional ``"split"``. ROOT is the ``.jsonl`` file (or a folder holding
``captions.jsonl``). Paths are relative to the file's folder, or to ``--video-root``. If the exact file
is absent but a file with the same stem and another video extension sits in the same folder (a
re-encoded collection), that one is used. Several lines may name the same video (several captions).

Splits: when any line has ``"split"``, the split names are those values (lines without one belong to
no split) and ``all`` means every line; otherwise the only split is ``all``.
"""

from __future__ import annotations

from pathlib import Path

from ..video.decode import VIDEO_EXTENSIONS
from .base import CaptionRecord, DataError, MediaIndex, Reader, SplitData, build_split, read_jsonl, register_reader


def _jsonl_file(root: Path, default_name: str) -> Path:
    if root.is_dir():
        path = root / default_name
        if not path.is_file():
            raise DataError(f"{root} is a folder without {default_name}; pass the .jsonl file itself")
        return path
    return root


class PathJsonlReader(Reader):
    media_key = "video"
    default_name = "captions.jsonl"
    extensions = VIDEO_EXTENSIONS

    def _rows(self, root: Path) -> tuple[Path, list[tuple[int, dict]]]:
        path = _jsonl_file(root, self.default_name)
        rows = read_jsonl(path)
        for lineno, obj in rows:
            if not isinstance(obj.get(self.media_key), str) or not isinstance(obj.get("caption"), str):
                raise DataError(
                    f'{path}:{lineno}: expected {{"{self.media_key}": relative/path, "caption": text}} '
                    f"(string values), got keys {sorted(obj)}"
                )
        return path, rows

    def splits(self, root: Path) -> list[str]:
        _, rows = self._rows(root)
        names = list(dict.fromkeys(str(o["split"]) for _, o in rows if "split" in o))
        return names + ["all"] if names else ["all"]

    def load(self, root: Path, split: str, video_root: Path | None = None) -> SplitData:
        path, rows = self._rows(root)
        base = Path(video_root) if video_root is not None else path.parent
        if video_root is not None and not base.is_dir():
            raise DataError(f"video folder {video_root} does not exist")
        ids: list[str] = []
        rel: dict[str, str] = {}
        captions: list[CaptionRecord] = []
        for lineno, obj in rows:
            if split != "all" and str(obj.get("split")) != split:
                continue
            media = obj[self.media_key]
            vid = str(obj.get("video_id") or media)
            if rel.setdefault(vid, media) != media:
                raise DataError(f"{path}:{lineno}: video_id {vid!r} already names {rel[vid]!r}, not {media!r}")
            ids.append(vid)
            captions.append(CaptionRecord(vid, obj["caption"].strip()))
        indexes: dict[Path, MediaIndex] = {}

        def resolve(vid: str) -> Path | None:
            p = base / rel[vid]
            if p.is_file():
                return p
            folder = p.parent
            if folder not in indexes:  # same stem, other extension (non-recursive: this folder only)
                idx = MediaIndex(None, self.extensions)
                if folder.is_dir():
                    rank = {e: i for i, e in enumerate(self.extensions)}
                    cands = sorted((q for q in folder.iterdir() if q.suffix.lower() in rank), key=lambda q: (q.stem, rank[q.suffix.lower()]))
                    for q in cands:
                        idx.by_stem.setdefault(q.stem, q)
                indexes[folder] = idx
            return indexes[folder].by_stem.get(p.stem)

        return build_split(split, ids, captions, MediaIndex(base, ()), format=self.name, root=path, resolve=resolve)


@register_reader
class JsonlReader(PathJsonlReader):
    name = "jsonl"
    description = 'ROOT = a .jsonl file, one line per caption: {"video": relative/path, "caption": text[, "video_id", "split"]}'
