"""Caption tokenisation with open_clip's shipped CLIP BPE tokenizer (no network).

The tokenizer is open_clip's own code and vocabulary (``open_clip/tokenizer.py`` and the
``bpe_simple_vocab_16e6.txt.gz`` next to it), but it is loaded WITHOUT running the ``open_clip`` package's
``__init__``: that ``__init__`` imports every open_clip submodule, and with them torchvision (-> torch._dynamo,
torch.fx, sympy) and timm, which a text query never needs and which cost a CLI ``search`` most of its
start-up. :func:`open_clip_tokenizer_module` finds the package with ``importlib.util.find_spec`` (which
does not import a top-level package), checks that its ``tokenizer.py`` imports nothing relative to the
package, and executes that one file under a private module name. If open_clip is already imported, or the
file cannot be loaded that way (another layout, a relative import, a zip install), it falls back to the
normal ``import open_clip.tokenizer``. Either way the same source runs, so the tokens are identical.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import sys
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

PRIVATE_NAME = "hybridtower._open_clip_tokenizer"  # where the standalone copy of the module is registered
# every relative import is written "from" + space (or a line continuation) + "."; a file without this text has none
_MAYBE_RELATIVE = re.compile(rb"\bfrom[\s\\]+\.")


def _standalone_tokenizer_file() -> Path | None:
    """``open_clip/tokenizer.py`` when it can run on its own (no relative import), else None. Imports nothing."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "tokenizer.py"
        try:
            source = path.read_bytes()
            if not _MAYBE_RELATIVE.search(source):  # no "from ." anywhere: no relative import (parsing costs ~25 ms)
                return path
            tree = ast.parse(source, filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        if any(isinstance(node, ast.ImportFrom) and node.level > 0 for node in ast.walk(tree)):
            return None
        return path
    return None


def _load_standalone(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(PRIVATE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path.name} by file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PRIVATE_NAME] = module  # as an import would; dataclasses/pickle look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(PRIVATE_NAME, None)
        raise
    return module


@lru_cache(maxsize=1)
def open_clip_tokenizer_module() -> ModuleType:
    """open_clip's ``tokenizer`` module: loaded on its own (without the open_clip package) when possible."""
    if "open_clip.tokenizer" in sys.modules:  # already paid for: share it
        return sys.modules["open_clip.tokenizer"]
    if PRIVATE_NAME in sys.modules:
        return sys.modules[PRIVATE_NAME]
    path = _standalone_tokenizer_file()
    if path is not None:
        try:
            return _load_standalone(path)
        except Exception as exc:  # noqa: BLE001 - any failure: the normal import below still works
            log.debug("loading open_clip's tokenizer on its own failed (%s); importing open_clip", exc)
    import open_clip.tokenizer

    return open_clip.tokenizer


@lru_cache(maxsize=1)
def _bpe():
    module = open_clip_tokenizer_module()
    # the module builds a default tokenizer when it loads (its ``_tokenizer``, for its ``tokenize()``): reuse it
    # rather than read the 49k-merge vocabulary a second time; same class, same defaults, so the same tokens
    shared = getattr(module, "_tokenizer", None)
    if (type(shared) is module.SimpleTokenizer and len(shared.all_special_ids) == 2
            and shared.clean_fn is module.get_clean_fn("lower") and shared.reduction_fn is None):
        return shared
    return module.SimpleTokenizer()


class Tokenizer:
    """Callable: list of captions -> LongTensor [N, context_length] (SOT ... EOT, zero padded, truncated).

    ``num_tokens(text)`` of a text this tokenizer has just tokenised is read from that result instead of
    running the BPE a second time (the search path tokenises a query to encode it, then counts its tokens):
    a row whose only EOT lies before the last position was not truncated, and its EOT position + 1 is the
    count. The last :data:`COUNTS_KEPT` such counts are kept."""

    COUNTS_KEPT = 4096

    def __init__(self, context_length: int):
        self.context_length = context_length
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._counts_lock = threading.Lock()

    def __getstate__(self) -> dict:  # copies and pickles (deepcopy of a model) carry the setting, not the counts
        return {"context_length": self.context_length}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["context_length"])

    def __call__(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        bpe = _bpe()
        tokens = bpe(texts, context_length=self.context_length)
        is_eot = tokens == bpe.eot_token_id
        ends = is_eot.int().argmax(dim=-1).tolist()
        single = (is_eot.sum(dim=-1) == 1).tolist()  # "<end_of_text>" typed in a caption is an EOT too
        with self._counts_lock:
            for text, end, one in zip(texts, ends, single):
                if one and end < self.context_length - 1:
                    self._counts[text] = end + 1
                    self._counts.move_to_end(text)
            while len(self._counts) > self.COUNTS_KEPT:
                self._counts.popitem(last=False)
        return tokens

    def num_tokens(self, text: str) -> int:
        """Tokens the caption needs including SOT and EOT (before truncation)."""
        with self._counts_lock:
            known = self._counts.get(text)
        return known if known is not None else len(_bpe().encode(text)) + 2

    def is_truncated(self, text: str) -> bool:
        return self.num_tokens(text) > self.context_length
