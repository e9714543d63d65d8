"""models.tokenizer loads open_clip's tokenizer.py on its own (without the open_clip package, torchvision or timm)
and its tokens are bit-identical to ``open_clip.tokenizer.SimpleTokenizer`` imported the normal way."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

HEAVY = ("open_clip", "torchvision", "timm", "torch._dynamo", "sympy")


def corpus(n_random: int = 400, seed: int = 0) -> list[str]:
    """Fixed edge cases plus seeded random strings over ASCII, Latin, CJK, emoji, combining marks, HTML."""
    fixed = [
        "", " ", "a", "a red ball bounces", "A RED Ball   Bounces!!", "  leading and trailing  ", "\t\ttabs\nnewlines\r\n",
        "don't you're we've I'm they'll he'd it's", "123 4567 3.14159 1e10", "ein roter Kreis springt",
        "un cercle bleu tourne à gauche", "東京 の 赤い 四角", "日本語のテキストと English mixed", "한국어 문장입니다",
        "Привет мир", "مرحبا بالعالم", "नमस्ते दुनिया", "emoji 🎉🔥👍🏽 👨‍👩‍👧", "caf\u00e9 vs cafe\u0301 (combining)",
        "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;x&#39;", "<start_of_text> inside <end_of_text> text",
        "mojibake: Ã©tÃ© â€œquotesâ€\x9d", "zero\u200bwidth\u200cjoiner\u200d", "\x00\x01 control \x7f",
        "a " * 60 + "long query that is truncated", "word " * 500, "x" * 1000, "🎉" * 100,
        "supercalifragilisticexpialidocious antidisestablishmentarianism", "snake_case-and-kebab-case/and.dots",
        "http://example.com/path?q=1&r=2", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "ﬁ ligature ß ẞ ı İ",
    ]
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-_()[]{}&<>#@%*+=/\\",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœŒ€",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长",
        "🎉🔥👍🏽😀😂🙏🌍🚀❤️‍🩹",
        "\u0301\u0308\u200b\u200d\u00a0\u3000",
        "    \t\n",
    ]
    rng = random.Random(seed)
    out = list(fixed)
    for _ in range(n_random):
        length = rng.choice([1, 3, 10, 30, 80, 300])
        weights = [rng.random() for _ in pools]
        out.append("".join(rng.choice(rng.choices(pools, weights)[0]) for _ in range(length)))
    return out


PROBE = """
import json, sys
from hybridtower.models import tokenizer as tk
texts = json.loads(sys.stdin.read())
out = {"module": tk.open_clip_tokenizer_module().__name__,
       "tokens": {str(c): tk.Tokenizer(c)(texts).tolist() for c in (8, 32, 77)},
       "num_tokens": [tk.Tokenizer(77).num_tokens(t) for t in texts],
       "truncated": [tk.Tokenizer(32).is_truncated(t) for t in texts],
       "modules": sorted(sys.modules)}
