#!/usr/bin/env python3
"""Goldens for `prune-dist generate` and its chat template, from Hugging Face transformers.

Writes Tests/EngineTests/Golden/generate_goldens.json:
  - "tiny": greedy `generate` (32 new tokens) on ../shared/fixtures/tiny-llama from token-id prompts
    (the fixture has no tokenizer), float32;
  - "smollm2": greedy `generate` (32 new tokens) on the converted SmolLM2-135M-Instruct checkpoint
    (~/.cache/prune-dist/SmolLM2-135M-Instruct, made by scripts/demo.sh), weights upcast to float32 as
    prune-dist computes, for chat prompts (apply_chat_template, add_generation_prompt=True) and a plain prompt;
  - "chat_template": the template string and apply_chat_template's ids for several user messages, so the
    Swift test needs only the fixture tokenizer.json.

Usage (CPU torch is enough):
  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/venv/bin/pip install transformers safetensors jinja2
  /tmp/venv/bin/python scripts/golden/generate_goldens.py [--shared ../shared] [--model DIR]
"""
import argparse
import json
import os
import platform

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NEW_TOKENS = 32


def greedy(model, prompt_ids):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long))
    return out[0, len(prompt_ids):].tolist()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    parser.add_argument("--model", default=os.path.expanduser("~/.cache/prune-dist/SmolLM2-135M-Instruct"))
    parser.add_argument("--out", default=os.path.join(ROOT, "Tests", "EngineTests", "Golden", "generate_goldens.json"))
    args = parser.parse_args()
    torch.manual_seed(0)

    # Tiny fixture: prompts are token ids (row 0 and 1 of the forward fixture's input, first 8 tokens).
    tiny_dir = os.path.join(args.shared, "fixtures", "tiny-llama")
    reference = json.load(open(os.path.join(args.shared, "fixtures", "tiny-llama-reference.json")))
    tiny = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, attn_implementation="eager").eval()
    tiny_cases = []
    for row in reference["input_ids"][:2]:
        prompt = row[:8]
        tiny_cases.append({"prompt_ids": prompt, "generated_ids": greedy(tiny, prompt)})

    # SmolLM2: chat prompts and one plain prompt.
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    smol_cases = []
    for prompt, chat in [("What is the capital of France?", True),
                         ("Explain in a few sentences what a language model is.", True),
                         ("The three primary colours are", False)]:
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
        else:
            ids = tokenizer(prompt)["input_ids"]
        ids = list(ids)
        generated = greedy(model, ids)
        smol_cases.append({"prompt": prompt, "chat": chat, "prompt_ids": ids, "generated_ids": generated,
                           "generated_text": tokenizer.decode(generated)})

    # The chat template on its own (several messages: unicode, newlines, special-looking text).
    template_cases = []
    for message in ["Hi", "What is 2+2?\nAnswer briefly.", "Résumé: naïve café — 東京 🚀", "  leading and trailing spaces  "]:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        text = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                             tokenize=False)
        template_cases.append({"message": message, "text": text, "ids": list(ids)})

    golden = {
        "made_by": "scripts/golden/generate_goldens.py",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "new_tokens": NEW_TOKENS,
        "tiny": tiny_cases,
        "smollm2": smol_cases,
        "chat_template": {"template": tokenizer.chat_template, "cases": template_cases},
    }
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", args.out)
    for case in smol_cases:
        print(json.dumps(case["prompt"]), "→", json.dumps(case["generated_text"]))


if __name__ == "__main__":
    main()
