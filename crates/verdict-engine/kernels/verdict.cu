// Verdict's own CUDA kernels, compiled to PTX by build.rs when the `cuda` feature is on and
// loaded through candle's custom-module cache (src/kernels.rs).
//
// Three jobs where candle's stock ops cost several launches or round differently from
// transformers: sampling a token per row on the device (so the logits never leave the GPU),
// RMSNorm in one pass with transformers' rounding order, and the gated MLP activation
// fused with its product.
#include <cuda_bf16.h>
#include <stdint.h>

#define SAMPLE_THREADS 1024

// Sum over the block; every thread gets the result. `shared` holds at least 32 floats.
__device__ float block_sum(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < nwarps; w++) total += shared[w];
    return total;
}

// Max over the block; every thread gets the result. `shared` holds at least 32 floats.
__device__ float block_max(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float m = shared[0];
    for (int w = 1; w < nwarps; w++) m = fmaxf(m, shared[w]);
    return m;
}

// Max over the block with the lowest index among equal values.
__device__ void block_argmax(float& v, int& idx, float* sv, int* si) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffff, v, o);
        int oi = __shfl_xor_sync(0xffffffff, idx, o);
        if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = idx; }
    __syncthreads();
    v = sv[0]; idx = si[0];
    for (int w = 1; w < nwarps; w++) {
        if (sv[w] > v || (sv[w] == v && si[w] < idx)) { v = sv[w]; idx = si[w]; }
    }
}

// One token per row of `logits` ([rows, row_stride] f32, only the first `vocab` columns
// are candidates). The same algorithm as sampler.rs on the host:
//   w_i = exp((x_i - max) / T); top-p keeps {w_i >= t} for the largest t whose kept mass is
//   at least top_p of the total (bisection, 32 rounds); the token is the first index, in
//   index order, where the running kept mass passes u * kept mass. T = 0 is argmax.
// One block of SAMPLE_THREADS threads per row; u comes from the sequence's own RNG.
extern "C" __global__ void verdict_sample_f32(const float* __restrict__ logits, long long row_stride, int vocab,
                                              const float* __restrict__ uniforms, float inv_temp, float top_p,
                                              uint32_t* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ float scan[SAMPLE_THREADS];
    __shared__ int chosen;
    const float* x = logits + (long long)blockIdx.x * row_stride;
    int tid = threadIdx.x, nt = blockDim.x;

    float best = -INFINITY;
    int best_i = 0x7fffffff;
    for (int i = tid; i < vocab; i += nt) {
        float v = x[i];
        if (v > best || (v == best && i < best_i)) { best = v; best_i = i; }
    }
    block_argmax(best, best_i, sv, si);
    if (inv_temp <= 0.f || !(best > -INFINITY)) {
        if (tid == 0) out[blockIdx.x] = (uint32_t)(best_i == 0x7fffffff ? 0 : best_i);
        return;
    }

    float local = 0.f;
    for (int i = tid; i < vocab; i += nt) local += __expf((x[i] - best) * inv_temp);
    float total = block_sum(local, sv);

    float t = 0.f, kept = total;
    if (top_p < 1.f) {
        float lo = 0.f, hi = 1.f, want = top_p * total;
        for (int round = 0; round < 32; round++) {
            float mid = 0.5f * (lo + hi);
            float m = 0.f;
            for (int i = tid; i < vocab; i += nt) {
                float w = __expf((x[i] - best) * inv_temp);
                if (w >= mid) m += w;
            }
            m = block_sum(m, sv);
            if (m >= want) { lo = mid; kept = m; } else { hi = mid; }
        }
        t = lo;
    }
    float target = uniforms[blockIdx.x] * kept;

    // Each thread owns one contiguous chunk; an inclusive scan of the chunk sums says which
    // chunk holds the target, and that thread walks it.
    int chunk = (vocab + nt - 1) / nt;
    int start = tid * chunk, end = min(start + chunk, vocab);
    float s = 0.f;
    for (int i = start; i < end; i++) {
        float w = __expf((x[i] - best) * inv_temp);
        if (w >= t) s += w;
    }
    if (tid == 0) chosen = -1;
    scan[tid] = s;
    __syncthreads();
    for (int o = 1; o < nt; o <<= 1) {
        float add = tid >= o ? scan[tid - o] : 0.f;
        __syncthreads();
        scan[tid] += add;
        __syncthreads();
    }
    float incl = scan[tid], excl = tid > 0 ? scan[tid - 1] : 0.f;
    if (start < end && target >= excl && target < incl) {
        float acc = excl;
        int pick = -1;
        for (int i = start; i < end; i++) {
            float w = __expf((x[i] - best) * inv_temp);
            if (w >= t) {
                pick = i;
                acc += w;
                if (target < acc) break;
            }
        }
        chosen = pick;
    }
    __syncthreads();
    if (tid == 0) out[blockIdx.x] = (uint32_t)(chosen >= 0 ? chosen : best_i);
}

