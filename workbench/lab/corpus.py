"""A generated play-shaped text, so smoke runs of the char-LM notebooks need no download.

Full runs read tiny-shakespeare through ``workbench.data``; a smoke run only checks that the
code path works, so it gets a deterministic text of the same shape (``NAME:`` headings, lines
of words, blank lines between speeches) written once to the temp directory.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

NAMES = ("ROMEO", "JULIET", "NURSE", "FRIAR", "KING", "QUEEN", "CLOWN")
ONSETS = ("b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "th", "w", "st", "br")
VOWELS = ("a", "e", "i", "o", "u", "ea", "ou")
CODAS = ("", "", "n", "r", "s", "t", "ll", "nd", "ng")


def generated_text(n_chars: int = 60_000, seed: int = 0) -> str:
    """Speeches of pseudo-words, about ``n_chars`` characters long, the same for a given seed."""
    rng = random.Random(seed)
    lexicon = ["".join(rng.choice(part) for part in (ONSETS, VOWELS, CODAS)) for _ in range(300)]
    lexicon += ["the", "and", "of", "to", "my", "thou", "is", "not"]
    parts: list[str] = []
    size = 0
    while size < n_chars:
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(lexicon) for _ in range(rng.randint(3, 9))]
            words[0] = words[0].capitalize()
            lines.append(" ".join(words) + rng.choice(",.;!?"))
        speech = f"{rng.choice(NAMES)}:\n" + "\n".join(lines) + "\n\n"
        parts.append(speech)
        size += len(speech)
    return "".join(parts)[:n_chars]


def smoke_corpus(n_chars: int = 60_000, seed: int = 0) -> Path:
    """Path of the generated text in the temp directory (written on first use)."""
    path = Path(tempfile.gettempdir()) / f"workbench-smoke-corpus-{n_chars}-{seed}.txt"
    if not path.is_file():
        partial = path.with_suffix(f".{random.getrandbits(32):08x}.part")
        partial.write_text(generated_text(n_chars, seed), encoding="utf-8")
        partial.replace(path)  # atomic: parallel test workers never read half a file
    return path


def charlm_options(smoke: bool, **options: Any) -> dict[str, Any]:
    """Char-LM task options: tiny-shakespeare for a real run, the generated text for a smoke run."""
    return {**options, "path": str(smoke_corpus())} if smoke else dict(options)
