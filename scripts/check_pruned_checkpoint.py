#!/usr/bin/env python3
"""Checks that a prune-dist output is a checkpoint others can use, with Hugging Face transformers.

  python3 scripts/check_pruned_checkpoint.py INPUT_DIR OUTPUT_DIR

- AutoTokenizer.apply_chat_template gives the same ids on the output as on the input (several messages);
- the output loads with AutoModelForCausalLM as a plain dense model (no compressed-tensors package needed),
  its config keeps `sparsity_config` and `prune_dist`, and the zeros of its linears match sparsity_config;
- greedy generate runs on it.
Prints one line per check and exits non-zero on the first failure.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

source, output = sys.argv[1:3]
messages = ["What is the capital of France?", "Résumé: naïve café — 東京 🚀", "Line one\nline two", ""]
a, b = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(output)
for m in messages:
    conversation = [{"role": "user", "content": m}]
    ia = list(a.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False))
    ib = list(b.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False))
    assert ia == ib, (m, ia, ib)
    assert a(m)["input_ids"] == b(m)["input_ids"], m
print(f"apply_chat_template: same ids on input and output for {len(messages)} messages "
      f"(e.g. {len(ia)} ids for the last); plain encoding same too")

model = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32)
config = json.load(open(f"{output}/config.json"))
sparsity = config.get("sparsity_config")
print("loaded with", type(model).__name__, "; quantization_config:", getattr(model.config, "quantization_config", None),
      "; sparsity_config:", json.dumps(sparsity), "; prune_dist keys:", sorted(config.get("prune_dist", {}).keys()))
if sparsity:
    zeros = total = 0
    for name, p in model.named_parameters():
        if name.startswith("model.layers.") and name.endswith(".weight") and p.dim() == 2:
            zeros += int((p == 0).sum())
            total += p.numel()
            if sparsity["sparsity_structure"] == "2:4":
                groups = (p.reshape(p.shape[0], -1, 4) == 0).sum(-1)
                assert bool((groups >= 2).all()), f"{name}: a group of 4 with fewer than 2 zeros"
    print(f"zeros in the blocks' linears: {zeros / total:.6f} (sparsity_config.global_sparsity {sparsity['global_sparsity']:.6f})")
    assert abs(zeros / total - sparsity["global_sparsity"]) < 1e-6
ids = a.apply_chat_template([{"role": "user", "content": messages[0]}], add_generation_prompt=True, tokenize=True,
                            return_dict=False)
with torch.no_grad():
    out = model.generate(torch.tensor([list(ids)]), max_new_tokens=16, do_sample=False)
print("greedy generate on the output:", json.dumps(b.decode(out[0, len(ids):])))
print("OK")
