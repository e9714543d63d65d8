"""What an index run is asked to do (``IndexOptions``) and what it reports (``IndexRunSummary``, exit codes)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..core.errors import ConfigError
from .scan import INDEX_EXTENSIONS

EXIT_OK = 0
EXIT_SKIPPED = 3  # the run finished but some files could not be indexed (listed in errors.jsonl)
EXIT_NO_VIDEOS = 4  # no video file was found under the PATHs (a warning is printed; the index is still committed)
COMMIT_SECONDS = 300.0  # also commit when this long has passed since the last commit (slow videos/devices)


@dataclass
class IndexOptions:
    extensions: tuple[str, ...] = INDEX_EXTENSIONS
    prune: bool = False  # drop entries whose file no longer exists
    ann: str | None = None  # a kind of ann.ANN_KINDS; None keeps the index's current kind (flat for a new index)
    ann_params: dict = field(default_factory=dict)  # nlist / nprobe (ivf), M / ef_construction / ef_search (hnsw)
    batch_size: int = 16
    num_workers: int = 0
    commit_every: int = 256  # encoded videos per commit (a kill loses at most this many)
    device: str = "cpu"
    precision: str = "fp32"
    progress: bool = True
    overwrite: bool = False  # start a new index even if one (of another model) is there
    # moment windows (seconds): a video longer than ``window`` is stored as one row per window, every
    # ``stride`` s; 0 = one row per file. None = the index's recorded setting (a new index: 30 / 15 s;
    # an index built before windows existed: 0)
    window: float | None = None
    stride: float | None = None
    merge_timeout: float = 24 * 3600.0  # rank 0: seconds to wait for the other ranks' shards
    # torch intra-op threads of the encoder (main process). None = chosen by measurement while the run goes
    # (``encoding.ThreadTuner``: on the CPU, the cores the decoding workers leave or every core, whichever
    # encodes faster per video now). A run setting like batch_size / num_workers: not part of the index's
    # identity or manifest, so an index built with any value is reused with any other.
    encoder_threads: int | None = None

    def __post_init__(self):
        threads = self.encoder_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"--threads must be a whole number >= 1 (or left out: tuned by measurement), got {threads!r}")


@dataclass
class IndexRunSummary:
    index_dir: str
    found: int = 0  # video files found under the PATHs
    unchanged: int = 0
    touched: int = 0  # size/mtime changed but same content: metadata updated, not re-encoded
    to_encode: int = 0  # new or changed files this process had to encode (damaged rows included)
    encoded: int = 0
    windows: int = 0  # rows encoded for long videos' windows (0 when every video was short)
    skipped: list = field(default_factory=list)  # [{"path", "error"}]
    # [{"path", "note"}]: long files whose data ended before their header said: the windows before are indexed
    shortened: list = field(default_factory=list)
    pruned: int = 0
    vanished: int = 0  # entries whose file is gone (kept unless --prune)
    repaired: int = 0  # videos re-encoded because their stored rows were damaged
    damage: list = field(default_factory=list)  # what the pre-run verification found (messages)
    count: int = 0  # videos in the index after the run
    generation: int = 0
    seconds: float = 0.0
    videos_per_s: float = 0.0
    ann: str = "flat"
    shard: str | None = None  # rank-R-of-W for a torchrun rank that only wrote its shard
    merged_shards: int = 0
    up_to_date: bool = False
    scanned: bool = False  # the PATHs were scanned (False for a plain --merge)

    @property
    def exit_code(self) -> int:
        # a torchrun rank other than 0 always exits 0: torchrun kills every rank when one exits non-zero
        # (rank 0 could be stopped mid-merge), and rank 0 reports every rank's skipped files after merging
        if self.shard is not None:
            return EXIT_OK
        if self.scanned and self.found == 0:
            return EXIT_NO_VIDEOS
        return EXIT_SKIPPED if self.skipped else EXIT_OK

    def to_dict(self) -> dict:
        return asdict(self)


def run_record(summary: IndexRunSummary, t0: float) -> dict:
    return {"finished": time.time(), "seconds": round(time.monotonic() - t0, 3), "encoded": summary.encoded,
            "skipped": len(summary.skipped), "pruned": summary.pruned, "touched": summary.touched,
            "repaired": summary.repaired}


def finish(summary: IndexRunSummary, t0: float) -> None:
    summary.seconds = round(time.monotonic() - t0, 3)
    summary.videos_per_s = round(summary.encoded / summary.seconds, 3) if summary.seconds > 0 else 0.0
