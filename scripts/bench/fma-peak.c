/*
 * The 128-bit FMA ceiling of one core, the bound the wasm matmul (f32x4 relaxed madd) is measured
 * against in the README: 12 independent accumulators, so throughput, not latency, limits it.
 * Build and run: gcc -O2 -mfma scripts/bench/fma-peak.c -o /tmp/fma-peak && /tmp/fma-peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

int main(void) {
  __m128 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm_set1_ps(0.f);
  __m128 a = _mm_set1_ps(1.0000001f), b = _mm_set1_ps(0.9999999f);
  const long passes = 400000000 / 12;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < passes; i++) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; j++) acc[j] = _mm_fmadd_ps(a, b, acc[j]);
    __asm__ volatile("" : "+x"(a)); /* keep the loop from being folded */
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  float sum = 0, lane[4];
  for (int i = 0; i < 12; i++) {
    _mm_storeu_ps(lane, acc[i]);
    sum += lane[0];
  }
  printf("128-bit FMA, one core: %.1f GFLOP/s (checksum %g)\n", passes * 12.0 * 8 / s / 1e9, sum);
  return 0;
}
