// Row kernels of the cross-entropy, SwiGLU and the attention's softmax backward in AVX2+FMA when
// the processor has them (asked once at run time), plain loops otherwise. The library is compiled
// for baseline x86-64, where a loop of `std::exp` is one libm call per element; ATen's own
// vectorised exp is not reachable from here without a temporary tensor per pass, which is what
// these replace.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define STARLING_X86 1
#endif

namespace starling {
namespace simd {

/// The largest of a row of `n` floats (-inf for none).
inline float row_max_plain(const float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, x[j]);
  return mx;
}

/// log Σ exp(x[j]) over a row of `n` floats.
inline float logsumexp_plain(const float* x, int64_t n) {
  const float mx = row_max_plain(x, n);
  if (!std::isfinite(mx)) return mx;
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(x[j] - mx);
  return mx + static_cast<float>(std::log(s));
}

/// out[j] = exp(x[j] − shift) · scale over a row of `n` floats.
inline void exp_scaled_plain(const float* x, float shift, float scale, float* out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = std::exp(x[j] - shift) * scale;
}

/// x[j] = softmax(x)[j] · scale in place over a row of `n` floats; returns log Σ exp(x[j]) of the
/// row as it was. A row whose maximum is not finite gets exp(x[j] − max) · scale (NaN or 0).
inline float softmax_scaled_plain(float* x, float scale, int64_t n) {
  const float mx = row_max_plain(x, n);
  if (!std::isfinite(mx)) {
    exp_scaled_plain(x, mx, scale, x, n);
    return mx;
  }
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += (x[j] = std::exp(x[j] - mx));
  const float k = static_cast<float>(scale / s);
  for (int64_t j = 0; j < n; ++j) x[j] *= k;
  return mx + static_cast<float>(std::log(s));
}

/// σ(x) = 1 / (1 + exp(−x)).
template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

/// o[j] = silu(g[j]) · u[j] over `n` elements.
template <typename T>
inline void swiglu_plain(const T* g, const T* u, T* o, int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] = g[j] * sigmoid(g[j]) * u[j];
}

/// SwiGLU's gradients from the output's `dh`: du = dh·silu(g), dg = dh·u·silu'(g), where
/// silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
template <typename T>
inline void swiglu_backward_plain(const T* g, const T* u, const T* dh, T* dg, T* du, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T s = sigmoid(g[j]);
    du[j] = dh[j] * g[j] * s;
    dg[j] = dh[j] * u[j] * s * (T(1) + g[j] * (T(1) - s));
  }
}

/// Softmax's backward over one row, in place: d[j] = p[j] · (d[j] − delta) · scale, where `d`
/// holds the probabilities' gradient and `delta` = Σ p·d of the row.
template <typename T>
inline void softmax_backward_plain(const T* p, T delta, T scale, T* d, int64_t n) {
  for (int64_t j = 0; j < n; ++j) d[j] = p[j] * (d[j] - delta) * scale;
}

#ifdef STARLING_X86
/// exp of 8 floats (Cephes' expf: reduction by ln 2 in two parts, degree-5 polynomial; ~2 ulp),
/// inputs clamped to [-87.3, 88.37] (below, a result under 1e-38 instead of 0); NaN stays NaN
/// (`max_ps`/`min_ps` return their second operand when either is NaN).
__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.37f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  __m256 fx = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}

__attribute__((target("avx2,fma"))) inline float hmax8(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

__attribute__((target("avx2,fma"))) inline float hsum8(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

/// `row_max_plain` in AVX2.
__attribute__((target("avx2,fma"))) inline float row_max_avx2(const float* x, int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  __m256 vm = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n8; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + j));
  return std::max(hmax8(vm), row_max_plain(x + n8, n - n8));
}

/// `logsumexp_plain` in AVX2+FMA: one pass for the maximum, one for the sum of exponentials.
__attribute__((target("avx2,fma"))) inline float logsumexp_avx2(const float* x, int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  const float mx = row_max_avx2(x, n);
  if (!std::isfinite(mx)) return mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vs = _mm256_setzero_ps();
  for (int64_t j = 0; j < n8; j += 8) {
    vs = _mm256_add_ps(vs, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx)));
  }
  double s = hsum8(vs);
  for (int64_t j = n8; j < n; ++j) s += std::exp(x[j] - mx);
  return mx + static_cast<float>(std::log(s));
}

/// `exp_scaled_plain` in AVX2+FMA.
__attribute__((target("avx2,fma"))) inline void exp_scaled_avx2(const float* x, float shift,
                                                                float scale, float* out,
                                                                int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  const __m256 vsh = _mm256_set1_ps(shift), vsc = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < n8; j += 8) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vsh));
    _mm256_storeu_ps(out + j, _mm256_mul_ps(e, vsc));
  }
  for (int64_t j = n8; j < n; ++j) out[j] = std::exp(x[j] - shift) * scale;
}

