// The one place that maps (pass, problem) to a CPU algorithm. Read top to bottom, each pass is a table: the
// first row whose condition holds wins. Thresholds carry the reason they are where they are.
//
// forward                  condition                                          why
//   none                   no output pixels or channels, or no input channels  nothing to sum
//   depthwise              Cg == 1, groups > 1                                 a GEMM of reduction R*S is all edges
//   gemm, few pixels       <= 9 outputs (16: bf16), >= 1/4 of taps padding  see few_pixels_fits
//   winograd 4x4, images   as the next row, and f4_fits (maps of 4+ big tiles)  36 multiplies per 16 outputs, not 64
//   winograd, image lanes  winograd_fits, N >= 8, C >= 16, K > 16              see image_lanes, winograd_fits
//   winograd, tile lanes   winograd_fits: C, K >= 32                           4 multiplies per output, not 9
//   direct, few outputs    float, groups 1, K <= 16 or C <= 4, stride_w 1    8-row GEMM tiles mostly empty
//   gemm, bfloat16 pairs   bfloat16 products, NHWC, Cg even                    see bf16_pairs_fit
//   gemm                   everything else
//
// grad-input               stride 1: the forward table, on flipped_forward(p) (depthwise p stays depthwise)
//   none                   no images or input channels
//   depthwise              Cg == 1, groups > 1
//   forward of flipped     stride 1
//   gemm col2im            strided: a strided conv's transpose is not a conv
//
// grad-weight
//   none                   no images, output pixels or weights
//   depthwise              Cg == 1, groups > 1
//   gemm, few pixels       as the forward's row
//   winograd 4x4, images   as the next row, and f4_fits
//   winograd, image lanes  winograd_fits, N >= 8, C >= 16, K > 16
//   winograd, tile lanes   winograd_fits: C, K >= 32
//   direct, few taps       float, groups 1, stride_w 1, S <= 5, C*R*S <= 160   see few_taps_fits
//   gemm                   everything else
//
// "float" rows take bfloat16 operands too (computed in float32); only the GEMM multiplies them in bfloat16. Under
// FASTCONV_ISA=amx_bf16 the winograd rows never hold for bfloat16 products (see winograd_fits).
// Inside the GEMM, how im2col rows are packed (straight from x, or from phase planes) is the GEMM's own choice
// (gemm/phase_planes.h: packs_from_planes); it changes the speed, not the sums. So is, with bfloat16 products on
// AVX512-BF16, reading NHWC pairs in place (gemm/pair_rows.cpp): the pair GEMM's A rows, and a strided
// grad-input gathered per phase of the input rather than scattered by col2im (NHWC, K even).
#include "cpu/select.h"

#include <cstdlib>
#include <cstring>

#include "cpu/direct/direct.h"
#include "cpu/gemm/conv_gemm.h"

