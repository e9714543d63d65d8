"""CLIP-ViP / official PIG JSONL: one line per video, ``{"clip_id": "video0", "text": str | [str]}``.

ROOT is either one ``.jsonl`` file (one split, named after the file stem) or a folder whose ``*.jsonl``
files (directly in ROOT or in ``ROOT/annotations/``) are the splits, e.g. ``train9k`` and ``test1ka``
as released. Videos are found by ``clip_id`` (any extension, any depth) under the first existing of
``<folder>/videos``, ``<folder>/../videos`` and ``<folder>`` itself, where ``<folder>`` is ROOT (or the
file's folder); ``--video-root`` overrides. A list-valued ``text`` gives several captions for the video.
Extra keys (``num_frame``, ...) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from .base import CaptionRecord, DataError, MediaIndex, Reader, build_split, read_jsonl, register_reader


def _split_files(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {root.stem: root}
    files: dict[str, Path] = {}
    for folder in (root, root / "annotations"):
        if folder.is_dir():
            for p in sorted(folder.glob("*.jsonl")):
                files.setdefault(p.stem, p)
    return files


def default_media_folder(root: Path, video_root: Path | None, default: str = "videos") -> Path:
    if video_root is not None:
        if not Path(video_root).is_dir():
            raise DataError(f"video folder {video_root} does not exist")
        return Path(video_root)
    base = root.parent if root.is_file() else root
    for cand in (base / default, base.parent / default):
        if cand.is_dir():
            return cand
    return base


@register_reader
class CLIPViPReader(Reader):
    name = "clipvip"
    description = (
        'ROOT = a .jsonl file or a folder of them ({"clip_id", "text": str|[str]} per line, one file per '
        "split, e.g. train9k.jsonl / test1ka.jsonl), videos/ beside them"
    )

    def splits(self, root: Path) -> list[str]:
        return list(_split_files(root))

    def load(self, root: Path, split: str, video_root: Path | None = None):
        path = _split_files(root)[split]
        ids: list[str] = []
        captions: list[CaptionRecord] = []
        for lineno, obj in read_jsonl(path):
            if "clip_id" not in obj or "text" not in obj:
                raise DataError(f"{path}:{lineno}: expected keys 'clip_id' and 'text'")
            vid = str(obj["clip_id"])
            texts = obj["text"] if isinstance(obj["text"], list) else [obj["text"]]
            ids.append(vid)
            captions.extend(CaptionRecord(vid, str(t).strip()) for t in texts)
        index = MediaIndex(default_media_folder(root, video_root))
        return build_split(split, ids, captions, index, format=self.name, root=root)
