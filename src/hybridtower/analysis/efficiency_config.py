"""Configuration and names of the efficiency benchmark (``hybridtower bench efficiency``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EfficiencyConfig", "FRAMEWORKS", "LABELS", "PUBLISHED_VIT_B_32_GFLOPS"]

PUBLISHED_VIT_B_32_GFLOPS = 8.8  # per 224 px image, 2 FLOPs per multiply-add (4.4 GMACs)
FRAMEWORKS = ("pig", "meanp", "clipvip", "xpool")
LABELS = {
    "pig": "PIG (Hybrid-Tower)",
    "meanp": "Two-Tower meanP",
    "clipvip": "Two-Tower CLIP-ViP",
    "xpool": "X-Pool (Single-Tower)",
    "two_tower": "Two-Tower",
}


@dataclass
class EfficiencyConfig:
    model_size: str = "vit-b-32"  # "tiny" | "vit-b-32" | "vit-b-16"
    device: str = "cpu"
    sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000, 1_000_000])
    repeats: int = 7  # timed repetitions per online point (median reported)
    offline_repeats: int = 3  # timed repetitions per offline measurement
    offline_batch: int = 1  # videos per offline forward pass (time is divided by it)
    warmup: int = 1
    min_seconds: float = 1.0  # online points: repeat cheap calls until a measurement spans this long
    topk: int = 10
    threads: int | None = None  # torch / FAISS threads (None: leave as is)
    max_gallery_gb: float = 8.0  # largest stored array allocated; larger galleries are extrapolated
    xpool_chunk: int | None = None  # videos per X-Pool scoring chunk (None: 4096 on a CPU, 65536 on a GPU)
    faiss: bool = True
    bandwidth_mb: int = 512  # size of each array of the copy benchmark (the read scan uses twice that)
    seed: int = 0
    query: str = "a man is chopping garlic in a kitchen"
    # PIG-M: pseudo-query vectors per video to cost (offline, stored bytes, search at each N); [] skips it
    m_values: list[int] = field(default_factory=lambda: [1, 2, 4, 8])

    def xpool_chunk_for(self, device) -> int:
        if self.xpool_chunk:
            return int(self.xpool_chunk)
        return 65536 if str(device).startswith("cuda") else 4096

    def validate(self) -> "EfficiencyConfig":
        from ..core.errors import ConfigError

        if self.model_size not in ("tiny", "vit-b-32", "vit-b-16"):
            raise ConfigError(f"--model-size must be tiny, vit-b-32 or vit-b-16, got {self.model_size!r}")
        if not self.sizes or any(int(n) < 1 for n in self.sizes):
            raise ConfigError(f"gallery sizes must be positive integers, got {self.sizes}")
        if self.repeats < 1 or self.offline_repeats < 1 or self.offline_batch < 1:
            raise ConfigError("repeats, offline repeats and offline batch must be >= 1")
        if self.topk < 1:
            raise ConfigError("--topk must be >= 1")
        if any(int(m) < 1 for m in self.m_values):
            raise ConfigError(f"--m-values must be positive integers, got {self.m_values}")
        if self.xpool_chunk is not None and self.xpool_chunk < 1:
            raise ConfigError("--xpool-chunk must be >= 1")
        self.sizes = sorted({int(n) for n in self.sizes})
        self.m_values = sorted({int(m) for m in self.m_values})
        return self
