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
