import os
import signal

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A suite started as a background job of a non-interactive shell inherits SIGINT "ignored", which the
# processes the tests start (and interrupt with Ctrl-C) would inherit too: give Ctrl-C its normal meaning.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny model of each framework, random weights, eval mode (shared, do not train them)."""
    from hybridtower import hub

    torch.manual_seed(0)
    return {fw: hub.create_model(f"{fw}-tiny").eval() for fw in ("pig", "meanp", "clipvip", "xpool")}


def random_frames(batch=2, frames=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g)