/// `softmax_scaled_plain` in AVX2+FMA: one pass for the maximum, one storing the exponentials and
/// summing them, one scaling them (the row stays in cache between them).
__attribute__((target("avx2,fma"))) inline float softmax_scaled_avx2(float* x, float scale,
                                                                    int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  const float mx = row_max_avx2(x, n);
  if (!std::isfinite(mx)) {
    exp_scaled_avx2(x, mx, scale, x, n);
    return mx;
  }
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vs = _mm256_setzero_ps();
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx));
    _mm256_storeu_ps(x + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  double s = hsum8(vs);
  for (int64_t j = n8; j < n; ++j) s += (x[j] = std::exp(x[j] - mx));
  const float k = static_cast<float>(scale / s);
  const __m256 vk = _mm256_set1_ps(k);
  for (int64_t j = 0; j < n8; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), vk));
  for (int64_t j = n8; j < n; ++j) x[j] *= k;
  return mx + static_cast<float>(std::log(s));
}

/// σ(x) = 1 / (1 + exp(−x)) of 8 floats (NaN stays NaN).
__attribute__((target("avx2,fma"))) inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

/// `swiglu_plain` in AVX2+FMA.
__attribute__((target("avx2,fma"))) inline void swiglu_avx2(const float* g, const float* u,
                                                            float* o, int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 x = _mm256_loadu_ps(g + j);
    const __m256 s = sigmoid8(x);
    _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_loadu_ps(u + j)));
  }
  swiglu_plain(g + n8, u + n8, o + n8, n - n8);
}

/// `swiglu_backward_plain` in AVX2+FMA.
__attribute__((target("avx2,fma"))) inline void swiglu_backward_avx2(const float* g,
                                                                     const float* u,
                                                                     const float* dh, float* dg,
                                                                     float* du, int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 x = _mm256_loadu_ps(g + j), d = _mm256_loadu_ps(dh + j);
    const __m256 s = sigmoid8(x);
    _mm256_storeu_ps(du + j, _mm256_mul_ps(_mm256_mul_ps(d, x), s));
    // silu'(x) = s·(1 + x·(1 − s))
    const __m256 slope = _mm256_mul_ps(s, _mm256_fmadd_ps(x, _mm256_sub_ps(one, s), one));
    _mm256_storeu_ps(dg + j, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + j)), slope));
  }
  swiglu_backward_plain(g + n8, u + n8, dh + n8, dg + n8, du + n8, n - n8);
}

/// `softmax_backward_plain` in AVX2+FMA.
__attribute__((target("avx2,fma"))) inline void softmax_backward_avx2(const float* p, float delta,
                                                                      float scale, float* d,
                                                                      int64_t n) {
  const int64_t n8 = n & ~int64_t{7};
  const __m256 vd = _mm256_set1_ps(delta), vs = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 g = _mm256_sub_ps(_mm256_loadu_ps(d + j), vd);
    _mm256_storeu_ps(d + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(p + j), g), vs));
  }
  softmax_backward_plain(p + n8, delta, scale, d + n8, n - n8);
}

/// Whether this processor runs AVX2 and FMA (asked once).
inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

/// log Σ exp over a row of `n` floats.
inline float logsumexp(const float* x, int64_t n) {
#ifdef STARLING_X86
  if (has_avx2()) return logsumexp_avx2(x, n);
#endif
  return logsumexp_plain(x, n);
}

/// out[j] = exp(x[j] − shift) · scale over a row of `n` floats (`out` may be `x`).
inline void exp_scaled(const float* x, float shift, float scale, float* out, int64_t n) {
#ifdef STARLING_X86
  if (has_avx2()) return exp_scaled_avx2(x, shift, scale, out, n);
#endif
  exp_scaled_plain(x, shift, scale, out, n);
}

/// x[j] = softmax(x)[j] · scale in place over a row of `n` floats; returns the row's log Σ exp.
inline float softmax_scaled(float* x, float scale, int64_t n) {
#ifdef STARLING_X86
  if (has_avx2()) return softmax_scaled_avx2(x, scale, n);
#endif
  return softmax_scaled_plain(x, scale, n);
}

/// o[j] = silu(g[j]) · u[j] over `n` elements.
template <typename T>
inline void swiglu(const T* g, const T* u, T* o, int64_t n) {
#ifdef STARLING_X86
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx2()) return swiglu_avx2(g, u, o, n);
  }
#endif
  swiglu_plain(g, u, o, n);
}

/// SwiGLU's gradients du = dh·silu(g), dg = dh·u·silu'(g) over `n` elements.
template <typename T>
inline void swiglu_backward(const T* g, const T* u, const T* dh, T* dg, T* du, int64_t n) {
#ifdef STARLING_X86
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx2()) return swiglu_backward_avx2(g, u, dh, dg, du, n);
  }
#endif
  swiglu_backward_plain(g, u, dh, dg, du, n);
}

/// Softmax's backward over one row, in place: d[j] = p[j] · (d[j] − delta) · scale.
template <typename T>
inline void softmax_backward(const T* p, T delta, T scale, T* d, int64_t n) {
#ifdef STARLING_X86
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx2()) return softmax_backward_avx2(p, delta, scale, d, n);
  }
#endif
  softmax_backward_plain(p, delta, scale, d, n);
}

}  // namespace simd
}  // namespace starling
