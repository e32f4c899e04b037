#!/usr/bin/env python3
"""Parity of Verdict's engine with Hugging Face transformers (PyTorch) on the same folders.

Usage: python3 parity.py MODELS_DIR OUT_DIR [--device cpu|cuda] [--dtype float32|bfloat16]

MODELS_DIR holds one model folder per architecture (qwen2/, qwen3/, llama/, gemma2/, made by
`verdict model init --size tiny`) and, beside each, Verdict's probe of it
(<arch>.probe.json, from `verdict model probe`). For every probe input this script computes
transformers' logits at the same positions and a greedy continuation through transformers'
KV cache, compares them with Verdict's, prints a table, and writes transformers' records to
OUT_DIR/<arch>.hf.json in the probe's format: those files are the fixtures the engine's
tests check against without Python (crates/verdict-engine/tests/fixtures/parity/).
"""
import argparse
import json
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def greedy(model, ids, steps, vocab):
    out = model(ids, use_cache=True)
    past = out.past_key_values
    tokens = []
    nxt = out.logits[:, -1, :vocab].argmax(-1)
    for _ in range(steps):
        tokens.append(int(nxt[0]))
        out = model(nxt[:, None], past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1, :vocab].argmax(-1)
    return tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    ok = True
    for arch in ["qwen2", "qwen3", "llama", "gemma2"]:
        folder = os.path.join(args.models, arch)
        probe_path = os.path.join(args.models, f"{arch}.probe.json")
        if not os.path.isdir(folder):
            continue
        ours = json.load(open(probe_path))
        vocab = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).get_vocab_size(True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager").to(args.device).eval()
        records = []
        worst, worst_rel, greedy_equal, greedy_total = 0.0, 0.0, 0, 0
        with torch.no_grad():
            for rec in ours:
                ids = torch.tensor([rec["input"]], device=args.device)
                logits = model(ids).logits[0].float().cpu()
                rows_hf = [logits[p].tolist() for p in rec["positions"]]
                for mine, theirs in zip(rec["logits"], rows_hf):
                    a, b = torch.tensor(mine), torch.tensor(theirs)
                    worst = max(worst, (a - b).abs().max().item())
                    worst_rel = max(worst_rel, ((a - b).norm() / b.norm()).item())
                g = greedy(model, ids, len(rec["greedy"]), vocab)
                same = 0
                for x, y in zip(g, rec["greedy"]):
                    if x != y:
                        break
                    same += 1
                greedy_equal += same
                greedy_total += len(g)
                records.append({"input": rec["input"], "positions": rec["positions"], "logits": rows_hf, "greedy": g})
        json.dump(records, open(os.path.join(args.out, f"{arch}.hf.json"), "w"))
        rows.append((arch, worst, worst_rel, greedy_equal, greedy_total))
        tol = 1e-4 if args.dtype == "float32" else None
        if tol is not None and worst > tol:
            ok = False
        if greedy_equal != greedy_total and args.dtype == "float32":
            ok = False
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}, dtype {args.dtype}")
    print("| arch | max abs diff of logits | max relative L2 diff | greedy tokens equal |")
    print("| --- | --- | --- | --- |")
    for arch, worst, rel, eq, tot in rows:
        print(f"| {arch} | {worst:.2e} | {rel:.2e} | {eq}/{tot} |")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
