#!/usr/bin/env python3
"""Writes the golden sentence embeddings that msd's Rust text encoder is tested against.

The reference is sentence-transformers running all-MiniLM-L6-v2 from the folder that
scripts/setup-text-encoder.sh fetched (the very files the Rust encoder reads). For each sentence
it records the token ids sentence-transformers feeds the model (truncated to max_seq_length) and
the final embedding (mean pooling over the attention mask, L2-normalised), rounded to 5 decimals
(the rounding moves the cosine by < 1e-8, far below the test's 1e-4 tolerance).

Made once; the output is committed. Re-run only if the sentences change:

    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    /tmp/st/bin/python scripts/golden_text_embeddings.py \
        --model "$(scripts/setup-text-encoder.sh | tail -n 1)" \
        --out crates/msd/tests/data/minilm_golden.json
"""

import argparse
import json
import os
import tempfile

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

LONG = " ".join(
    f"Paragraph {i}: the handwritten digit leans to the right, its strokes are thick near the top "
    f"and thin at the base, and the scanner left a faint smudge beside it."
    for i in range(12)
)

SENTENCES = [
    "",
    "a bold seven leaning right",
    "handwritten 3, thin strokes",
    "a small upright zero",
    "the digit eight, written large with thick strokes",
    "A THIN EIGHT",
    "Ein dünner Achter — café naïve, 数字の７, Ω≈ç 🙂",
    "   leading and trailing   spaces   ",
    "2",
    "number nine, slanted left, medium stroke",
    "seven?! (slanted) -- yes; 7/7 @home #1 e.g. x^2+y_3",
    LONG,
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="folder made by scripts/setup-text-encoder.sh")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    max_len = model.max_seq_length
    items = []
    for text in SENTENCES:
        ids = model.tokenize([text])["input_ids"][0].tolist()
        with torch.no_grad():
            emb = model.encode([text], convert_to_numpy=True, normalize_embeddings=False)[0]
        items.append(
            {
                "text": text,
                "input_ids": ids,
                "embedding": [round(float(v), 5) for v in emb],
            }
        )
    long_ids = len(model.tokenizer(LONG)["input_ids"])
    assert long_ids > max_len, f"the long sentence has only {long_ids} tokens"
    doc = {
        "about": "golden all-MiniLM-L6-v2 embeddings; made by scripts/golden_text_embeddings.py",
        "sentence_transformers_version": sentence_transformers.__version__,
        "torch_version": torch.__version__,
        "max_seq_length": max_len,
        "long_sentence_untruncated_tokens": long_ids,
        "dim": len(items[0]["embedding"]),
        "items": items,
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {len(items)} golden embeddings to {args.out} (max_seq_length {max_len}, "
          f"long sentence {long_ids} tokens before truncation)")


if __name__ == "__main__":
    main()
