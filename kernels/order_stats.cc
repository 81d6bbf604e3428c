// Rank-weighted column sums on the CPU: an XLA FFI custom call.
//
// For every column j of x: float[n, d] (row-major, clients along axis 0) and the
// m rows with valid[i] set, sort the m values x[i, j] and return
//
//   out[j]   = sum_r weights[r] * sorted_j[r]      (r < m; ranks >= m ignored)
//   signs[j] = sum_i sign(x[i, j])                 (valid rows only; if asked)
//
// A median, a trimmed mean and the invariant aggregator's trimmed mean are all
// rank-weighted sums (kernels/order_stats.py builds the weights). Invalid rows
// (non-finite updates, screened by the caller) are never read, so the network
// only ever compares finite values.
//
// How: columns are processed W at a time. For a block of W columns the valid
// rows are copied into a [m, W] buffer (contiguous W-float runs of each row,
// SB columns per pass so that the hardware prefetcher streams the rows), then
// Batcher's odd-even merge sort network for m inputs runs on the buffer: each
// comparator is a lane-wise min/max of two W-float rows, which the compiler
// vectorises. The network is built once per call (Knuth, TAOCP vol. 3,
// 5.3.4, algorithm M; the iterative form below is valid for any m, equivalent
// to padding with +inf to a power of two and dropping the comparators that
// touch the padding). Columns are split over threads in contiguous ranges.
//
// Build: see kernels/order_stats.py (compiled on first use against the XLA FFI
// headers shipped with jaxlib).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <sched.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 64;        // W: columns per network pass
constexpr int64_t kSuperBlock = 512;  // SB: columns copied per row in one go

// Batcher's odd-even merge sort for n inputs: pairs (a, b), a < b, min to a.
std::vector<int32_t> BatcherNetwork(int32_t n) {
  std::vector<int32_t> pairs;
  for (int32_t p = 1; p < n; p += p)
    for (int32_t k = p; k > 0; k /= 2)
      for (int32_t j = k % p; j + k < n; j += k + k)
        for (int32_t i = 0; i < std::min(k, n - j - k); i++)
          if ((i + j) / (p + p) == (i + j + k) / (p + p)) {
            pairs.push_back(i + j);
            pairs.push_back(i + j + k);
          }
  return pairs;
}

struct Plan {
  const float* x;
  int64_t d;
  std::vector<int32_t> rows;   // valid row indices, m of them
  std::vector<int32_t> pairs;  // comparator network for m inputs
  const float* weights;        // [n], read at ranks [r0, r1)
  int32_t r0, r1;
  float* out;
  float* signs;  // nullptr: not asked for
};

void RunColumns(const Plan& plan, int64_t c0, int64_t c1) {
  const int64_t m = static_cast<int64_t>(plan.rows.size());
  const int64_t npairs = static_cast<int64_t>(plan.pairs.size()) / 2;
  const int32_t* pairs = plan.pairs.data();
  std::vector<float> buffer(static_cast<size_t>(kSuperBlock * std::max<int64_t>(m, 1)));
  float* buf = buffer.data();  // [kSuperBlock / kLanes][m][kLanes]
  for (int64_t cs = c0; cs < c1; cs += kSuperBlock) {
    const int64_t width = std::min(kSuperBlock, c1 - cs);
    const int64_t nblocks = (width + kLanes - 1) / kLanes;
    for (int64_t r = 0; r < m; r++) {
      const float* src = plan.x + static_cast<int64_t>(plan.rows[r]) * plan.d + cs;
      for (int64_t b = 0; b < nblocks; b++) {
        float* dst = buf + (b * m + r) * kLanes;
        const int64_t off = b * kLanes;
        if (off + kLanes <= width) {
          std::memcpy(dst, src + off, sizeof(float) * kLanes);
        } else {
          for (int64_t l = 0; l < kLanes; l++) dst[l] = off + l < width ? src[off + l] : 0.0f;
        }
      }
    }
    for (int64_t b = 0; b < nblocks; b++) {
      float* blk = buf + b * m * kLanes;
      const int64_t c = cs + b * kLanes;
      const int64_t lanes = std::min(kLanes, c1 - c);
      if (plan.signs != nullptr) {
        float s[kLanes] = {0.0f};
        for (int64_t r = 0; r < m; r++) {
          const float* v = blk + r * kLanes;
          for (int64_t l = 0; l < kLanes; l++)
            s[l] += static_cast<float>(v[l] > 0.0f) - static_cast<float>(v[l] < 0.0f);
        }
        for (int64_t l = 0; l < lanes; l++) plan.signs[c + l] = s[l];
      }
      for (int64_t q = 0; q < npairs; q++) {
        float* __restrict a = blk + pairs[2 * q] * kLanes;
        float* __restrict z = blk + pairs[2 * q + 1] * kLanes;
        for (int64_t l = 0; l < kLanes; l++) {
          const float u = a[l], v = z[l];
          a[l] = u < v ? u : v;
          z[l] = u < v ? v : u;
        }
      }
      float acc[kLanes] = {0.0f};
      for (int64_t r = plan.r0; r < plan.r1; r++) {
        const float* v = blk + r * kLanes;
        const float w = plan.weights[r];
        for (int64_t l = 0; l < kLanes; l++) acc[l] += w * v[l];
      }
      for (int64_t l = 0; l < lanes; l++) plan.out[c + l] = acc[l];
    }
  }
}

