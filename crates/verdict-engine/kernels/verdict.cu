// Verdict's own CUDA kernels, compiled to PTX by build.rs when the `cuda` feature is on and
// loaded through candle's custom-module cache (src/kernels.rs).
//
// Jobs where candle's stock ops cost several launches or round differently from
// transformers: sampling a token per row on the device (so the logits never leave the GPU),
// RMSNorm in one pass with transformers' rounding order, the gated MLP activation fused with
// its product, the prefill softmax with its mask, and decode attention over shared segments.
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

// A decode step's attention inputs in one kernel, from the fused q/k/v projection's output
// (qkv [b, (h + 2 kv) * d] bf16, bias not yet added): per head, the bias add (bf16, as
// candle's broadcast add rounds), Qwen3's q/k RMSNorm (as verdict_rmsnorm_bf16 rounds), and
// for q and k the rotary embedding (non-interleaved halves, bf16 products and sums as
// candle's rope kernel rounds them); q goes to q_out [b, h, d], k and v straight into the
// rows' own cache [rows, kv, cap, d] at the slot *slot (read on the device, so a CUDA graph
// replays it at any slot). Replaces about ten launches a layer (split copies, transposes,
// two ropes, two cache writes). One block per (row, head), one thread per pair (i, i + d/2);
// at least a warp, so the reductions are whole warps.
extern "C" __global__ void verdict_qkv_rope_write_bf16(const __nv_bfloat16* __restrict__ qkv,
                                                       const __nv_bfloat16* __restrict__ bias,
                                                       const float* __restrict__ q_norm, const float* __restrict__ k_norm,
                                                       float eps, const __nv_bfloat16* __restrict__ cos,
                                                       const __nv_bfloat16* __restrict__ sin, __nv_bfloat16* __restrict__ q_out,
                                                       __nv_bfloat16* __restrict__ own_k, __nv_bfloat16* __restrict__ own_v,
                                                       const uint32_t* __restrict__ slot, int h, int kv, int d, int cap) {
    __shared__ float sv[32];
    const int row = blockIdx.x, head = blockIdx.y, half = d / 2, i = threadIdx.x;
    const bool on = i < half;
    const long long width = (long long)(h + 2 * kv) * d;
    const __nv_bfloat16* x = qkv + row * width + (long long)head * d;
    __nv_bfloat16 a = on ? x[i] : __float2bfloat16(0.f), b = on ? x[i + half] : __float2bfloat16(0.f);
    if (bias && on) {
        a = a + bias[head * d + i];
        b = b + bias[head * d + i + half];
    }
    const float* nw = head < h ? q_norm : (head < h + kv ? k_norm : nullptr);
    if (nw) {  // block-uniform: every thread takes this branch or none does
        float fa = __bfloat162float(a), fb = __bfloat162float(b);
        float r = rsqrtf(block_sum(fa * fa + fb * fb, sv) / (float)d + eps);
        if (on) {
            a = __float2bfloat16(__bfloat162float(__float2bfloat16(fa * r)) * nw[i]);
            b = __float2bfloat16(__bfloat162float(__float2bfloat16(fb * r)) * nw[i + half]);
        }
    }
    if (!on) return;
    if (head < h + kv) {
        const __nv_bfloat16 c = cos[row * half + i], s = sin[row * half + i];
        const __nv_bfloat16 ra = a * c - b * s, rb = a * s + b * c;
        a = ra;
        b = rb;
    }
    __nv_bfloat16* dst;
    if (head < h) {
        dst = q_out + ((long long)row * h + head) * d;
    } else {
        const int kh = head < h + kv ? head - h : head - h - kv;
        dst = (head < h + kv ? own_k : own_v) + (((long long)row * kv + kh) * cap + slot[0]) * d;
    }
    dst[i] = a;
    dst[i + half] = b;
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

// Segmented attention (the cascade idea): a row's keys and values are a chain of segments
// (the template header and its prompt, held once in a pool however many samples continue
// them, and its own tokens), and the rows that read one segment are read against it
// together, so each key and value tile is loaded once per group of rows instead of once per
// row. A "row" is one query position: a decode step's sample, or one token of a prefill.
//
// The host (segmented.rs) cuts the work into units: one segment's keys (at most a split's
// worth: long segments are split over the key dimension, flash-decoding style, so a few
// long rows still fill the GPU) against up to MMA_Q queries (rows of the group x the g
// query heads that share a KV head). One block per (unit, KV head) runs an online softmax
// over MMA_KT-key tiles and writes an unnormalized partial (max, sum, weighted values) per
// query; verdict_seg_merge combines each row's partials. A query at position p sees the
// keys at positions p - window < k <= p (causal; window 0: no lower bound).
//   q            [R, kv, g, D] bf16
//   pool_k/v     the prompt pool, own_k/v the rows' own tokens: a unit addresses its keys
//                as base + i * token_stride + head * head_stride (elements) in one of them
//   units        9 x i64 per unit: source (0 pool, 1 own), base, token_stride, head_stride,
//                keys, position of the first key, first index in unit_rows, rows, first
//                partial slot
//   unit_rows    u32 row indexes; row_pos u32 [R] each row's query position
//   part_ml      [P, 2] f32 (max, sum), part_o [P, D] f32; slot = first + (j * kv + h) * g + gi
//
// Both products (scores, and probabilities x values) run on tensor cores: mma.sync
// m16n8k16, bf16 in, f32 accumulate, with fragments laid out as FlashAttention 2 lays them.
// A block is four warps; each warp owns 16 of the unit's queries, holds their running max,
// sum and output in registers, and reads the unit's key and value tiles from shared memory,
// where each is loaded once for all of them.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"; gid = lane / 4,
// tig = lane % 4): A (16 x 16, row-major) regs = {(gid, 2tig..), (gid + 8, 2tig..),
// (gid, 2tig + 8..), (gid + 8, 2tig + 8..)}; B (16 x 8, column-major) regs = {(2tig.., gid),
// (2tig + 8.., gid)}; C (16 x 8) = {(gid, 2tig), (gid, 2tig + 1), (gid + 8, 2tig),
// (gid + 8, 2tig + 1)}. Two C tiles of scores side by side are exactly the A fragment of
// those probabilities, so P never leaves registers.
#define MMA_Q 64
#define MMA_KT 32

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t pack_raw(__nv_bfloat16 lo, __nv_bfloat16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Dynamic shared memory: (MMA_Q + 2 * MMA_KT) rows of D + 8 bf16 (the 8 of padding put
// consecutive rows four banks apart, so fragment loads never conflict).
template <int D>
__device__ void seg_mma(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ pool_k,
                        const __nv_bfloat16* __restrict__ pool_v, const __nv_bfloat16* __restrict__ own_k,
                        const __nv_bfloat16* __restrict__ own_v, const long long* __restrict__ units,
                        const uint32_t* __restrict__ unit_rows, const uint32_t* __restrict__ row_pos,
                        float* __restrict__ part_ml, float* __restrict__ part_o, int kv, int g, float scale, float softcap,
                        int window) {
    constexpr int SD = D + 8;
    constexpr int CH = D / 8;  // 16-byte chunks per row
    extern __shared__ __align__(16) unsigned char seg_smem[];
    __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(seg_smem);
    __nv_bfloat16* ks = qs + MMA_Q * SD;
    __nv_bfloat16* vs = ks + MMA_KT * SD;
    __shared__ int qpos[MMA_Q];
    const long long* u = units + (long long)blockIdx.x * 9;
    const int src = (int)u[0];
    const long long base = u[1], tstride = u[2], hstride = u[3];
    const int len = (int)u[4], pos0 = (int)u[5], roff = (int)u[6], nrows = (int)u[7];
    const long long first = u[8];
    const int h = blockIdx.y;
    const __nv_bfloat16* K = (src ? own_k : pool_k) + base + h * hstride;
    const __nv_bfloat16* V = (src ? own_v : pool_v) + base + h * hstride;
    const int nq = nrows * g;
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    for (int i = threadIdx.x; i < MMA_Q * CH; i += blockDim.x) {
        int qi = i / CH, c = i - qi * CH;
        uint4 v = zero4;
        if (qi < nq) {
            int j = qi / g, gi = qi - j * g;
            long long row = unit_rows[roff + j];
            v = reinterpret_cast<const uint4*>(q + ((row * kv + h) * g + gi) * D)[c];
        }
        *reinterpret_cast<uint4*>(qs + qi * SD + c * 8) = v;
    }
    for (int i = threadIdx.x; i < MMA_Q; i += blockDim.x) qpos[i] = i < nq ? (int)row_pos[unit_rows[roff + i / g]] : 0;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int r0 = warp * 16 + gid, r1 = r0 + 8;
    const bool active = warp * 16 < nq;
    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int c0 = 0; c0 < len; c0 += MMA_KT) {
        const int n = min(MMA_KT, len - c0);
        __syncthreads();  // the last tile's readers are done (and, first time, qs is written)
        for (int i = threadIdx.x; i < MMA_KT * CH; i += blockDim.x) {
            int k = i / CH, c = i - k * CH;
            uint4 kk4 = zero4, vv4 = zero4;
            if (k < n) {
                kk4 = reinterpret_cast<const uint4*>(K + (c0 + k) * tstride)[c];
                vv4 = reinterpret_cast<const uint4*>(V + (c0 + k) * tstride)[c];
            }
            *reinterpret_cast<uint4*>(ks + k * SD + c * 8) = kk4;
            *reinterpret_cast<uint4*>(vs + k * SD + c * 8) = vv4;
        }
        __syncthreads();
        if (!active) continue;
        float s[MMA_KT / 8][4];
#pragma unroll
        for (int j = 0; j < MMA_KT / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const __nv_bfloat16* qa = qs + kk * 16 + tig * 2;
            uint32_t a0 = ld32(qa + r0 * SD), a1 = ld32(qa + r1 * SD), a2 = ld32(qa + r0 * SD + 8), a3 = ld32(qa + r1 * SD + 8);
#pragma unroll
            for (int j = 0; j < MMA_KT / 8; j++) {
                const __nv_bfloat16* kb = ks + (j * 8 + gid) * SD + kk * 16 + tig * 2;
                mma_bf16(s[j], a0, a1, a2, a3, ld32(kb), ld32(kb + 8));
            }
        }
        const int p0 = qpos[r0], p1 = qpos[r1];
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < MMA_KT / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = j * 8 + tig * 2 + (e & 1);
                int qp = e < 2 ? p0 : p1;
                int kp = pos0 + c0 + key;
                bool valid = key < n && kp <= qp && (window <= 0 || kp > qp - window);
                float sc = valid ? round_score(s[j][e], scale, softcap) : -INFINITY;
                s[j][e] = sc;
                if (e < 2) mx0 = fmaxf(mx0, sc); else mx1 = fmaxf(mx1, sc);
            }
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, 2));
        const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        // A row with no visible key yet has nothing to rescale.
        const float al0 = n0 == -INFINITY ? 1.f : __expf(m0 - n0), al1 = n1 == -INFINITY ? 1.f : __expf(m1 - n1);
        m0 = n0;
        m1 = n1;
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int j = 0; j < MMA_KT / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float mref = e < 2 ? n0 : n1;
                float p = s[j][e] == -INFINITY ? 0.f : __expf(s[j][e] - mref);
                s[j][e] = p;
                if (e < 2) sum0 += p; else sum1 += p;
            }
        }
        l0 = l0 * al0 + sum0;
        l1 = l1 * al1 + sum1;
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
            o[j][0] *= al0;
            o[j][1] *= al0;
            o[j][2] *= al1;
            o[j][3] *= al1;
        }
