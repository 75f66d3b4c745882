// The CPU conv2d entry points: each asks select.cpp which algorithm runs and calls that family's kernel.
#include "cpu/conv2d.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/depthwise/depthwise.h"
#include "cpu/direct/direct.h"
#include "cpu/gemm/conv_gemm.h"
#include "cpu/gemm/micro.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/select.h"
#include "cpu/winograd/winograd.h"

namespace fastconv::cpu {

namespace {

template <typename T>
constexpr bool kIsFloat = std::is_same_v<T, float>;

template <typename T>
Arithmetic arithmetic() {
  if constexpr (!kIsFloat<T>) return Arithmetic::kDouble;
  return bf16_products_on(active_isa()) ? Arithmetic::kBf16Products : Arithmetic::kFloat;
}

// Winograd multiplies transformed tiles, which are not bfloat16 values: its GEMMs keep float products whatever
// the operands' type (select.cpp says why). `run` returns whether its result is all finite; when it is not,
// `again` computes it with the GEMM: Winograd's transforms spread a NaN or an infinity of the inputs over whole
// tiles, where torch's direct sums keep it to the outputs that read it (winograd.h).
template <class Run, class Again>
void winograd_or_again(Run&& run, Again&& again) {
  const ScopedBf16Products float_products(false);
  if (!run()) again();
}

bool is_winograd(ConvAlgo algo) {
  return algo == ConvAlgo::kWinogradTileLanes || algo == ConvAlgo::kWinogradImageLanes ||
         algo == ConvAlgo::kWinogradF4ImageLanes;
}

bool is_winograd_image_lanes(ConvAlgo algo) {
  return algo == ConvAlgo::kWinogradImageLanes || algo == ConvAlgo::kWinogradF4ImageLanes;
}

// The forward of Winograd kind `algo` (flipped: of the grad-input's flipped problem, reading w flipped in place),
// and its weight gradient; each returns whether its result is all finite.
bool winograd_forward(ConvAlgo algo, const ConvParams& p, const float* x, const float* w, const float* bias,
                      float* y, bool flipped) {
  switch (algo) {
    case ConvAlgo::kWinogradTileLanes: return winograd_forward_tile_lanes(p, x, w, bias, y, flipped);
    case ConvAlgo::kWinogradImageLanes: return winograd_forward_image_lanes(p, x, w, bias, y, flipped);
    case ConvAlgo::kWinogradF4ImageLanes: return winograd_f4_forward_image_lanes(p, x, w, bias, y, flipped);
    default: throw std::logic_error(std::string("fastconv: ") + algo_name(algo) + " is not a Winograd algorithm");
  }
}
bool winograd_grad_weight(ConvAlgo algo, const ConvParams& p, const float* dy, const float* x, float* dw) {
  switch (algo) {
    case ConvAlgo::kWinogradTileLanes: return winograd_grad_weight_tile_lanes(p, dy, x, dw);
    case ConvAlgo::kWinogradImageLanes: return winograd_grad_weight_image_lanes(p, dy, x, dw);
    case ConvAlgo::kWinogradF4ImageLanes: return winograd_f4_grad_weight_image_lanes(p, dy, x, dw);
    default: throw std::logic_error(std::string("fastconv: ") + algo_name(algo) + " is not a Winograd algorithm");
  }
}

[[noreturn]] void no_kernel(ConvAlgo algo, const char* pass) {
  throw std::logic_error(std::string("fastconv: no ") + algo_name(algo) + " kernel for the " + pass +
                         " in this dtype");
}

template <typename T>
void forward_with(ConvAlgo algo, const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  switch (algo) {
    case ConvAlgo::kNone: return;  // (no input channels: the binding fills the bias in)
    case ConvAlgo::kDepthwise: return depthwise_forward(p, x, w, bias, y);
    case ConvAlgo::kGemmFewPixels: return gemm_forward_few_pixels(p, x, w, bias, y);
    case ConvAlgo::kGemm:
    case ConvAlgo::kGemmBf16Pairs:  // (float copies of the operands: the plain GEMM, bfloat16 products)
      return gemm_forward(p, x, w, bias, y);
    case ConvAlgo::kWinogradTileLanes:
    case ConvAlgo::kWinogradImageLanes:
    case ConvAlgo::kWinogradF4ImageLanes:
      if constexpr (kIsFloat<T>)
        return winograd_or_again([&] { return winograd_forward(algo, p, x, w, bias, y, false); },
                                 [&] { gemm_forward(p, x, w, bias, y); });
      break;
    case ConvAlgo::kDirectFewOutputs:
      if constexpr (kIsFloat<T>) return few_outputs_forward(p, x, w, bias, y);
      break;
    default: break;
  }
  no_kernel(algo, "forward");
}

// Weights of p rotated by 180 degrees with k <-> c swapped, in the layout of flipped_forward(p)'s weights: per group
// and tap a Kg x Cg transpose, in blocks of kBlock x kBlock (k, c) pairs so that reads and writes each stay in a few
// cache lines. weight_offset is linear in each index, so its steps in k and c serve both layouts with no offset
// math per element, and the array is not zero-filled first: every entry is written (ResNet's 512->512 @4 bfloat16
// grad-input at batch 64: 11.3-11.7 -> 10.5-11.0 ms, Zen 4).
template <typename T>
std::unique_ptr<T[]> flip_weights(const ConvParams& p, const ConvParams& flipped_p, const T* w) {
  constexpr int64_t kBlock = 16;
  const int64_t Kg = p.Kg(), Cg = p.Cg(), RS = p.RS();
  std::unique_ptr<T[]> flipped(new T[static_cast<size_t>(p.K * Cg * RS)]);
  const int64_t from_k = p.weight_offset(1, 0, 0, 0), from_c = p.weight_offset(0, 1, 0, 0);
  const int64_t to_c = flipped_p.weight_offset(1, 0, 0, 0), to_k = flipped_p.weight_offset(0, 1, 0, 0);
  const int64_t k_blocks = ceil_div(Kg, kBlock), c_blocks = ceil_div(Cg, kBlock);
  parallel_for(0, p.groups * k_blocks * c_blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / (k_blocks * c_blocks), kb = t / c_blocks % k_blocks, cb = t % c_blocks;
      const int64_t k0 = kb * kBlock, klen = std::min(Kg - k0, kBlock);
      const int64_t c0 = cb * kBlock, clen = std::min(Cg - c0, kBlock);
      for (int64_t tap = 0; tap < RS; ++tap) {
        const int64_t r = tap / p.S, s = tap % p.S;
        const T* from = w + p.weight_offset(g * Kg + k0, c0, r, s);
        T* to = flipped.get() + flipped_p.weight_offset(g * Cg + c0, k0, p.R - 1 - r, p.S - 1 - s);
        for (int64_t k = 0; k < klen; ++k)
          for (int64_t c = 0; c < clen; ++c) to[c * to_c + k * to_k] = from[k * from_k + c * from_c];
      }
    }
  });
  return flipped;
}

}  // namespace