// RMSNorm of each row of x ([rows, cols] bf16) with an f32 weight. transformers' Llama and
// Qwen norms round the normalized row to bf16 before multiplying by the weight
// (cast_first = 1); Gemma's multiply in f32 and round once (cast_first = 0).
extern "C" __global__ void verdict_rmsnorm_bf16(const __nv_bfloat16* __restrict__ x, const float* __restrict__ w,
                                                __nv_bfloat16* __restrict__ out, int cols, float eps, int cast_first) {
    __shared__ float sv[32];
    const __nv_bfloat16* row = x + (long long)blockIdx.x * cols;
    __nv_bfloat16* dst = out + (long long)blockIdx.x * cols;
    float ss = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = __bfloat162float(row[i]);
        ss += v * v;
    }
    ss = block_sum(ss, sv);
    float r = rsqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float n = __bfloat162float(row[i]) * r;
        if (cast_first) n = __bfloat162float(__float2bfloat16(n));
        dst[i] = __float2bfloat16(n * w[i]);
    }
}

// The gated MLP's middle: gu is [rows, 2 * inter] (gate columns, then up columns, as the
// fused gate_up projection writes them); out[r, j] = act(gate) * up, with act computed in
// f32 and rounded to bf16 before the product, as PyTorch does. act 0 = SiLU, 1 = GELU (tanh).
extern "C" __global__ void verdict_gated_act_bf16(const __nv_bfloat16* __restrict__ gu, __nv_bfloat16* __restrict__ out,
                                                  int inter, long long total, int act) {
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (long long)gridDim.x * blockDim.x) {
        long long r = k / inter;
        int j = (int)(k - r * inter);
        float g = __bfloat162float(gu[r * 2 * inter + j]);
        float u = __bfloat162float(gu[r * 2 * inter + inter + j]);
        float a;
        if (act == 0) {
            a = g / (1.f + expf(-g));
        } else {
            a = 0.5f * g * (1.f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
        }
        a = __bfloat162float(__float2bfloat16(a));
        out[k] = __float2bfloat16(a * u);
    }
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// A score as transformers' eager attention rounds it: the bf16 product, scaled in bf16,
// then Gemma's soft cap in f32.
__device__ __forceinline__ float round_score(float dot, float scale, float softcap) {
    float s = __bfloat162float(__float2bfloat16(dot));
    s = __bfloat162float(__float2bfloat16(s * scale));
    if (softcap > 0.f) s = softcap * tanhf(s / softcap);
    return s;
}

// Softmax of prefill attention scores in place of candle's scale, cast, mask-add, softmax
// and cast (five passes over the scores and a mask built on the host): reads the bf16
// scores [b, kv, g * t, L] once and writes bf16 probabilities. The causal and padding mask
// comes from the row's query slot (offset + its index among the t queries) and pads[b];
// a padding query (slot before pads[b]) sees only itself, as causal_mask() does.
extern "C" __global__ void verdict_prefill_softmax_bf16(const __nv_bfloat16* __restrict__ scores,
                                                        __nv_bfloat16* __restrict__ probs, const uint32_t* __restrict__ pads,
                                                        int kv, int gt, int t, int L, int offset, float scale,
                                                        float softcap, int window) {
    __shared__ float sv[32];
    long long r = blockIdx.x;
    int b = (int)(r / ((long long)kv * gt));
    int qi = (int)(r % gt) % t;
    int qslot = offset + qi;
    int pad = (int)pads[b];
    int lo, hi;
    if (qslot < pad) {
        lo = qslot;
        hi = qslot;
    } else {
        lo = pad;
        if (window > 0 && qslot + 1 - window > lo) lo = qslot + 1 - window;
        hi = qslot;
    }
    const __nv_bfloat16* x = scores + r * L;
    __nv_bfloat16* y = probs + r * L;
    float mx = -INFINITY;
    for (int c = lo + threadIdx.x; c <= hi; c += blockDim.x) mx = fmaxf(mx, round_score(__bfloat162float(x[c]), scale, softcap));
    mx = block_max(mx, sv);
    float sum = 0.f;
    for (int c = lo + threadIdx.x; c <= hi; c += blockDim.x) sum += __expf(round_score(__bfloat162float(x[c]), scale, softcap) - mx);
    sum = block_sum(sum, sv);
    float inv = 1.f / sum;
    for (int c = threadIdx.x; c < L; c += blockDim.x) {
        float p = (c >= lo && c <= hi) ? __expf(round_score(__bfloat162float(x[c]), scale, softcap) - mx) * inv : 0.f;
        y[c] = __float2bfloat16(p);
    }
}

// Segmented decode attention (the cascade idea): a row's keys and values are a chain of
// segments (its prompt, held once in a pool however many samples continue it, and its own
// generated tokens), and the rows that read one segment are read against it together, so
// each key and value tile is loaded once per group of rows instead of once per row.
//
// The host (segmented.rs) cuts the work into units: one segment's keys (at most a split's
// worth: long segments are split over the key dimension, flash-decoding style, so a few
// long rows still fill the GPU) against up to MAXQ queries (rows of the group x the g query
// heads that share a KV head). One block per (unit, KV head) runs an online softmax over
// 32-key tiles and writes an unnormalized partial (max, sum, weighted values) per query;
// verdict_seg_merge combines each row's partials.
//   q            [R, kv, g, D] bf16
//   pool_k/v     the prompt pool, own_k/v the rows' own tokens: a unit addresses its keys
//                as base + i * token_stride + head * head_stride (elements) in one of them
//   units        9 x i64 per unit: source (0 pool, 1 own), base, token_stride, head_stride,
//                keys, position of the first key, first index in unit_rows, rows, first
//                partial slot
//   unit_rows    u32 row indexes; row_pos u32 [R] each row's query position (windows)
//   part_ml      [P, 2] f32 (max, sum), part_o [P, D] f32; slot = first + (j * kv + h) * g + gi
#define SEG_THREADS 128
#define SEG_KT 32
template <int D, int MAXQ>
__device__ void seg_attention(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ pool_k,
                              const __nv_bfloat16* __restrict__ pool_v, const __nv_bfloat16* __restrict__ own_k,
                              const __nv_bfloat16* __restrict__ own_v, const long long* __restrict__ units,
                              const uint32_t* __restrict__ unit_rows, const uint32_t* __restrict__ row_pos,
                              float* __restrict__ part_ml, float* __restrict__ part_o, int kv, int g, float scale,
                              float softcap, int window) {
    constexpr int DT = D < 128 ? D : 128;       // dims a thread row covers
    constexpr int QSPLIT = SEG_THREADS / DT;    // query subsets over the threads (D = 64: 2)
    constexpr int DPT = D / DT;                 // dims per thread (D = 256: 2)
    constexpr int QPT = MAXQ / QSPLIT;          // queries per thread
    constexpr int KS = D / 2 + 1;               // bf16 pairs per tile row in shared memory (odd: no bank conflicts)
    __shared__ float qs[MAXQ * D];
    __shared__ __nv_bfloat162 tile[SEG_KT * KS];
    __shared__ float ps[MAXQ * SEG_KT];
    __shared__ float ms[MAXQ], ls[MAXQ], als[MAXQ];
    __shared__ int qpos[MAXQ];
    const long long* u = units + (long long)blockIdx.x * 9;
    const int src = (int)u[0];
    const long long base = u[1], tstride = u[2], hstride = u[3];
    const int len = (int)u[4], pos0 = (int)u[5], roff = (int)u[6], nrows = (int)u[7];
    const long long first = u[8];
    const int h = blockIdx.y;
    const __nv_bfloat16* K = (src ? own_k : pool_k) + base + h * hstride;
    const __nv_bfloat16* V = (src ? own_v : pool_v) + base + h * hstride;
    const int nq = nrows * g;
    for (int i = threadIdx.x; i < nq * D; i += SEG_THREADS) {
        int qi = i / D, d = i - qi * D;
        int j = qi / g, gi = qi - j * g;
        long long row = unit_rows[roff + j];
        qs[i] = __bfloat162float(q[((row * kv + h) * g + gi) * D + d]);
    }
    for (int qi = threadIdx.x; qi < nq; qi += SEG_THREADS) {
        ms[qi] = -INFINITY;
        ls[qi] = 0.f;
        qpos[qi] = (int)row_pos[unit_rows[roff + qi / g]];
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int d0 = threadIdx.x % DT, qg = threadIdx.x / DT;
    float acc[QPT][DPT];
#pragma unroll
    for (int a = 0; a < QPT; a++)
#pragma unroll
        for (int e = 0; e < DPT; e++) acc[a][e] = 0.f;
    const __nv_bfloat162 zero2 = __floats2bfloat162_rn(0.f, 0.f);
    __syncthreads();
    for (int c0 = 0; c0 < len; c0 += SEG_KT) {
        const int n = min(SEG_KT, len - c0);
        for (int i = threadIdx.x; i < SEG_KT * (D / 2); i += SEG_THREADS) {
            int k = i / (D / 2), w = i - k * (D / 2);
            tile[k * KS + w] = k < n ? reinterpret_cast<const __nv_bfloat162*>(K + (c0 + k) * tstride)[w] : zero2;
        }
        __syncthreads();
        // Scores: a warp per query, a lane per key.
        for (int qi = warp; qi < nq; qi += SEG_THREADS / 32) {
            float s = 0.f;
            if (lane < n) {
                const float* qq = qs + qi * D;
                const __nv_bfloat162* kr = tile + lane * KS;
#pragma unroll 8
                for (int w = 0; w < D / 2; w++) {
                    float2 kf = __bfloat1622float2(kr[w]);
                    s += qq[2 * w] * kf.x + qq[2 * w + 1] * kf.y;
                }
            }
            bool valid = lane < n && (window <= 0 || pos0 + c0 + lane > qpos[qi] - window);
            float sc = valid ? round_score(s, scale, softcap) : -INFINITY;
            float mold = ms[qi];
            float nm = fmaxf(mold, warp_max(sc));
            float p = valid ? __expf(sc - nm) : 0.f;
            float alpha = mold == -INFINITY ? 0.f : __expf(mold - nm);
            float total = warp_sum(p);
            ps[qi * SEG_KT + lane] = p;
            __syncwarp();
            if (lane == 0) {
                ls[qi] = ls[qi] * alpha + total;
                ms[qi] = nm;
                als[qi] = alpha;
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < SEG_KT * (D / 2); i += SEG_THREADS) {
            int k = i / (D / 2), w = i - k * (D / 2);
            tile[k * KS + w] = k < n ? reinterpret_cast<const __nv_bfloat162*>(V + (c0 + k) * tstride)[w] : zero2;
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < QPT; a++) {
            int qi = qg + QSPLIT * a;
            if (qi < nq) {
                float al = als[qi];
#pragma unroll
                for (int e = 0; e < DPT; e++) acc[a][e] *= al;
                for (int k = 0; k < n; k++) {
                    float p = ps[qi * SEG_KT + k];
#pragma unroll
                    for (int e = 0; e < DPT; e++) {
                        int d = d0 + e * DT;
                        float2 vf = __bfloat1622float2(tile[k * KS + (d >> 1)]);
                        acc[a][e] += p * ((d & 1) ? vf.y : vf.x);
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < QPT; a++) {
        int qi = qg + QSPLIT * a;
        if (qi < nq) {
            int j = qi / g, gi = qi - j * g;
            long long slot = first + ((long long)j * kv + h) * g + gi;
#pragma unroll
            for (int e = 0; e < DPT; e++) part_o[slot * D + d0 + e * DT] = acc[a][e];
        }
    }
    for (int qi = threadIdx.x; qi < nq; qi += SEG_THREADS) {
        int j = qi / g, gi = qi - j * g;
        long long slot = first + ((long long)j * kv + h) * g + gi;
        part_ml[slot * 2] = ms[qi];
        part_ml[slot * 2 + 1] = ls[qi];
    }
}

#define SEG_ATTENTION(NAME, D, MAXQ)                                                                                  \
    extern "C" __global__ void NAME(const __nv_bfloat16* q, const __nv_bfloat16* pool_k, const __nv_bfloat16* pool_v, \
                                    const __nv_bfloat16* own_k, const __nv_bfloat16* own_v, const long long* units,   \
                                    const uint32_t* unit_rows, const uint32_t* row_pos, float* part_ml,               \
                                    float* part_o, int kv, int g, float scale, float softcap, int window) {           \
        seg_attention<D, MAXQ>(q, pool_k, pool_v, own_k, own_v, units, unit_rows, row_pos, part_ml, part_o, kv, g,    \
                               scale, softcap, window);                                                               \
    }
// head_dim 64, 128, 256; at most 64, 32, 16 queries (rows x query heads per KV head) a unit.
SEG_ATTENTION(verdict_seg_attention_d64, 64, 64)
SEG_ATTENTION(verdict_seg_attention_d128, 128, 32)
SEG_ATTENTION(verdict_seg_attention_d256, 256, 16)

// Each row's partials into its attention output [R, kv, g, D] bf16: the softmax of all its
// segments together. row_parts[row_parts_ptr[r] ..] are the row's first partial slots, one
// per unit that read it, in the order of its keys.
extern "C" __global__ void verdict_seg_merge_bf16(const float* __restrict__ part_ml, const float* __restrict__ part_o,
                                                  const uint32_t* __restrict__ row_parts_ptr,
                                                  const long long* __restrict__ row_parts, __nv_bfloat16* __restrict__ out,
                                                  int kv, int g, int D) {
    int row = blockIdx.x / kv, h = blockIdx.x % kv;
    int p0 = (int)row_parts_ptr[row], p1 = (int)row_parts_ptr[row + 1];
    for (int i = threadIdx.x; i < g * D; i += blockDim.x) {
        int gi = i / D, d = i - gi * D;
        float M = -INFINITY;
        for (int p = p0; p < p1; p++) M = fmaxf(M, part_ml[(row_parts[p] + (long long)h * g + gi) * 2]);
        float num = 0.f, den = 0.f;
        for (int p = p0; p < p1; p++) {
            long long slot = row_parts[p] + (long long)h * g + gi;
            float m = part_ml[slot * 2];
            if (m == -INFINITY) continue;
            float f = __expf(m - M);
            num += part_o[slot * D + d] * f;
            den += part_ml[slot * 2 + 1] * f;
        }
        out[(((long long)row * kv + h) * g + gi) * D + d] = __float2bfloat16(den > 0.f ? num / den : 0.f);
    }
}
