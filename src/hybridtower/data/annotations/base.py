"""Common records, the reader registry and ``--data FORMAT:ROOT`` resolution.

Every benchmark format has its own small reader (one module each) that turns its annotation files into
the same records. A reader is chosen by *name* (``msrvtt``, ``msvd``, ...), never guessed from a path.
Video files are matched to ids by file stem whatever the extension, searching the video folder
recursively, so re-encoded collections (``video7.webm`` instead of ``video7.mp4``) work unchanged.
A caption whose video file is missing is kept and reported (``SplitData.missing``), never dropped
silently; :meth:`SplitData.available` returns the subset with files when a caller wants to skip them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...core.errors import HybridTowerError
from ..video.decode import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class DataError(HybridTowerError):
    """An annotation file or dataset spec is missing or malformed (the message names the file)."""


@dataclass
class VideoRecord:
    video_id: str
    path: Path | None  # None: no file for this id under the video folder (reported, see SplitData.missing)


@dataclass
class CaptionRecord:
    video_id: str
    text: str


@dataclass
class SplitData:
    """One split of one dataset: its videos (in a stable order), captions and missing video ids."""

    name: str
    videos: list[VideoRecord]
    captions: list[CaptionRecord]
    missing: list[str] = field(default_factory=list)  # ids of videos whose file was not found
    format: str = ""
    root: str = ""
    video_root: str = ""

    def captions_by_video(self) -> dict[str, list[str]]:
        """video_id -> its captions, in caption order, for every video (an empty list if it has none)."""
        out: dict[str, list[str]] = OrderedDict((v.video_id, []) for v in self.videos)
        for c in self.captions:
            out.setdefault(c.video_id, []).append(c.text)
        return out

    def video_index(self) -> dict[str, int]:
        """video_id -> position in ``videos``."""
        return {v.video_id: i for i, v in enumerate(self.videos)}

    def caption_video_indices(self) -> list[int]:
        """For each caption, the index of its video in ``videos`` (the ground truth of retrieval)."""
        index = self.video_index()
        return [index[c.video_id] for c in self.captions]

    def available(self) -> "SplitData":
        """A copy without the missing videos and their captions (``missing`` is kept for reporting)."""
        present = {v.video_id for v in self.videos if v.path is not None}
        return SplitData(
            name=self.name,
            videos=[v for v in self.videos if v.path is not None],
            captions=[c for c in self.captions if c.video_id in present],
            missing=list(self.missing),
            format=self.format,
            root=self.root,
            video_root=self.video_root,
        )

    def summary(self) -> dict:
        """Counts a user checks before training."""
        per_video = self.captions_by_video()
        counts = [len(v) for v in per_video.values()]
        missing = set(self.missing)
        return {
            "format": self.format,
            "split": self.name,
            "root": self.root,
            "video_root": self.video_root,
            "videos": len(self.videos),
            "captions": len(self.captions),
            "videos_missing": len(self.missing),
            "captions_of_missing_videos": sum(1 for c in self.captions if c.video_id in missing),
            "videos_without_captions": sum(1 for n in counts if n == 0),
            "captions_per_video": {
                "min": min(counts) if counts else 0,
                "mean": round(sum(counts) / len(counts), 3) if counts else 0.0,
                "max": max(counts) if counts else 0,
            },
        }


class MediaIndex:
    """Files under a folder (recursive) indexed by stem and by relative path.

    When several files share a stem (``video7.mp4`` and ``video7.webm``) the first extension in
    ``extensions`` wins, so the choice is deterministic.
    """

    def __init__(self, folder: Path | None, extensions=VIDEO_EXTENSIONS):
        self.folder = Path(folder) if folder is not None else None
        self.extensions = tuple(extensions)
        self.by_stem: dict[str, Path] = {}
        self.duplicates: dict[str, list[Path]] = {}
        if self.folder is not None and self.folder.is_dir():
            rank = {e: i for i, e in enumerate(self.extensions)}
            for dirpath, dirnames, filenames in os.walk(self.folder, followlinks=True):
                dirnames.sort()
                for name in sorted(filenames):
                    ext = os.path.splitext(name)[1].lower()
                    if ext not in rank or name.startswith("."):
                        continue
                    stem = os.path.splitext(name)[0]
                    path = Path(dirpath) / name
                    old = self.by_stem.get(stem)
                    if old is None:
                        self.by_stem[stem] = path
                    else:
                        self.duplicates.setdefault(stem, [old]).append(path)
                        if rank[ext] < rank[old.suffix.lower()]:
                            self.by_stem[stem] = path

    def find(self, video_id: str) -> Path | None:
        """The file for ``video_id`` (a stem like ``video7``, or a name like ``video7.mp4``)."""
        hit = self.by_stem.get(video_id)
        if hit is None:
            hit = self.by_stem.get(os.path.splitext(os.path.basename(video_id))[0])
        return hit


def build_split(
    name: str,
    video_ids: list[str],
    captions: list[CaptionRecord],
    index: MediaIndex,
    *,
    format: str,
    root: Path,
    resolve: Callable[[str], Path | None] | None = None,
) -> SplitData:
    """Assemble a SplitData: every id gets a VideoRecord (path None when missing), order preserved."""
    seen: set[str] = set()
    videos: list[VideoRecord] = []
    missing: list[str] = []
    find = resolve or index.find
    for vid in video_ids:
        if vid in seen:
            continue
        seen.add(vid)
        path = find(vid)
        videos.append(VideoRecord(vid, path))
        if path is None:
            missing.append(vid)
    extra = sorted({c.video_id for c in captions} - seen)
    if extra:  # a caption must always have a video record; readers should not produce this
        raise DataError(f"{format}: captions refer to video ids outside split {name!r}: {extra[:5]}")
    return SplitData(
        name=name,
        videos=videos,
        captions=captions,
        missing=missing,
        format=format,
        root=str(root),
        video_root=str(index.folder) if index.folder is not None else "",
    )


class Reader:
    """Base of the per-format readers. Subclasses set ``name``, ``description`` and implement both methods."""

    name: str = ""
    description: str = ""  # one line: the files expected under ROOT
    default_video_dir: str = "videos"

    def splits(self, root: Path) -> list[str]:
        raise NotImplementedError

    def load(self, root: Path, split: str, video_root: Path | None = None) -> SplitData:
        raise NotImplementedError

    # helpers shared by readers -------------------------------------------------------------
    def video_folder(self, root: Path, video_root: Path | None) -> Path:
        if video_root is not None:
            if not Path(video_root).is_dir():
                raise DataError(f"{self.name}: video folder {video_root} does not exist")
            return Path(video_root)
        return root / self.default_video_dir

    def check_split(self, root: Path, split: str | None) -> str:
        names = self.splits(root)
        if split is None:
            if len(names) == 1:
                return names[0]
            raise DataError(f"{self.name}:{root} has several splits {names}; choose one with --split")
        if split not in names:
            raise DataError(f"{self.name}:{root} has no split {split!r}; available: {names}")
        return split


READERS: dict[str, Reader] = {}


def register_reader(cls):
    """Class decorator adding a reader to the registry under ``cls.name``."""
    READERS[cls.name] = cls()
    return cls


def _ensure_readers() -> None:
    from . import clipvip, didemo, images, jsonl, msrvtt, msvd, vatex  # noqa: F401  (registration)


def list_formats() -> dict[str, str]:
    """Format name -> one-line description of the files its reader expects under ROOT."""
    _ensure_readers()
    return {name: READERS[name].description for name in sorted(READERS)}


def get_reader(name: str) -> Reader:
    _ensure_readers()
    if name not in READERS:
        raise DataError(f"unknown data format {name!r}; known formats: {sorted(READERS)}")
    return READERS[name]


def parse_data_spec(spec: str) -> tuple[str, Path]:
    """``"msrvtt:datasets/msrvtt"`` -> ``("msrvtt", Path("datasets/msrvtt"))``; clear error otherwise."""
    _ensure_readers()
    formats = sorted(READERS)
    if not isinstance(spec, str) or ":" not in spec:
        raise DataError(
            f"--data must look like FORMAT:ROOT (for example msrvtt:datasets/msrvtt or "
            f"jsonl:my_videos/captions.jsonl), got {spec!r}; formats: {formats}"
        )
    name, root = spec.split(":", 1)
    name = name.strip().lower()
    if name not in READERS:
        raise DataError(f"--data {spec!r}: unknown format {name!r}; known formats: {formats}")
    if not root:
        raise DataError(f"--data {spec!r}: ROOT is empty")
    return name, Path(root).expanduser()


def list_splits(spec: str) -> list[str]:
    """Split names available for ``spec``."""
    name, root = parse_data_spec(spec)
    reader = READERS[name]
    _check_root(name, root)
    return reader.splits(root)


def choose_test_split(spec: str, split: str | None = None) -> str:
    """``split`` if given; else the dataset's test split (``test``, then ``test-1ka``) or its only split."""
    if split:
        return split
    names = list_splits(spec)
    for preferred in ("test", "test-1ka"):
        if preferred in names:
            return preferred
    if len(names) == 1:
        return names[0]
    raise DataError(f"{spec} has several splits {names} and none is named 'test'; choose one with --split")


def _check_root(name: str, root: Path) -> None:
    if not root.exists():
        raise DataError(f"{name}: ROOT {root} does not exist ({READERS[name].description})")


def load_split(spec: str, split: str | None = None, video_root: str | os.PathLike | None = None) -> SplitData:
    """Read split ``split`` of the dataset named by ``spec`` (``FORMAT:ROOT``).

    ``split=None`` is allowed when the dataset has exactly one split (for example a plain JSONL file);
    otherwise the error lists the choices. ``video_root`` overrides where the reader looks for videos.
    """
    name, root = parse_data_spec(spec)
    _check_root(name, root)
    reader = READERS[name]
    split = reader.check_split(root, split)
    return reader.load(root, split, Path(video_root) if video_root is not None else None)


def read_json(path: Path):
    import json

    if not path.is_file():
        raise DataError(f"expected annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse JSON annotation file {path}: {exc}") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-empty line; errors name the file and line."""
    import json

    if not path.is_file():
        raise DataError(f"expected annotation file {path} does not exist")
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line")
            out.append((lineno, obj))
    return out


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"expected split list {path} does not exist")
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