template <typename T>
void conv2d_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  forward_with(choose_forward(p, arithmetic<T>()), p, x, w, bias, y);
}

template <typename T>
void conv2d_grad_input(const ConvParams& p, const T* dy, const T* w, T* dx) {
  const GradInputChoice choice = choose_grad_input(p, arithmetic<T>());
  if (choice.as_flipped_forward) {
    const ConvParams fwd = flipped_forward(p);
    auto forward_of_flipped = [&](ConvAlgo algo) {
      const std::unique_ptr<T[]> flipped = flip_weights(p, fwd, w);
      forward_with<T>(algo, fwd, dy, flipped.get(), nullptr, dx);
    };
    if constexpr (kIsFloat<T>) {  // Winograd reads the weights flipped in place
      if (is_winograd(choice.algo))
        return winograd_or_again([&] { return winograd_forward(choice.algo, fwd, dy, w, nullptr, dx, true); },
                                 [&] { forward_of_flipped(ConvAlgo::kGemm); });
    }
    return forward_of_flipped(choice.algo);
  }
  switch (choice.algo) {
    case ConvAlgo::kNone: return;
    case ConvAlgo::kDepthwise: return depthwise_grad_input(p, dy, w, dx);
    case ConvAlgo::kGemmCol2im: return gemm_grad_input_col2im(p, dy, w, dx);
    default: no_kernel(choice.algo, "grad-input");
  }
}