int64_t AvailableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

ffi::Error RankWeightedSumImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::PRED> valid,
                               ffi::Buffer<ffi::F32> weights, ffi::ResultBuffer<ffi::F32> out,
                               ffi::ResultBuffer<ffi::F32> signs, int64_t with_signs,
                               int64_t num_threads) {
  const auto dims = x.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("rank_weighted_sum: x must be 2-D");
  const int64_t n = dims[0], d = dims[1];
  if (valid.element_count() != static_cast<size_t>(n) ||
      weights.element_count() != static_cast<size_t>(n))
    return ffi::Error::InvalidArgument("rank_weighted_sum: valid and weights must have n entries");
  if (out->element_count() != static_cast<size_t>(d))
    return ffi::Error::InvalidArgument("rank_weighted_sum: out must have d entries");

  Plan plan;
  plan.x = x.typed_data();
  plan.d = d;
  const bool* ok = valid.typed_data();
  for (int64_t i = 0; i < n; i++)
    if (ok[i]) plan.rows.push_back(static_cast<int32_t>(i));
  const int32_t m = static_cast<int32_t>(plan.rows.size());
  plan.pairs = BatcherNetwork(m);
  plan.weights = weights.typed_data();
  plan.r0 = m;
  plan.r1 = 0;
  for (int32_t r = 0; r < m; r++)
    if (plan.weights[r] != 0.0f) {
      plan.r0 = std::min(plan.r0, r);
      plan.r1 = r + 1;
    }
  if (plan.r1 < plan.r0) plan.r0 = plan.r1 = 0;
  plan.out = out->typed_data();
  plan.signs = with_signs ? signs->typed_data() : nullptr;
  if (!with_signs) std::fill(signs->typed_data(), signs->typed_data() + signs->element_count(), 0.0f);
  if (d == 0) return ffi::Error::Success();

  // Threads get whole super-blocks; one thread per available CPU by default.
  const int64_t blocks = (d + kSuperBlock - 1) / kSuperBlock;
  int64_t threads = num_threads > 0 ? num_threads : AvailableCpus();
  threads = std::max<int64_t>(1, std::min(threads, blocks));
  const int64_t per = (blocks + threads - 1) / threads * kSuperBlock;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; t++) {
    const int64_t c0 = t * per, c1 = std::min(d, (t + 1) * per);
    if (c0 < c1) pool.emplace_back(RunColumns, std::cref(plan), c0, c1);
  }
  RunColumns(plan, 0, std::min(d, per));
  for (auto& th : pool) th.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FljaxRankWeightedSum, RankWeightedSumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x: float[n, d]
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // valid: bool[n]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // weights: float[n]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out: float[d]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // signs: float[d]
                                  .Attr<int64_t>("with_signs")
                                  .Attr<int64_t>("num_threads"));

// For tests: the network's comparators, written into pairs (2 * count ints) if
// it is not null; returns the count.
extern "C" int32_t fljax_batcher_network(int32_t n, int32_t* pairs) {
  const std::vector<int32_t> net = BatcherNetwork(n);
  if (pairs != nullptr) std::copy(net.begin(), net.end(), pairs);
  return static_cast<int32_t>(net.size() / 2);
}
