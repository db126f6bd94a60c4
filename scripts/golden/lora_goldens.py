#!/usr/bin/env python3
"""LoRA goldens for prune-dist's `finetune`: loss and gradients of every lora_A / lora_B of the tiny fixture model,
computed by Hugging Face PEFT (torch autograd), and the adapter folder PEFT itself saves.

Writes Tests/EngineTests/Golden/lora-tiny-llama.safetensors:
  input_ids [2, 16] I64, labels [2, 16] I64 (-100 where a prediction is not in the loss; HF shifts labels by one),
  for every adapted linear its starting lora_A / lora_B (PEFT names, prefix "init.") and their gradients
  (prefix "grad."), metadata: loss (HF's mean over the counted predictions), r, lora_alpha, targets.
A and B both start random (B nonzero) so every gradient is nonzero; dropout 0 (torch's dropout masks cannot be
reproduced outside torch). Also writes Tests/EngineTests/Golden/lora-peft-adapter/ as PEFT's save_pretrained
does (adapter_config.json, adapter_model.safetensors) so the Swift reader is tested on PEFT's own files.

Usage: python3 scripts/golden/lora_goldens.py [path/to/shared/fixtures/tiny-llama]
Needs torch, transformers, peft, safetensors (pip install torch transformers peft safetensors).
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "fixtures", "tiny-llama")
golden_dir = os.path.join(root, "Tests", "EngineTests", "Golden")

torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, bias="none", task_type="CAUSAL_LM")
peft_model = get_peft_model(model, config)

generator = torch.Generator().manual_seed(4321)
init = {}
for name, parameter in peft_model.named_parameters():
    if "lora_" in name:
        with torch.no_grad():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        init[name.replace(".default", "")] = parameter.detach().clone()

input_ids = torch.randint(0, 512, (2, 16), generator=generator)
labels = input_ids.clone()
labels[0, :6] = -100   # a prompt: its tokens are not predicted
labels[1, 12:] = -100  # padding at the end
out = peft_model(input_ids=input_ids, labels=labels)
out.loss.backward()

tensors = {"input_ids": input_ids, "labels": labels}
for name, parameter in peft_model.named_parameters():
    if "lora_" in name:
        key = name.replace(".default", "")
        tensors["init." + key] = init[key]
        tensors["grad." + key] = parameter.grad.detach().clone()
# AdamW (torch.optim.AdamW, decoupled weight decay) over 4 steps with a warmed-up linear schedule, and both of
# Hugging Face's schedules over 10 steps (3 of warm-up), for the optimizer's and the schedules' tests.
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup
p = torch.nn.Parameter(torch.randn(6, generator=generator))
tensors["adamw.start"] = p.detach().clone()
gradients = torch.randn(4, 6, generator=generator)
tensors["adamw.gradients"] = gradients
optimizer = torch.optim.AdamW([p], lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=4)
for g in gradients:
    p.grad = g.clone()
    optimizer.step()
    scheduler.step()
tensors["adamw.end"] = p.detach().clone()
for name, make in [("linear", get_linear_schedule_with_warmup), ("cosine", get_cosine_schedule_with_warmup)]:
    q = torch.nn.Parameter(torch.zeros(1))
    o = torch.optim.SGD([q], lr=2e-4)
    schedule = make(o, num_warmup_steps=3, num_training_steps=10)
    rates = []
    for _ in range(10):
        rates.append(o.param_groups[0]["lr"])
        o.step()
        schedule.step()
    tensors["schedule." + name] = torch.tensor(rates, dtype=torch.float64)

metadata = {"loss": repr(out.loss.item()), "r": "4", "lora_alpha": "8", "targets": ",".join(targets)}
save_file(tensors, os.path.join(golden_dir, "lora-tiny-llama.safetensors"), metadata=metadata)

adapter_dir = os.path.join(golden_dir, "lora-peft-adapter")
peft_model.save_pretrained(adapter_dir)
os.remove(os.path.join(adapter_dir, "README.md"))  # PEFT's model card: not a golden
print("loss", out.loss.item(), "tensors", len(tensors))