template <typename T>
void conv2d_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw) {
  auto zero_dw = [&] { std::fill(dw, dw + p.K * p.Cg() * p.RS(), T(0)); };
  zero_dw();
  const ConvAlgo algo = choose_grad_weight(p, arithmetic<T>());
  switch (algo) {
    case ConvAlgo::kNone: return;
    case ConvAlgo::kDepthwise: return depthwise_grad_weight(p, dy, x, dw);
    case ConvAlgo::kGemm: return gemm_grad_weight(p, dy, x, dw);
    case ConvAlgo::kGemmFewPixels: return gemm_grad_weight_few_pixels(p, dy, x, dw);
    case ConvAlgo::kWinogradTileLanes:
    case ConvAlgo::kWinogradImageLanes:
    case ConvAlgo::kWinogradF4ImageLanes:
      if constexpr (kIsFloat<T>)
        return winograd_or_again([&] { return winograd_grad_weight(algo, p, dy, x, dw); },
                                 [&] { zero_dw(), gemm_grad_weight(p, dy, x, dw); });
      break;
    case ConvAlgo::kDirectFewTaps:
      if constexpr (kIsFloat<T>) return few_taps_grad_weight(p, dy, x, dw);
      break;
    default: break;
  }
  no_kernel(algo, "grad-weight");
}

namespace {

// The forwards that read NHWC bfloat16 channel pairs in place: the pair GEMM, and the few-pixel GEMMs where the
// channels pair up (groups 1).
bool reads_pairs(const ConvParams& p, ConvAlgo algo) {
  return algo == ConvAlgo::kGemmBf16Pairs ||
         (algo == ConvAlgo::kGemmFewPixels && p.channels_last && p.groups == 1 && p.C % 2 == 0);
}

// y in bfloat16: the pair GEMM on AVX512-BF16 writes it from each task's float sums; the few-pixel GEMM and the
// AMX tiles sum into a float y, rounded here once.
void forward_bf16_pairs(const ConvParams& p, ConvAlgo algo, const uint16_t* x, const uint16_t* w, const float* bias,
                        uint16_t* y) {
  if (algo == ConvAlgo::kGemmBf16Pairs && active_isa() == Isa::kAvx512Bf16) return pair_rows_forward(p, x, w, bias, y);
  const int64_t n = p.N * p.PQ() * p.K;
  const std::unique_ptr<float[]> sums = fresh_array<float>(n);
  if (algo == ConvAlgo::kGemmFewPixels)
    gemm_forward_few_pixels_bf16_pairs(p, x, w, bias, sums.get());
  else
    gemm_forward_bf16_pairs(p, x, w, bias, sums.get());
  constexpr int64_t kChunk = 1 << 14;
  const RoundFn round_run = avx512_bf16::round_to_bf16_run();  // (every CPU with bfloat16 products has AVX512-BF16)
  parallel_for(0, ceil_div(n, kChunk), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      round_run(sums.get() + c * kChunk, std::min(kChunk, n - c * kChunk), y + c * kChunk);
  });
}

}  // namespace

bool conv2d_forward_bf16_applies(const ConvParams& p) {
  return has_bf16_products(active_isa()) && reads_pairs(p, choose_forward(p, Arithmetic::kBf16Products));
}

bool conv2d_grad_input_bf16_applies(const ConvParams& p) {
  const GradInputChoice choice = choose_grad_input(p, Arithmetic::kBf16Products);
  return has_bf16_products(active_isa()) && choice.as_flipped_forward && reads_pairs(flipped_forward(p), choice.algo);
}

// The NHWC GEMM weight gradient reads bfloat16 dy and x in place, widening them as it packs (its reduction runs
// over pixels, so its pairs are two pixels' values, which the driver's panel conversion makes).
bool conv2d_grad_weight_bf16_applies(const ConvParams& p) {
  return has_bf16_products(active_isa()) && p.channels_last &&
         choose_grad_weight(p, Arithmetic::kBf16Products) == ConvAlgo::kGemm;
}