#pragma unroll
        for (int kk = 0; kk < MMA_KT / 16; kk++) {
            uint32_t a0 = pack_bf16(s[2 * kk][0], s[2 * kk][1]), a1 = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            uint32_t a2 = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), a3 = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const __nv_bfloat16* vb = vs + (kk * 16 + tig * 2) * SD + gid;
#pragma unroll
            for (int j = 0; j < D / 8; j++) {
                const __nv_bfloat16* v = vb + j * 8;
                mma_bf16(o[j], a0, a1, a2, a3, pack_raw(v[0], v[SD]), pack_raw(v[8 * SD], v[9 * SD]));
            }
        }
    }
    if (!active) return;
    // Each lane summed its own keys; a row's four lanes hold its whole sum together.
    l0 += __shfl_xor_sync(0xffffffff, l0, 1);
    l0 += __shfl_xor_sync(0xffffffff, l0, 2);
    l1 += __shfl_xor_sync(0xffffffff, l1, 1);
    l1 += __shfl_xor_sync(0xffffffff, l1, 2);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int qi = half ? r1 : r0;
        if (qi >= nq) continue;
        int j = qi / g, gi = qi - j * g;
        long long slot = first + ((long long)j * kv + h) * g + gi;
#pragma unroll
        for (int jd = 0; jd < D / 8; jd++) {
            *reinterpret_cast<float2*>(part_o + slot * D + jd * 8 + tig * 2) = make_float2(o[jd][2 * half], o[jd][2 * half + 1]);
        }
        if (tig == 0) {
            part_ml[slot * 2] = half ? m1 : m0;
            part_ml[slot * 2 + 1] = half ? l1 : l0;
        }
    }
}

#define SEG_MMA(NAME, D)                                                                                              \
    extern "C" __global__ void __launch_bounds__(128) NAME(                                                           \
        const __nv_bfloat16* q, const __nv_bfloat16* pool_k, const __nv_bfloat16* pool_v, const __nv_bfloat16* own_k, \
        const __nv_bfloat16* own_v, const long long* units, const uint32_t* unit_rows, const uint32_t* row_pos,         \
        float* part_ml, float* part_o, int kv, int g, float scale, float softcap, int window) {                         \
        seg_mma<D>(q, pool_k, pool_v, own_k, own_v, units, unit_rows, row_pos, part_ml, part_o, kv, g, scale, softcap, \
                   window);                                                                                           \
    }
// Head sizes 16 and 32 are the tiny test models'; 64, 128 and 256 the real ones'.
SEG_MMA(verdict_seg_mma_d16, 16)
SEG_MMA(verdict_seg_mma_d32, 32)
SEG_MMA(verdict_seg_mma_d64, 64)
SEG_MMA(verdict_seg_mma_d128, 128)
SEG_MMA(verdict_seg_mma_d256, 256)

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