sys.stdout.write(json.dumps(out))
"""


@pytest.fixture(scope="module")
def standalone():
    """Tokens of the corpus from a fresh process, where nothing has imported open_clip."""
    texts = corpus()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(texts), capture_output=True, text=True,
                          timeout=55, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return texts, json.loads(proc.stdout)


def test_fresh_process_loads_the_tokenizer_without_the_open_clip_package(standalone):
    _, out = standalone
    from hybridtower.models.tokenizer import PRIVATE_NAME

    assert out["module"] == PRIVATE_NAME
    loaded = set(out["modules"])
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"tokenizing imported {heavy[:10]}"


def test_tokens_are_bit_identical_to_open_clip(standalone):
    texts, out = standalone
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    for c, rows in out["tokens"].items():
        ref = reference(texts, context_length=int(c))
        got = torch.tensor(rows, dtype=ref.dtype)
        assert got.shape == ref.shape
        diff = (got != ref).any(dim=1).nonzero().flatten().tolist()
        assert not diff, f"context {c}: {len(diff)} texts differ, e.g. {texts[diff[0]]!r}"
    assert out["num_tokens"] == [len(reference.encode(t)) + 2 for t in texts]
    assert out["truncated"] == [len(reference.encode(t)) + 2 > 32 for t in texts]
    assert any(out["truncated"]) and not all(out["truncated"])  # the corpus exercises truncation both ways
    eot = reference.eot_token_id
    long_rows = [r for r, t in zip(out["tokens"]["8"], texts) if len(reference.encode(t)) + 2 > 8]
    assert long_rows and all(r[-1] == eot for r in long_rows)  # truncated: EOT kept as the last token


def test_in_process_module_and_fallbacks(monkeypatch):
    """In this process (open_clip may be imported by other tests) the tokenizer is the same either way, and
    a tokenizer.py that cannot run on its own (a relative import) or cannot be found is not loaded by file."""
    from hybridtower.models import tokenizer as tk

    texts = corpus(50, seed=1)
    via_module = tk.open_clip_tokenizer_module().SimpleTokenizer()
    import open_clip.tokenizer as oct

    ref = oct.SimpleTokenizer()
    assert torch.equal(via_module(texts, context_length=77), ref(texts, context_length=77))
    assert tk._standalone_tokenizer_file() is not None  # this install's tokenizer.py has no relative import


def test_relative_import_or_missing_package_refuses_the_standalone_load(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util

    from hybridtower.models import tokenizer as tk

    pkg = tmp_path / "open_clip"
    pkg.mkdir()
    (pkg / "tokenizer.py").write_text("import gzip\ndef f():\n    from .constants import X\n")
    spec = importlib.machinery.ModuleSpec("open_clip", None, is_package=True)
    spec.submodule_search_locations = [str(pkg)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    assert tk._standalone_tokenizer_file() is None  # relative import, even inside a function
    (pkg / "tokenizer.py").write_text("import gzip\nfrom open_clip import x\n")
    assert tk._standalone_tokenizer_file() == pkg / "tokenizer.py"  # absolute imports are fine
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert tk._standalone_tokenizer_file() is None


def test_num_tokens_after_tokenising_is_read_from_the_tokens(monkeypatch):
    """num_tokens of a text just tokenised comes from its token row (no second BPE pass) and equals the BPE
    count for every text of the corpus, at contexts where many are truncated (those are counted afresh), for
    texts typing "<end_of_text>" themselves too."""
    from hybridtower.models import tokenizer as tk

    texts = corpus(150)
    bpe = tk._bpe()
    expected = [len(bpe.encode(t)) + 2 for t in texts]
    for context in (8, 32, 77):
        tok = tk.Tokenizer(context)
        tok(texts)
        calls = []
        real = bpe.encode
        monkeypatch.setattr(bpe, "encode", lambda text: calls.append(text) or real(text))
        assert [tok.num_tokens(t) for t in texts] == expected
        monkeypatch.undo()
        # counted afresh exactly: rows whose EOT sits in the last place (truncated, or filling the context)
        # and rows with a second EOT typed in the text; every other count was read from the tokens
        typed_eot = {t for t in texts if bpe.eot_token_id in real(t)}
        assert set(calls) == {t for t, n in zip(texts, expected) if n >= context} | typed_eot
        assert len(set(calls)) < len(set(texts))
    small = tk.Tokenizer(77)
    small.COUNTS_KEPT = 3
    small(["a", "b", "c", "d"])
    assert list(small._counts) == ["b", "c", "d"]


def test_tokenizer_copies_and_pickles():
    """A model is deep-copied (training variants, EMA-like copies) and pickled (DataLoader workers): its
    tokenizer goes along with its context length; the kept counts stay behind."""
    import copy
    import pickle

    from hybridtower.models import tokenizer as tk

    tok = tk.Tokenizer(32)
    tok(["a red ball"])
    for other in (copy.deepcopy(tok), pickle.loads(pickle.dumps(tok))):
        assert other.context_length == 32 and not other._counts
        assert torch.equal(other(["a red ball"]), tok(["a red ball"])) and other.num_tokens("a red ball") == 5
