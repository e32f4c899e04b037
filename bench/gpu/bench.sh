#!/usr/bin/env bash
# Verdict's engine against transformers' generate on one GPU, in one go (bench/RESULTS.md).
# Runs on the H200 machine, which has no Rust: carry the CUDA binary (scripts/build-cuda.sh,
# then `gzip -9 -c target/cuda/verdict > .carry/verdict.gz`).
#
# Usage: bash bench/gpu/bench.sh [small|medium ...]      (default: small medium)
#   small  = random weights with Qwen2.5-0.5B's shapes, medium = Qwen2.5-7B's (made here,
#   on the GPU machine, with `verdict model init`).
# Every run: k = 8 samples per item, exactly 256 new tokens per sample, temperature 0.5,
# bf16, prompts aimed at each of PROMPTS tokens (default "512 1400": about 620 and 1,500 once
# rendered with the chat template). Verdict sweeps VERDICT_BATCHES; transformers with the
# static cache and compilation HF_STATIC_BATCHES (each compiles for its shapes in an untimed
# warm-up, so it gets few sizes), and eager (sdpa) HF_EAGER_BATCHES if set (off by default:
# the defaults are each side's best batches from earlier sweeps, so that one run of both
# shapes fits a device session's 30 minutes; bench/RESULTS.md has the full sweeps).
# Then the varied workload (VARIED=0 skips it): see below. Writes JSON lines and the
# markdown tables under $OUT. VERDICT_ONLY=1 skips transformers (a
# regression check of the engine against the table in bench/RESULTS.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
. bench/gpu/lib.sh
SIZES=${*:-small medium}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

# The copy-rate ceiling: a 4 GiB device-to-device copy, bytes read + written, median of 20.
COPY_TBPS=$(python3 - <<'PY'
import torch
n = 1 << 31
a = torch.empty(n, dtype=torch.bfloat16, device="cuda").uniform_()
b = torch.empty_like(a)
times = []
for _ in range(25):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); torch.cuda.synchronize()
    times.append(s.elapsed_time(e) / 1e3)
t = sorted(times[5:])[len(times[5:]) // 2]
print(f"{2 * a.numel() * 2 / t / 1e12:.2f}")
PY
)
echo "device-to-device copy: $COPY_TBPS TB/s (read + write)" | tee -a "$OUT/gpu.txt"

PROMPTS=${PROMPTS:-512 1400}
for size in $SIZES; do
  case $size in
    small) name=qwen2.5-0.5b-shape; vb=${VERDICT_BATCHES:-8,1024,4096}; he=${HF_EAGER_BATCHES:-}; hs=${HF_STATIC_BATCHES:-512}
           items=${VARIED_ITEMS:-512}; vv=${VARIED_BATCHES:-1024}; hv=${HF_VARIED_BATCHES:-512}; hl=${HF_VARIED_LIMIT:-1024} ;;
    medium) name=qwen2.5-7b-shape; vb=${VERDICT_BATCHES:-8,1024,2048}; he=${HF_EAGER_BATCHES:-}; hs=${HF_STATIC_BATCHES:-128}
           items=${VARIED_ITEMS:-256}; vv=${VARIED_BATCHES:-512}; hv=${HF_VARIED_BATCHES:-128}; hl=${HF_VARIED_LIMIT:-128} ;;
    *) echo "unknown size $size (small or medium)"; exit 2 ;;
  esac
  dir=/tmp/models/$name
  if [ ! -f "$dir/config.json" ]; then
    /usr/bin/time -f "model init: %e s" "$BIN" model init --arch qwen2 --size "$size" --shards 4 --out "$dir" 2>&1 | tail -1
  fi
  for pt in $PROMPTS; do
    tag=$name-p$pt
    echo "== $name, prompts of about $pt tokens: Verdict"
    "$BIN" model bench "$dir" --device cuda --k 8 --prompt-tokens "$pt" --new-tokens 256 --batches "$vb" \
      --prompts-out "$OUT/prompts-$tag.json" | tee "$OUT/verdict-$tag.jsonl"
    if [ -n "${VERDICT_ONLY:-}" ]; then rm -f "$OUT/prompts-$tag.json"; continue; fi
    if [ -n "$he" ]; then
      echo "== $name, prompts of about $pt tokens: transformers eager"
      python3 bench/gpu/hf_bench.py "$dir" "$OUT/prompts-$tag.json" --mode eager --batches "$he" 2>"$OUT/hf-eager-$tag.log" | tee "$OUT/hf-eager-$tag.jsonl"
    fi
    echo "== $name, prompts of about $pt tokens: transformers static cache + compile"
    python3 bench/gpu/hf_bench.py "$dir" "$OUT/prompts-$tag.json" --mode static --batches "$hs" 2>"$OUT/hf-static-$tag.log" | tee "$OUT/hf-static-$tag.jsonl"
    rm -f "$OUT/prompts-$tag.json"
  done
  # Labeling as it looks (VARIED=0 skips it): items with prompts of 600–3,000 tokens and
  # judgement lengths drawn log-normal around 350 tokens (cap 1,024); Verdict runs the
  # drawn lengths and every sample at their mean, the peer the drawn lengths of the first
  # HF_VARIED_LIMIT samples (static batches each run to their longest judgement, so its rate
  # does not depend on how many batches it runs; the whole job would take it many minutes).
  # Verdict's job is several times its batch cap, so freed rows have samples to take.
  if [ "${VARIED:-1}" != 0 ]; then
    tag=$name-varied
    echo "== $name, varied lengths: Verdict"
    "$BIN" model bench "$dir" --device cuda --k 8 --workload varied --items-count "$items" --new-tokens 1024 \
      --batches "$vv" --prompts-out "$OUT/prompts-$tag.json" | tee "$OUT/verdict-$tag.jsonl"
    if [ -z "${VERDICT_ONLY:-}" ]; then
      for mode in ${HF_VARIED_MODES:-static}; do
        echo "== $name, varied lengths: transformers $mode"
        python3 bench/gpu/hf_bench.py "$dir" "$OUT/prompts-$tag.json" --mode $mode --batches "$hv" --limit "$hl" 2>"$OUT/hf-$mode-$tag.log" | tee "$OUT/hf-$mode-$tag.jsonl"
      done
    fi
    rm -f "$OUT/prompts-$tag.json"
  fi
done
for pt in $PROMPTS varied; do
  case $pt in varied) files=("$OUT"/*-varied.jsonl) ;; *) files=("$OUT"/*-p"$pt".jsonl) ;; esac
  [ -e "${files[0]}" ] && python3 bench/gpu/table.py "$COPY_TBPS" "${files[@]}"
done | tee "$OUT/table.md"