void conv2d_forward_bf16(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias, uint16_t* y) {
  if (!conv2d_forward_bf16_applies(p)) throw std::logic_error("fastconv: no bfloat16 pair forward for this problem");
  forward_bf16_pairs(p, choose_forward(p, Arithmetic::kBf16Products), x, w, bias, y);
}

void conv2d_grad_input_bf16(const ConvParams& p, const uint16_t* dy, const uint16_t* w, uint16_t* dx) {
  if (!conv2d_grad_input_bf16_applies(p))
    throw std::logic_error("fastconv: no bfloat16 pair grad-input for this problem");
  const ConvParams fwd = flipped_forward(p);
  const std::unique_ptr<uint16_t[]> flipped = flip_weights(p, fwd, w);
  forward_bf16_pairs(fwd, choose_grad_input(p, Arithmetic::kBf16Products).algo, dy, flipped.get(), nullptr, dx);
}

void conv2d_grad_weight_bf16(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw) {
  if (!conv2d_grad_weight_bf16_applies(p))
    throw std::logic_error("fastconv: no bfloat16 in-place weight gradient for this problem");
  std::fill(dw, dw + p.K * p.Cg() * p.RS(), 0.0f);
  gemm_grad_weight_bf16_nhwc(p, dy, x, dw);
}

bool conv2d_forward_winograd_bf16_applies(const ConvParams& p, Arithmetic arithmetic) {
  return is_winograd_image_lanes(choose_forward(p, arithmetic));
}

bool conv2d_grad_input_winograd_bf16_applies(const ConvParams& p, Arithmetic arithmetic) {
  const GradInputChoice choice = choose_grad_input(p, arithmetic);
  return choice.as_flipped_forward && is_winograd_image_lanes(choice.algo);
}

bool conv2d_grad_weight_winograd_bf16_applies(const ConvParams& p, Arithmetic arithmetic) {
  return is_winograd_image_lanes(choose_grad_weight(p, arithmetic));
}

bool conv2d_forward_winograd_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* x, const float* w,
                                  const float* bias, uint16_t* y) {
  const ConvAlgo algo = choose_forward(p, arithmetic);
  if (!is_winograd_image_lanes(algo)) throw std::logic_error("fastconv: no bfloat16 Winograd forward for this problem");
  const ScopedBf16Products float_products(false);
  return algo == ConvAlgo::kWinogradF4ImageLanes ? winograd_f4_forward_image_lanes(p, x, w, bias, y, false)
                                                 : winograd_forward_image_lanes(p, x, w, bias, y, false);
}

bool conv2d_grad_input_winograd_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy, const float* w,
                                     uint16_t* dx) {
  const GradInputChoice choice = choose_grad_input(p, arithmetic);
  if (!choice.as_flipped_forward || !is_winograd_image_lanes(choice.algo))
    throw std::logic_error("fastconv: no bfloat16 Winograd grad-input for this problem");
  const ConvParams fwd = flipped_forward(p);
  const ScopedBf16Products float_products(false);
  return choice.algo == ConvAlgo::kWinogradF4ImageLanes
             ? winograd_f4_forward_image_lanes(fwd, dy, w, nullptr, dx, true)
             : winograd_forward_image_lanes(fwd, dy, w, nullptr, dx, true);
}

bool conv2d_grad_weight_winograd_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy,
                                      const uint16_t* x, float* dw) {
  const ConvAlgo algo = choose_grad_weight(p, arithmetic);
  if (!is_winograd_image_lanes(algo))
    throw std::logic_error("fastconv: no bfloat16 Winograd weight gradient for this problem");
  std::fill(dw, dw + p.K * p.Cg() * p.RS(), 0.0f);
  const ScopedBf16Products float_products(false);
  return algo == ConvAlgo::kWinogradF4ImageLanes ? winograd_f4_grad_weight_image_lanes(p, dy, x, dw)
                                                 : winograd_grad_weight_image_lanes(p, dy, x, dw);
}

bool conv2d_forward_image_bf16_applies(const ConvParams& p, Arithmetic arithmetic) {
  return choose_forward(p, arithmetic) == ConvAlgo::kDirectFewOutputs && nhwc_image_input(p);
}