namespace fastconv::cpu {

namespace {

// The image-lane transforms fill their 16 lanes with images at one tile position: each channel's rows are
// transposed once instead of each 4x4 tile being assembled value by value (that assembly was a quarter to a
// third of the 128- and 512-channel layers' forward). NHWC pixels are transposed 16 channels x 16 images at a
// time into the same per-channel lanes. With under 8 images most lanes would be empty: tile lanes there.
constexpr int64_t kImageLanesMinBatch = 8;
bool image_lanes(const ConvParams& p) { return p.N >= kImageLanesMinBatch; }

// F(4x4, 3x3) tiles (winograd/formulas_f4.inc) take 36 multiplies per 16 outputs where F(2x2, 3x3) takes 64:
// where the map's tiles make that at least a quarter fewer multiplies, the GEMMs shrink and the forward and
// grad-input run 1.4-1.6x faster, the weight gradient 1.05-1.7x (the fast CIFAR net's 31x31 to 7x7 layers,
// ResNet-18's 32x32 to 8x8; Zen 4, batch 64-256). Maps with under 4 such tiles (ResNet's 4x4, the fast net's
// 3x3) give a block too few GEMM columns for the 36 planes of weights it streams: 0.6-0.7x there (blocks of
// several image groups, for more columns, ran 0.5-0.9x: fewer blocks idle a thread, V and M outgrow L2). Rounding
// errors are ~4x F(2x2)'s (formulas_f4.inc); FASTCONV_WINOGRAD=2 keeps F(2x2, 3x3) everywhere (as 0 turns
// Winograd off). Only the image lanes have them: batches under 8 images (tile lanes) keep F(2x2, 3x3).
// FASTCONV_WINOGRAD's value is `value` (read at every call, as FASTCONV_ISA is).
bool winograd_setting_is(const char* value) {
  const char* env = std::getenv("FASTCONV_WINOGRAD");
  return env != nullptr && std::strcmp(env, value) == 0;
}

bool f4_fits(const ConvParams& p) {
  if (winograd_setting_is("2")) return false;
  const int64_t f4_tiles = ceil_div(p.P, 4) * ceil_div(p.Q, 4), f2_tiles = ceil_div(p.P, 2) * ceil_div(p.Q, 2);
  return f4_tiles >= 4 && 4 * (36 * f4_tiles) <= 3 * (16 * f2_tiles);
}

ConvAlgo winograd_lanes(const ConvParams& p) {
  if (!image_lanes(p)) return ConvAlgo::kWinogradTileLanes;
  return f4_fits(p) ? ConvAlgo::kWinogradF4ImageLanes : ConvAlgo::kWinogradImageLanes;
}

// Below ~32 channels on either side, Winograd's transforms cost more than the multiplies they save - except in
// the image lanes, whose transforms are whole vectors: from 16 channels in and over kFewOutputsMax out (at or
// under it the direct kernel is as fast) they beat the GEMM, 1.3-1.5x forward and 1.4-2.3x grad-input on the fast
// CIFAR net's 24->64 layer at 31x31 (Zen 4; 1.1-1.7x on other 16-31-channel shapes), and the weight gradient
// 1.1-2.9x the GEMM or the few-taps kernel on 16-24 -> 32-64 channels at 16x16 to 31x31, batch 64 and 256,
// float32 and bfloat16, either layout (1.0x on two bfloat16 NHWC shapes; Zen 4). Maps under 2x2 outputs would
// be all edge tiles. FASTCONV_WINOGRAD=0 turns it off (read at every call, as FASTCONV_ISA is), for tests of the
// paths behind it and for comparisons.
//
// bfloat16 operands: Winograd multiplies its transformed tiles in float32 (rounded to bfloat16 they would err by
// ~1.5% of the output's scale), so it competes with the GEMM's bfloat16 products, twice the float rate. In NCHW
// Winograd's image lanes win; in NHWC only F(4x4, 3x3) does: 1.1-1.3x on the 15x15 to 7x7 layers of the fast
// CIFAR net and ResNet-18 at batch 64-256, F(2x2, 3x3) 0.7-0.9x (Zen 4, fwd+bwd), measured when the image lanes
// still read and wrote float copies of bfloat16 tensors; since they read them in place (image_lanes.cpp) F(4x4)
// gained ~20% more, F(2x2) was not measured again (on our nets its maps now take gemm_few_pixels).
constexpr int64_t kWinogradMinChannels = 32;
constexpr int64_t kImageLanesMinChannels = 16;
//
// bfloat16 products on AMX tiles (FASTCONV_ISA=amx_bf16): Winograd's float products would run at a small fraction
// of the tiles' rate (tdpbf16ps: 1,024 bfloat16 FLOP per cycle per core against 64 float32), so the GEMMs take
// every layer. A guess from the instruction rates: not yet measured on an AMX CPU.
bool winograd_fits(const ConvParams& p, Arithmetic arithmetic) {
  if (arithmetic == Arithmetic::kDouble || winograd_setting_is("0")) return false;
  if (arithmetic == Arithmetic::kBf16Products && active_isa() == Isa::kAmxBf16) return false;
  if (arithmetic == Arithmetic::kBf16Products && p.channels_last &&
      winograd_lanes(p) != ConvAlgo::kWinogradF4ImageLanes)
    return false;
  const int64_t min_channels =
      image_lanes(p) && p.K > kFewOutputsMax ? kImageLanesMinChannels : kWinogradMinChannels;
  return p.groups == 1 && p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 &&
         p.dil_w == 1 && p.C >= min_channels && p.K >= min_channels && p.P >= 2 && p.Q >= 2;
}

bool is_depthwise(const ConvParams& p) { return p.Cg() == 1 && p.groups > 1; }

// Maps of a few output pixels (the fast CIFAR net's 3x3) whose taps read much padding: a padded 3x3 kernel on a
// 3x3 map has 49 of its 81 taps inside, which a GEMM per output pixel multiplies and the im2col GEMM (all 81) or
// Winograd F(2x2, 3x3) (16 outputs computed for 9) do not skip. The GEMM's rows are images and its columns output
// channels: under 8 images or 16 channels its tiles would be mostly empty. With bfloat16 products too (on float
// copies, small on such maps): against Winograd's float products (NCHW) 1.0-1.7x per pass, against the pair GEMM
// (NHWC) 1.2x at batch 256 and 0.85-1.4x at batch 64 (fwd + grad-input + grad-weight 1.0x there; the fast CIFAR
// net's 256 and ResNet's 512 channels, Zen 4). With bfloat16 products also maps of 16 outputs (ResNet's 4x4: 100
// of 144 taps inside), where float32 keeps Winograd F(2x2, 3x3), 64 multiplies to the GEMM's 100 (0.55-0.95x
// per pass); at bfloat16's double rate the GEMM wins: fwd + grad-input + grad-weight 1.05-1.1x NHWC, 1.0x NCHW
// (512 channels, batch 64 and 128, Zen 4; the weight gradient 1.1-1.3x, the NCHW grad-input 0.75-0.86x). Groups 1
// only, and an input map no larger than the pixels the taps could read (its NCHW copies are whole maps: a 3x3
// output at stride 500 would copy a 1001x1001 input).
constexpr int64_t kFewPixelsMax = 9, kFewPixelsMaxBf16 = 16;
bool few_pixels_fits(const ConvParams& p, Arithmetic arithmetic) {
  const int64_t max_pixels = arithmetic == Arithmetic::kBf16Products ? kFewPixelsMaxBf16 : kFewPixelsMax;
  return p.groups == 1 && p.PQ() <= max_pixels && p.RS() > 1 &&
         p.N >= 8 && p.C >= 16 && p.K > kFewOutputsMax && p.HW() <= p.PQ() * p.RS() &&
         4 * taps_inside_count(p) <= 3 * p.PQ() * p.RS();
}

// Few output channels (the first layer's grad-input: 3 of 64; LeNet's layers): an 8-row register tile would stay
// mostly empty and im2col packing would cost more than the multiplies. Each tap of an output row must be one
// contiguous run of its padded input row (stride_w 1). channels_last problems come too: read in place or moved to
// NCHW and back, they cost far less than the NHWC GEMM loses on a tile with a handful of columns.
// Image inputs (C <= 4: the first layer's forward, 3 -> 64) too, whatever K: the GEMM's reduction of 27 stores
// its tiles every 27 steps and packs a padded im2col, 2.6 against 1.8 ms for ResNet-18's first layer at batch 64
// (Zen 4). channels_last ones to over 16 channels run in place, pixel by pixel (an NCHW copy of 64 output
// channels cost 7 ms); so do thin ones of a vector or more of output channels (direct.h: nhwc_forward_in_place),
// the rest through NCHW copies.
bool few_outputs_fits(const ConvParams& p, Arithmetic arithmetic) {
  const bool thin = p.K <= kFewOutputsMax || p.C <= 4;
  return arithmetic != Arithmetic::kDouble && p.groups == 1 && thin && p.stride_w == 1 && p.padded_extents_small();
}

// Few taps (the first layer's weight gradient, LeNet's): dy times the shifted input summed in vector lanes, S
// accumulators per output channel in registers. channels_last goes through NCHW copies of x and dy: worth it
// for thin dy, or for image inputs (C <= 4), where the NHWC GEMM's packing of runs of C values per tap ran at
// 0.3x torch.
bool few_taps_fits(const ConvParams& p, Arithmetic arithmetic) {
  return arithmetic != Arithmetic::kDouble && p.groups == 1 && p.stride_w == 1 && p.S <= kFewTapsMaxS &&
         p.C * p.R * p.S <= kFewTapsMax &&
         (!p.channels_last || p.K <= kFewOutputsMax || p.C <= 4) && p.padded_extents_small();
}

// NHWC bfloat16 operands with bfloat16 products: channels 2i and 2i + 1 are adjacent, so the GEMM reads x and w
// as pairs, as vdpbf16ps multiplies them, without widening them to float or converting packed panels (1.2-1.4x
// on the fast CIFAR net's NHWC layers, Zen 4). Needs an even channel count per group. On AVX512-BF16 its
// micro-kernel broadcasts the pairs from x in place (gemm/pair_rows.cpp); AMX tiles take packed rows.
bool bf16_pairs_fit(const ConvParams& p) { return p.channels_last && p.Cg() % 2 == 0; }

}  // namespace

const char* algo_name(ConvAlgo algo) {
  switch (algo) {
    case ConvAlgo::kNone: return "none";
    case ConvAlgo::kDepthwise: return "depthwise";
    case ConvAlgo::kWinogradTileLanes: return "winograd_tile_lanes";
    case ConvAlgo::kWinogradImageLanes: return "winograd_image_lanes";
    case ConvAlgo::kWinogradF4ImageLanes: return "winograd_f4_image_lanes";
    case ConvAlgo::kDirectFewOutputs: return "direct_few_outputs";
    case ConvAlgo::kDirectFewTaps: return "direct_few_taps";
    case ConvAlgo::kGemm: return "gemm";
    case ConvAlgo::kGemmFewPixels: return "gemm_few_pixels";
    case ConvAlgo::kGemmCol2im: return "gemm_col2im";
    case ConvAlgo::kGemmBf16Pairs: return "gemm_bf16_pairs";
  }
  return "unknown";
}

ConvParams flipped_forward(const ConvParams& p) {
  ConvParams flipped = p;
  flipped.C = p.K, flipped.H = p.P, flipped.W = p.Q;
  flipped.K = p.C, flipped.P = p.H, flipped.Q = p.W;
  flipped.pad_h = p.dil_h * (p.R - 1) - p.pad_h;
  flipped.pad_w = p.dil_w * (p.S - 1) - p.pad_w;
  return flipped;
}

ConvAlgo choose_forward(const ConvParams& p, Arithmetic arithmetic) {
  if (p.N * p.PQ() == 0 || p.K == 0 || p.Cg() == 0) return ConvAlgo::kNone;
  if (is_depthwise(p)) return ConvAlgo::kDepthwise;
  if (few_pixels_fits(p, arithmetic)) return ConvAlgo::kGemmFewPixels;
  if (winograd_fits(p, arithmetic)) return winograd_lanes(p);
  if (few_outputs_fits(p, arithmetic)) return ConvAlgo::kDirectFewOutputs;
  if (arithmetic == Arithmetic::kBf16Products && bf16_pairs_fit(p)) return ConvAlgo::kGemmBf16Pairs;
  return ConvAlgo::kGemm;
}

GradInputChoice choose_grad_input(const ConvParams& p, Arithmetic arithmetic) {
  if (p.N == 0 || p.C == 0) return {ConvAlgo::kNone, false};
  if (is_depthwise(p)) return {ConvAlgo::kDepthwise, false};
  if (p.stride_h == 1 && p.stride_w == 1) return {choose_forward(flipped_forward(p), arithmetic), true};
  return {ConvAlgo::kGemmCol2im, false};
}

ConvAlgo choose_grad_weight(const ConvParams& p, Arithmetic arithmetic) {
  if (p.N == 0 || p.PQ() == 0 || p.K * p.Cg() * p.RS() == 0) return ConvAlgo::kNone;
  if (is_depthwise(p)) return ConvAlgo::kDepthwise;
  if (few_pixels_fits(p, arithmetic)) return ConvAlgo::kGemmFewPixels;
  if (winograd_fits(p, arithmetic)) return winograd_lanes(p);
  if (few_taps_fits(p, arithmetic)) return ConvAlgo::kDirectFewTaps;
  return ConvAlgo::kGemm;
}

}  // namespace fastconv::cpu
