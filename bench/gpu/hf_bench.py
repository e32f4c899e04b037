#!/usr/bin/env python3
"""transformers' side of the GPU benchmark: `generate` over the same prompts as Verdict.

Usage: python3 hf_bench.py MODEL_DIR PROMPTS_JSON --mode eager|static --batches 1,8,32
       [--new-tokens 256] [--k 8] [--temperature 0.5]

With a workload file (`verdict model bench --workload varied --prompts-out`: every sample's
prompt ids and judgement length), each batch size runs the whole workload in consecutive
batches, as a user of `generate` would: each batch generates until its longest judgement
(max_new_tokens = min_new_tokens = the batch's longest length), and only each row's own
length counts as generated. The static cache is sized once for the workload's longest
prompt and judgement (max_cache_len), so it compiles once, in an untimed warm-up batch.

PROMPTS_JSON is what `verdict model bench --prompts-out` writes: every sample's prompt ids,
in batch order, so batch B runs the first B of them (all k samples of each item, each with
its own response order, exactly the sequences Verdict decodes). Sampling at the same
temperature, bf16, sdpa attention, exactly NEW_TOKENS per sequence (min_new_tokens).
--mode static uses cache_implementation="static", with which transformers compiles the
decoding forward (torch.compile, CUDA graphs); its compilation runs in an untimed warm-up
at each batch size. One JSON line per batch size, like Verdict's.
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--mode", choices=["eager", "static"], default="eager")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=0, help="workload: only the first LIMIT samples")
    args = ap.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    cfg = model.config
    pad = cfg.eos_token_id if isinstance(cfg.eos_token_id, int) else (cfg.eos_token_id or [0])[0]
    prompts = json.load(open(args.prompts))
    if isinstance(prompts, dict):
        return workload(model, pad, prompts, args)
    n = args.new_tokens

    def run(batch, new_tokens):
        seqs = prompts[:batch]
        p = max(len(s) for s in seqs)
        ids = torch.tensor([[pad] * (p - len(s)) + s for s in seqs], device="cuda")
        mask = torch.tensor([[0] * (p - len(s)) + [1] * len(s) for s in seqs], device="cuda")
        kw = dict(
            do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad,
        )
        if args.mode == "static":
            kw["cache_implementation"] = "static"
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        assert out.shape[1] - p == new_tokens, f"generated {out.shape[1] - p} tokens, wanted {new_tokens}"
        return dt, p

    for batch in [int(b) for b in args.batches.split(",")]:
        if batch > len(prompts):
            print(f"# batch {batch}: only {len(prompts)} prompts", file=sys.stderr)
            break
        try:
            # Warm-up: the static cache compiles (and records its CUDA graphs) for this
            # batch's shapes during a first full-length generation; eager only needs its
            # kernels loaded.
            run(batch, n if args.mode == "static" else 4)
            dt, p = run(batch, n)
        except torch.OutOfMemoryError:
            print(json.dumps({"engine": f"transformers-{args.mode}", "batch": batch, "error": "out of memory"}), flush=True)
            torch.cuda.empty_cache()
            break
        k = min(args.k, batch)
        items = batch / k
        print(json.dumps({
            "engine": f"transformers-{args.mode}",
            "model": os.path.basename(os.path.normpath(args.model)),
            "batch": batch,
            "items": items,
            "k": k,
            "mean_prompt_tokens": sum(len(s) for s in prompts[:batch]) / batch,
            "new_tokens": n,
            "generated_tokens": batch * n,
            "seconds": dt,
            "tokens_per_s": batch * n / dt,
            "items_per_s": items / dt,
            "prefill_tokens_per_item": batch * p / items,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        }), flush=True)


def workload(model, pad, w, args):
    prompts, lengths = w["prompts"], w["lengths"]
    if args.limit:
        prompts, lengths = prompts[:args.limit], lengths[:args.limit]
    longest_prompt, longest_new = max(len(p) for p in prompts), max(lengths)

    def generate(seqs, new_tokens, static):
        p = max(len(s) for s in seqs)
        ids = torch.tensor([[pad] * (p - len(s)) + s for s in seqs], device="cuda")
        mask = torch.tensor([[0] * (p - len(s)) + [1] * len(s) for s in seqs], device="cuda")
        kw = dict(do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0,
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
        if static:
            kw["cache_implementation"] = "static"
            kw["max_cache_len"] = longest_prompt + longest_new
        with torch.inference_mode():
            try:
                model.generate(input_ids=ids, attention_mask=mask, **kw)
            except (TypeError, ValueError) as e:
                # An older transformers without max_cache_len: each new shape recompiles.
                if "max_cache_len" not in str(e):
                    raise
                kw.pop("max_cache_len")
                print("# max_cache_len not supported: the static cache recompiles per shape", file=sys.stderr)
                model.generate(input_ids=ids, attention_mask=mask, **kw)
        return len(seqs) * p

    for batch in [int(b) for b in args.batches.split(",")]:
        static = args.mode == "static"
        try:
            # Warm-up: kernels load, and the static cache compiles for its one shape (the
            # longest prompt and judgement of the workload).
            warm = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))[:batch]
            # With max_cache_len the decode step's shapes do not depend on how many tokens a
            # batch generates, so a short warm-up compiles what the timed batches replay.
            generate([prompts[i] for i in warm], 16 if static else 4, static)
            torch.cuda.synchronize()
            t = time.perf_counter()
            prefill = steps = 0
            for start in range(0, len(prompts), batch):
                rows = range(start, min(start + batch, len(prompts)))
                steps += max(lengths[i] for i in rows)
                prefill += generate([prompts[i] for i in rows], max(lengths[i] for i in rows), static)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
        except torch.OutOfMemoryError:
            print(json.dumps({"engine": f"transformers-{args.mode}", "workload": "varied", "batch": batch, "error": "out of memory"}), flush=True)
            torch.cuda.empty_cache()
            break
        items = len(prompts) / args.k
        print(json.dumps({
            "engine": f"transformers-{args.mode}",
            "model": os.path.basename(os.path.normpath(args.model)),
            "workload": "varied",
            "batch": batch,
            "items": items,
            "k": args.k,
            "mean_prompt_tokens": sum(len(p) for p in prompts) / len(prompts),
            "mean_new_tokens": sum(lengths) / len(lengths),
            "generated_tokens": sum(lengths),
            "seconds": dt,
            "steps": steps,
            "ms_per_step": dt / steps * 1e3,
            "tokens_per_s": sum(lengths) / dt,
            "items_per_s": items / dt,
            "prefill_tokens_per_item": prefill / items,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        }), flush=True)


if __name__ == "__main__":
    main()
