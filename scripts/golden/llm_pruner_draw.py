"""Golden windows of LLM-Pruner's calibration loader (its get_examples/get_bookcorpus) on our wiki text.

Documents are the pieces of calib.txt split on blank lines (BookCorpus rows upstream); per sample, Python's
random picks documents until an unused one of at least seqlen tokens comes up, then a start inside it.
Tokenized by the Hugging Face tokenizer of the converted SmolLM2 (no special tokens are added by it).
Usage: python3 scripts/golden/llm_pruner_draw.py SHARED_DIR MODEL_DIR OUT.json
"""
import json, random, sys
from transformers import AutoTokenizer

shared, model, out = sys.argv[1:4]
seed, samples, seqlen = 0, 10, 64
tokenizer = AutoTokenizer.from_pretrained(model)
documents = open(f"{shared}/data/wiki/calib.txt", encoding="utf-8").read().split("\n\n")
random.seed(seed)
picked, starts, windows = [], [], []
for _ in range(samples):
    while True:
        i = random.randint(0, len(documents) - 1)
        ids = tokenizer(documents[i]).input_ids
        if len(ids) >= seqlen and i not in picked:
            picked.append(i)
            break
    j = random.randint(0, len(ids) - seqlen)
    starts.append(j)
    windows.append(ids[j:j + seqlen])
json.dump({"source": "data/wiki/calib.txt", "seed": seed, "samples": samples, "seqlen": seqlen,
           "documents_in_source": len(documents), "documents": picked, "starts": starts, "windows": windows},
          open(out, "w"))
