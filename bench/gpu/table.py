#!/usr/bin/env python3
"""Turn the JSON lines of bench.sh (Verdict and transformers) into the markdown tables of
bench/RESULTS.md. Usage: python3 table.py COPY_TBPS FILE.jsonl...  (COPY_TBPS: measured
device-to-device copy rate, read + write, in TB/s)."""
import json
import sys
from collections import defaultdict


def main():
    copy = float(sys.argv[1])
    rows = defaultdict(dict)  # (model, workload, batch) -> engine -> record
    models = []
    last_model = None
    for path in sys.argv[2:]:
        for line in open(path):
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            # The transformers peer names no model: it takes the Verdict file's beside it.
            m = (r.get("model") or last_model or "?", r.get("workload", "fixed"))
            last_model = m[0]
            if m not in models:
                models.append(m)
            rows[(m, r["batch"])][r["engine"]] = r
    for m in models:
        means = [r["mean_prompt_tokens"] for (mm, _), e in rows.items() if mm == m for r in e.values() if "mean_prompt_tokens" in r]
        prompt = f"{sum(means) / len(means):,.0f}" if means else "?"
        new = {"fixed": "256 new tokens per sample", "varied": "judgement lengths drawn log-normal around 350 (cap 1,024)", "fixed-at-mean": "every judgement at the varied draw's mean length"}.get(m[1], m[1])
        print(f"\n**{m[0]}, {m[1]}** (k = 8, {prompt} prompt tokens on average, {new}; tok/s = generated tokens / wall time of the whole batch, prefill included)\n")
        print("| batch | Verdict tok/s | Verdict items/s | ms/step | transformers eager tok/s | transformers static+compile tok/s | × eager | × static | prefill tok/item Verdict / transformers | decode bandwidth (% of copy rate) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for (mm, batch) in sorted(k for k in rows if k[0] == m):
            e = rows[(mm, batch)]
            v, he, hs = e.get("verdict"), e.get("transformers-eager"), e.get("transformers-static")

            def tps(r):
                if r is None:
                    return "—"
                if "error" in r:
                    return r["error"]
                return f"{r['tokens_per_s']:,.0f}"

            def ratio(a, b):
                if not a or not b or "error" in a or "error" in b:
                    return "—"
                return f"{a['tokens_per_s'] / b['tokens_per_s']:.1f}×"

            pre_h = next((r for r in (he, hs) if r and "prefill_tokens_per_item" in r), None)
            pre = f"{v['prefill_tokens_per_item']:,.0f} / {pre_h['prefill_tokens_per_item']:,.0f}" if v and pre_h else (f"{v['prefill_tokens_per_item']:,.0f} / —" if v else "—")
            bw = f"{v['decode_bytes_per_s'] / 1e12:.2f} TB/s ({100 * v['decode_bytes_per_s'] / 1e12 / copy:.0f}%)" if v else "—"
            print(f"| {batch} | {tps(v)} | {v['items_per_s']:.2f} | {v['ms_per_step']:.1f} | {tps(he)} | {tps(hs)} | {ratio(v, he)} | {ratio(v, hs)} | {pre} | {bw} |" if v else
                  f"| {batch} | — | — | — | {tps(he)} | {tps(hs)} | — | — | {pre} | — |")


if __name__ == "__main__":
    main()
