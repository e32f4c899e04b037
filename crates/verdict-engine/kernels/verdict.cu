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

// Decode attention: one new query per row (t = 1) against that row's cached keys and values,
// in one pass with an online softmax (what candle ops do in seven launches, each writing the
// scores out).
//   q    [b, kv, g, hd] bf16, contiguous: the g query heads that share one KV head together
//   k, v [b, kv, L, hd] bf16, strided (views of the cache), strides given in elements
//   pads [b] u32: row r attends to slots max(pads[r], L - window) .. L - 1
//   out  [b, kv, g, hd] bf16
// Scores are rounded to bf16 after the product and after the scale, as transformers' eager
// attention rounds them; the softmax and the weighted sum are f32.
// One block of ATT_THREADS threads per (row, KV head); keys go in tiles of ATT_THREADS, one
// key per thread for the scores, then every thread accumulates its share of the g*hd outputs.
#define ATT_THREADS 128
#define ATT_MAX_G 16
#define ATT_MAX_OUT 32   // g * hd <= ATT_THREADS * ATT_MAX_OUT
extern "C" __global__ void verdict_decode_attention_bf16(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
    const uint32_t* __restrict__ pads, __nv_bfloat16* __restrict__ out,
    int kv, int g, int hd, int L, long long k_sb, long long k_sh, long long v_sb, long long v_sh,
    float scale, float softcap, int window) {
    __shared__ float qs[ATT_MAX_G * 256];
    __shared__ float ps[ATT_MAX_G][ATT_THREADS];
    __shared__ float m_s[ATT_MAX_G], alpha_s[ATT_MAX_G], l_s[ATT_MAX_G];
    int row = blockIdx.x / kv, h = blockIdx.x % kv, tid = threadIdx.x;
    const __nv_bfloat16* qb = q + ((long long)row * kv + h) * g * hd;
    const __nv_bfloat16* kb = k + row * k_sb + h * k_sh;
    const __nv_bfloat16* vb = v + row * v_sb + h * v_sh;
    for (int i = tid; i < g * hd; i += ATT_THREADS) qs[i] = __bfloat162float(qb[i]);
    if (tid < g) { m_s[tid] = -INFINITY; l_s[tid] = 0.f; }
    int lo = (int)pads[row];
    if (window > 0 && L - window > lo) lo = L - window;
    float acc[ATT_MAX_OUT];
    int n_out = (g * hd + ATT_THREADS - 1) / ATT_THREADS;
    for (int i = 0; i < ATT_MAX_OUT; i++) acc[i] = 0.f;
    __syncthreads();

    for (int tile = lo; tile < L; tile += ATT_THREADS) {
        int c = tile + tid;
        if (c < L) {
            const __nv_bfloat16* kr = kb + (long long)c * hd;
            for (int j = 0; j < g; j++) {
                float s = 0.f;
                const float* qj = qs + j * hd;
                for (int d = 0; d < hd; d += 2) {
                    float2 kf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d));
                    s += qj[d] * kf.x + qj[d + 1] * kf.y;
                }
                s = __bfloat162float(__float2bfloat16(s));
                s = __bfloat162float(__float2bfloat16(s * scale));
                if (softcap > 0.f) s = softcap * tanhf(s / softcap);
                ps[j][tid] = s;
            }
        } else {
            for (int j = 0; j < g; j++) ps[j][tid] = -INFINITY;
        }
        __syncthreads();
        if (tid < g) {
            float m = m_s[tid];
            for (int i = 0; i < ATT_THREADS; i++) m = fmaxf(m, ps[tid][i]);
            alpha_s[tid] = m_s[tid] == -INFINITY ? 0.f : __expf(m_s[tid] - m);
            m_s[tid] = m;
        }
        __syncthreads();
        for (int j = 0; j < g; j++) {
            float s = ps[j][tid];
            ps[j][tid] = s == -INFINITY ? 0.f : __expf(s - m_s[j]);
        }
        __syncthreads();
        if (tid < g) {
            float sum = 0.f;
            for (int i = 0; i < ATT_THREADS; i++) sum += ps[tid][i];
            l_s[tid] = l_s[tid] * alpha_s[tid] + sum;
        }
        int n_keys = min(ATT_THREADS, L - tile);
        for (int i = 0; i < n_out; i++) {
            int o = tid + i * ATT_THREADS;
            if (o >= g * hd) break;
            int j = o / hd, d = o - j * hd;
            float a = acc[i] * alpha_s[j];
            const __nv_bfloat16* vc = vb + (long long)tile * hd + d;
            for (int x = 0; x < n_keys; x++) a += ps[j][x] * __bfloat162float(vc[(long long)x * hd]);
            acc[i] = a;
        }
        __syncthreads();
    }
    __nv_bfloat16* ob = out + ((long long)row * kv + h) * g * hd;
    for (int i = 0; i < n_out; i++) {
        int o = tid + i * ATT_THREADS;
        if (o >= g * hd) break;
        int j = o / hd;
        ob[o] = __float2bfloat16(acc[i] / l_s[j]);
    }
}