bool conv2d_grad_weight_image_bf16_applies(const ConvParams& p, Arithmetic arithmetic) {
  return choose_grad_weight(p, arithmetic) == ConvAlgo::kDirectFewTaps && nhwc_image_input(p);
}

void conv2d_forward_image_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* x, const float* w,
                               const float* bias, uint16_t* y) {
  if (!conv2d_forward_image_bf16_applies(p, arithmetic))
    throw std::logic_error("fastconv: no bfloat16 image-input forward for this problem");
  few_outputs_forward_bf16(p, x, w, bias, y);
}

void conv2d_grad_weight_image_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy, const uint16_t* x,
                                   float* dw) {
  if (!conv2d_grad_weight_image_bf16_applies(p, arithmetic))
    throw std::logic_error("fastconv: no bfloat16 image-input weight gradient for this problem");
  few_taps_grad_weight_bf16(p, dy, x, dw);
}

bool conv2d_grad_input_col2im_bf16_applies(const ConvParams& p, Arithmetic arithmetic) {
  const GradInputChoice choice = choose_grad_input(p, arithmetic);
  return p.groups == 1 && !choice.as_flipped_forward && choice.algo == ConvAlgo::kGemmCol2im;
}

void conv2d_grad_input_col2im_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy, const float* w,
                                   uint16_t* dx) {
  if (!conv2d_grad_input_col2im_bf16_applies(p, arithmetic))
    throw std::logic_error("fastconv: no bfloat16 col2im grad-input for this problem");
  const ScopedBf16Products products(arithmetic == Arithmetic::kBf16Products);
  gemm_grad_input_col2im_bf16(p, dy, w, dx);
}

template <typename T>
void conv2d_grad_bias(const ConvParams& p, const T* dy, T* db) {
  const int64_t PQ = p.PQ();
  // Double sums over N * P * Q terms in a fixed order (whatever the threads). NCHW: one task per channel, each
  // plane summed in 8 independent double lanes (a single running sum waits on each add: LeNet's first layer took
  // 0.35 ms, as long as its forward). channels_last: below.
  if (!p.channels_last) {
    parallel_for(0, p.K, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        double lanes[8] = {};
        for (int64_t n = 0; n < p.N; ++n) {
          const T* src = dy + (n * p.K + k) * PQ;
          int64_t i = 0;
          for (; i + 8 <= PQ; i += 8)
            for (int l = 0; l < 8; ++l) lanes[l] += static_cast<double>(src[i + l]);
          for (; i < PQ; ++i) lanes[i % 8] += static_cast<double>(src[i]);
        }
        db[k] = static_cast<T>(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                               ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])));
      }
    });
    return;
  }
  // channels_last: a fixed number of blocks of pixels, each with its own sums of every channel, added up in
  // block order (blocks of channels read every pixel's whole run of channels once per block: 4.6x torch's time).
  const int64_t pixels = p.N * PQ, blocks = std::clamp<int64_t>(pixels / 256, 1, 64);
  std::vector<double> partial(static_cast<size_t>(blocks * p.K), 0.0);
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* __restrict acc = partial.data() + b * p.K;
      for (int64_t i = pixels * b / blocks; i < pixels * (b + 1) / blocks; ++i) {
        const T* __restrict src = dy + i * p.K;
        for (int64_t k = 0; k < p.K; ++k) acc[k] += static_cast<double>(src[k]);
      }
    }
  });
  for (int64_t k = 0; k < p.K; ++k) {
    double sum = 0.0;
    for (int64_t b = 0; b < blocks; ++b) sum += partial[b * p.K + k];
    db[k] = static_cast<T>(sum);
  }
}

#define FASTCONV_INSTANTIATE(T)                                                                   \
  template void conv2d_forward<T>(const ConvParams&, const T*, const T*, const T*, T*);         \
  template void conv2d_grad_input<T>(const ConvParams&, const T*, const T*, T*);                \
  template void conv2d_grad_weight<T>(const ConvParams&, const T*, const T*, T*);               \
  template void conv2d_grad_bias<T>(const ConvParams&, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::cpu
