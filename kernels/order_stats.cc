// Rank-weighted column sums on the CPU: an XLA FFI custom call.
//
// For every column j of x: float[n, d] (row-major, clients along axis 0) and the
// m rows with valid[i] set, sort the m values x[i, j] and return
//
//   out[j]   = sum_r weights[r] * sorted_j[r]      (r < m; ranks >= m ignored)
//   signs[j] = sum_i sign(x[i, j])                 (valid rows only; if asked)
//
// A median, a trimmed mean and the invariant aggregator's trimmed mean are all
// rank-weighted sums (kernels/order_stats.py builds the weights). A second
// entry point, closest_to_median_mean, is Bulyan's coordinate-wise step (the
// mean of the beta values closest to the median) on the same network. Invalid
// rows (non-finite updates, screened by the caller) are never read, so the
// network only ever compares finite values.
//
// How. A thread copies a super-block of columns (up to 256) of the m valid
// rows into a buffer [P][super-block], P = m rounded up to a power of two (at
// least 16); rows m..P-1 hold +inf and never move. Then a bitonic sorting
// network (Batcher 1968; Knuth, TAOCP vol. 3, section 5.3.4), in the form
// where the first layer of every merge compares each key with its mirror image
// so that every comparator puts the minimum on the lower row, runs on each group
// of 16 columns (one 512-bit vector per row; 8 columns of 256 bits without
// AVX-512), register-blocked: every step loads up to 16 rows into vector
// registers, applies up to 4 consecutive layers of the network to them and
// stores them back. The first step sorts 16 contiguous rows (Batcher's
// odd-even merge sort, 63 comparators, in registers); a bitonic stage k >= 32
// (log2 k layers) is cut into runs of <= 4 layers, and the rows a run touches
// fall into independent sets of 2^layers rows (the cosets of the span of the
// layers' XOR masks). A register-blocked comparator costs two vector min/max
// instructions and, amortised, half a load and half a store, against two
// loads and two stores for a comparator on memory: per column this network ran
// ~2x faster than Batcher's odd-even merge sort run comparator by comparator
// (which needs 16-26 % fewer comparators but does not block), see
// benchmarks/aggregators.py.
//
// Pruning. Only ranks with a nonzero weight matter, and only as one multiset per
// distinct weight (a median needs the middle one or two; a trimmed mean needs
// the extremes separated from the middle, not sorted among themselves). A
// backward pass over the steps drops every step whose live rows all carry one
// label: labels start as the weight of the rank each row ends at, and a kept
// step gives its rows fresh labels (one shared label for a full sort, whose
// output depends only on the multiset of its inputs; distinct ones otherwise).
// Steps that touch only padding rows (all +inf) are never emitted. The kept
// network is exported for the tests (fljax_order_network), which check it with
// the 0-1 principle.
//
// Threads split the columns into contiguous ranges of whole super-blocks.
//
// Build: see kernels/order_stats.py (compiled on first use against the XLA FFI
// headers shipped with jaxlib).

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <thread>
#include <vector>

#include <sched.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef FLJAX_NO_FFI
#include "xla/ffi/api/ffi.h"
#endif

namespace {

// Floats per vector, and layers per register-blocked step (2^layers rows live
// in registers): 16 floats and 4 layers with AVX-512's 32 registers; 8 floats
// and 3 layers otherwise (AVX2's 16 registers, NEON's 32 of 128 bits).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kMaxLayers = 4;
#else
constexpr int kLanes = 8;
constexpr int kMaxLayers = 3;
#endif
constexpr int kSortRows = 1 << kMaxLayers;    // rows of the first step (a full sort)
constexpr int64_t kBufferBytes = 256 * 1024;  // super-block buffer per thread (in L2)
constexpr int64_t kMaxSuperBlock = 256;       // columns per super-block, at most
constexpr int64_t kMinPerThread = 1 << 18;    // values per extra thread, at least (~1 MB)

typedef float Vec __attribute__((vector_size(4 * kLanes)));
typedef int32_t Mask __attribute__((vector_size(4 * kLanes)));  // lanes all ones or zeros

// v where mask, else +0.0 (bitwise, so the compiler keeps it in vector registers).
inline Vec Where(Mask mask, Vec v) { return reinterpret_cast<Vec>(reinterpret_cast<Mask>(v) & mask); }

inline Vec Min(Vec a, Vec b) {
#if defined(__AVX512F__)
  return (Vec)_mm512_min_ps((__m512)a, (__m512)b);
#else
  const Mask lt = a < b;
  return reinterpret_cast<Vec>((reinterpret_cast<Mask>(a) & lt) | (reinterpret_cast<Mask>(b) & ~lt));
#endif
}

inline Vec Max(Vec a, Vec b) {
#if defined(__AVX512F__)
  return (Vec)_mm512_max_ps((__m512)a, (__m512)b);
#else
  const Mask lt = a < b;
  return reinterpret_cast<Vec>((reinterpret_cast<Mask>(b) & lt) | (reinterpret_cast<Mask>(a) & ~lt));
#endif
}

inline Vec Abs(Vec v) { return reinterpret_cast<Vec>(reinterpret_cast<Mask>(v) & 0x7fffffff); }

// ---------------------------------------------------------------------------
// Register-blocked steps. A step of C layers holds 2^C rows in registers
// r[0..2^C); layer l (0-based) compares r[i] with r[i ^ (1 << (C-1-l))] (min
// to the one with that bit clear), except that a mirror first layer compares
// r[i] with r[~i] (min to the one with the top bit clear).

template <int A, int B>
inline __attribute__((always_inline)) void Exchange(Vec* r) {
  const Vec lo = Min(r[A], r[B]);
  r[B] = Max(r[A], r[B]);
  r[A] = lo;
}

template <int C, int L, int I, bool Mirror>
inline __attribute__((always_inline)) void Layer(Vec* r) {
  if constexpr (I < (1 << C)) {
    constexpr int bit = 1 << (C - 1 - L);
    if constexpr ((I & bit) == 0) {
      if constexpr (L == 0 && Mirror)
        Exchange<I, ((1 << C) - 1) ^ I>(r);
      else
        Exchange<I, I | bit>(r);
    }
    Layer<C, L, I + 1, Mirror>(r);
  }
}

template <int C, int L, bool Mirror>
inline __attribute__((always_inline)) void Layers(Vec* r) {
  if constexpr (L < C) {
    Layer<C, L, 0, Mirror>(r);
    Layers<C, L + 1, false>(r);
  }
}

// The first step sorts kSortRows contiguous rows in registers with Batcher's
// odd-even merge sort (63 comparators for 16 rows, against 80 for a bitonic
// sorter; 19 against 24 for 8), generated at compile time.
struct SortNet {
  int count = 0;
  int lo[64] = {}, hi[64] = {};
};

constexpr SortNet OddEvenMergeSort(int n) {
  SortNet net;
  for (int p = 1; p < n; p += p)
    for (int k = p; k > 0; k /= 2)
      for (int j = k % p; j + k < n; j += k + k)
        for (int i = 0; i < k && i < n - j - k; i++)
          if ((i + j) / (p + p) == (i + j + k) / (p + p)) {
            net.lo[net.count] = i + j;
            net.hi[net.count] = i + j + k;
            net.count++;
          }
  return net;
}

constexpr SortNet kSortNet = OddEvenMergeSort(kSortRows);
static_assert(kSortNet.count == (kSortRows == 16 ? 63 : 19), "Batcher's network size");

template <int Q>
inline __attribute__((always_inline)) void SortRegisters(Vec* r) {
  if constexpr (Q < kSortNet.count) {
    Exchange<kSortNet.lo[Q], kSortNet.hi[Q]>(r);
    SortRegisters<Q + 1>(r);
  }
}

// Step kinds: 0 = sort kSortRows contiguous rows; 2C - 1 + Mirror = C layers (C = 1..4).
constexpr int kSort = 0;
constexpr int Kind(int c, bool mirror) { return 2 * c - 1 + (mirror ? 1 : 0); }
constexpr int kNumKinds = 9;

// Rows stored per step (a sort stores its first row only).
inline int RowsOf(int kind) { return kind == kSort ? 1 : 1 << ((kind + 1) / 2); }

template <int C, bool Mirror>
void RunSteps(float* col, const int32_t* off, int64_t count) {
  for (int64_t q = 0; q < count; q++, off += (1 << C)) {
    Vec r[1 << C];
    for (int i = 0; i < (1 << C); i++) r[i] = *reinterpret_cast<const Vec*>(col + off[i]);
    Layers<C, 0, Mirror>(r);
    for (int i = 0; i < (1 << C); i++) *reinterpret_cast<Vec*>(col + off[i]) = r[i];
  }
}

void RunSort(float* col, const int32_t* off, int64_t count, int64_t stride) {
  for (int64_t q = 0; q < count; q++) {
    float* p = col + off[q];
    Vec r[kSortRows];
    for (int i = 0; i < kSortRows; i++) r[i] = *reinterpret_cast<const Vec*>(p + i * stride);
    SortRegisters<0>(r);
    for (int i = 0; i < kSortRows; i++) *reinterpret_cast<Vec*>(p + i * stride) = r[i];
  }
}

// The comparators of one step, as (lower row, upper row) pairs, in the order
// the registers apply them (for the tests' 0-1 check; must match the templates).
void StepPairs(int kind, const int32_t* rows, std::vector<int32_t>* pairs) {
  auto add = [&](int32_t a, int32_t b) {
    pairs->push_back(a);
    pairs->push_back(b);
  };
  if (kind == kSort) {
    for (int q = 0; q < kSortNet.count; q++) add(rows[0] + kSortNet.lo[q], rows[0] + kSortNet.hi[q]);
    return;
  }
  const int c = (kind + 1) / 2;
  const bool mirror = kind % 2 == 0;
  for (int l = 0; l < c; l++) {
    const int bit = 1 << (c - 1 - l);
    for (int i = 0; i < (1 << c); i++)
      if ((i & bit) == 0) add(rows[i], rows[l == 0 && mirror ? ((1 << c) - 1) ^ i : i | bit]);
  }
}

// ---------------------------------------------------------------------------
// The network: steps in execution order.

struct Network {
  int32_t padded = kSortRows;    // P
  std::vector<uint8_t> kinds;    // one per step
  std::vector<int32_t> rows;     // the rows of every step, concatenated
  std::vector<int64_t> starts;   // start of each step's rows
};

void AddStep(Network* net, int kind, const int32_t* rows) {
  net->kinds.push_back(static_cast<uint8_t>(kind));
  net->starts.push_back(static_cast<int64_t>(net->rows.size()));
  net->rows.insert(net->rows.end(), rows, rows + RowsOf(kind));
}

// Bitonic sort of m rows padded to P = 2^p >= kSortRows; steps touching only rows >= m are left out.
// Within a stage, the runs after the first touch only aligned blocks of rows
// (twice the largest stride of the second run); they are emitted block by
// block, so that a block's rows stay in L1 through those runs (at P = 1024 a
// group's rows take 64 KB; a block of 256 rows, 16 KB).
Network Bitonic(int32_t m) {
  Network net;
  while (net.padded < m) net.padded *= 2;
  const int32_t P = net.padded;
  for (int32_t b = 0; b < P && b < m; b += kSortRows) AddStep(&net, kSort, &b);
  std::vector<int32_t> masks, high, rows;
  struct Pending {
    int32_t block;
    int kind;
    std::vector<int32_t> rows;
  };
  std::vector<Pending> later;
  for (int32_t k = 2 * kSortRows; k <= P; k *= 2) {
    masks.assign(1, k - 1);  // mirror layer: row ^ (k - 1), lower row has bit k/2 clear
    high.assign(1, k / 2);
    for (int32_t j = k / 4; j >= 1; j /= 2) {
      masks.push_back(j);
      high.push_back(j);
    }
    const int layers = static_cast<int>(masks.size());
    later.clear();
    int32_t block = 0;  // rows per block of the runs after the first
    // Runs of <= kMaxLayers layers; the remainder first, so that the last run
    // (strides kSortRows / 2 .. 1) works on kSortRows contiguous rows.
    for (int l0 = 0, c = 0; l0 < layers; l0 += c) {
      c = l0 == 0 && layers % kMaxLayers ? layers % kMaxLayers : kMaxLayers;
      if (l0 > 0 && block == 0) block = 2 * high[l0];
      int32_t hmask = 0;
      for (int l = l0; l < l0 + c; l++) hmask |= high[l];
      rows.assign(1 << c, 0);
      for (int32_t base = 0; base < P; base++) {
        if (base & hmask) continue;  // one representative per coset
        bool live = false;
        for (int s = 0; s < (1 << c); s++) {
          int32_t row = base;
          for (int l = 0; l < c; l++)
            if (s & (1 << (c - 1 - l))) row ^= masks[l0 + l];
          int idx = 0;  // register index: the row's bits at the layers' high bits
          for (int l = 0; l < c; l++)
            if (row & high[l0 + l]) idx |= 1 << (c - 1 - l);
          rows[idx] = row;
          live |= row < m;
        }
        if (!live) continue;
        if (l0 == 0) AddStep(&net, Kind(c, true), rows.data());
        else later.push_back(Pending{base / block, Kind(c, false), rows});
      }
    }
    std::stable_sort(later.begin(), later.end(),
                     [](const Pending& a, const Pending& b) { return a.block < b.block; });
    for (const Pending& step : later) AddStep(&net, step.kind, step.rows.data());
  }
  return net;
}

// Drops the steps that cannot change the weighted sum (see the header).
Network Prune(const Network& net, int32_t m, const float* weights) {
  const int64_t steps = static_cast<int64_t>(net.kinds.size());
  std::vector<int64_t> label(net.padded, -1);
  for (int32_t r = 0; r < m; r++) {
    uint32_t bits;
    std::memcpy(&bits, &weights[r], sizeof(bits));
    label[r] = bits;
  }
  int64_t fresh = int64_t{1} << 33;
  std::vector<char> keep(steps, 0);
  for (int64_t q = steps - 1; q >= 0; q--) {
    const int32_t* rows = net.rows.data() + net.starts[q];
    const bool sort = net.kinds[q] == kSort;
    const int count = sort ? kSortRows : RowsOf(net.kinds[q]);
    auto row = [&](int i) { return sort ? rows[0] + i : rows[i]; };
    int64_t first = -1;
    bool same = true;
    for (int i = 0; i < count; i++) {
      if (row(i) >= m) continue;
      if (first == -1) first = label[row(i)];
      else if (label[row(i)] != first) same = false;
    }
    if (same) continue;
    keep[q] = 1;
    for (int i = 0; i < count; i++)  // a full sort depends on the multiset of its rows only
      if (row(i) < m) label[row(i)] = sort ? fresh : fresh + 1 + i;
    fresh += count + 1;
  }
  Network out;
  out.padded = net.padded;
  for (int64_t q = 0; q < steps; q++)
    if (keep[q]) AddStep(&out, net.kinds[q], net.rows.data() + net.starts[q]);
  return out;
}

// Steps grouped into runs of one kind; rows as float offsets into the [P][stride] buffer.
struct Run {
  int kind;
  int64_t count;
  std::vector<int32_t> offsets;
};

std::vector<Run> Runs(const Network& net, int64_t stride) {
  std::vector<Run> runs;
  for (size_t q = 0; q < net.kinds.size(); q++) {
    const int kind = net.kinds[q];
    if (runs.empty() || runs.back().kind != kind) runs.push_back(Run{kind, 0, {}});
    for (int i = 0; i < RowsOf(kind); i++)
      runs.back().offsets.push_back(static_cast<int32_t>(net.rows[net.starts[q] + i] * stride));
    runs.back().count++;
  }
  return runs;
}

void Execute(float* col, const std::vector<Run>& runs, int64_t stride) {
  for (const Run& run : runs) {
    const int32_t* off = run.offsets.data();
    switch (run.kind) {
      case kSort: RunSort(col, off, run.count, stride); break;
      case Kind(1, false): RunSteps<1, false>(col, off, run.count); break;
      case Kind(1, true): RunSteps<1, true>(col, off, run.count); break;
      case Kind(2, false): RunSteps<2, false>(col, off, run.count); break;
      case Kind(2, true): RunSteps<2, true>(col, off, run.count); break;
      case Kind(3, false): RunSteps<3, false>(col, off, run.count); break;
      case Kind(3, true): RunSteps<3, true>(col, off, run.count); break;
      case Kind(4, false): RunSteps<4, false>(col, off, run.count); break;
      case Kind(4, true): RunSteps<4, true>(col, off, run.count); break;
    }
  }
}
static_assert(Kind(4, true) + 1 == kNumKinds, "step kinds");

// ---------------------------------------------------------------------------
// The columns.

// What the network is run for, and what is done with each sorted group of
// columns (one per output).
struct Plan {
  const float* x;
  int64_t d;
  std::vector<int32_t> rows;  // valid row indices, m of them
  int32_t padded;             // P
  std::vector<Run> runs;      // the pruned network
  int64_t super;              // columns per super-block (a multiple of kLanes)
  int64_t stride;             // floats between buffer rows: super + kLanes (spreads cache sets)
  float* out;
  float* signs;               // nullptr: not asked for
  // Rank-weighted sum: weights [n], read at ranks [r0, r1).
  const float* weights = nullptr;
  int32_t r0 = 0, r1 = 0;
  // Closest to the median: how many values to average (0: not this output).
  int64_t beta = 0;
};

struct AlignedBuffer {
  float* data;
  explicit AlignedBuffer(size_t floats)
      : data(static_cast<float*>(std::aligned_alloc(64, ((floats * 4 + 63) / 64) * 64))) {
    if (data == nullptr) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(data); }
};

inline const Vec& Row(const float* col, int64_t r, int64_t stride) {
  return *reinterpret_cast<const Vec*>(col + r * stride);
}

// sum_r weights[r] * sorted[r] for one group of columns.
Vec WeightedSum(const Plan& plan, const float* col) {
  Vec acc = {};
  for (int64_t r = plan.r0; r < plan.r1; r++) acc += plan.weights[r] * Row(col, r, plan.stride);
  return acc;
}

// Bulyan's coordinate-wise step for one group of columns: the mean of the b
// values closest to the median, values tied at the b-th distance sharing the
// remaining slots (as fljax/aggregators/bulyan.py's jnp path). The b-th
// smallest distance is min over i + j = b of max(A_i, B_j), where A_i (B_j) is
// the i-th (j-th) smallest distance among the sorted values at or below (above)
// rank lo -- the network only sorts the ranks lo - b + 1 .. lo + b; the sums
// then take one pass over all m values (in any order).
Vec ClosestToMedian(const Plan& plan, const float* col) {
  const int64_t m = static_cast<int64_t>(plan.rows.size());
  const int64_t stride = plan.stride;
  const int64_t lo = (m - 1) / 2, hi = m / 2;
  const int64_t b = std::max<int64_t>(1, std::min(plan.beta, m));
  const Vec med = 0.5f * Row(col, lo, stride) + 0.5f * Row(col, hi, stride);
  const float inf = std::numeric_limits<float>::infinity();
  Vec r;
  for (int l = 0; l < kLanes; l++) r[l] = inf;
  // i values at or below rank lo (at most lo + 1), b - i above (at most m - 1 - lo).
  for (int64_t i = std::max<int64_t>(0, b - (m - 1 - lo)); i <= std::min(b, lo + 1); i++) {
    const int64_t j = b - i;
    Vec v;
    if (i == 0) {
      v = Abs(Row(col, lo + j, stride) - med);
    } else if (j == 0) {
      v = Abs(Row(col, lo - i + 1, stride) - med);
    } else {
      v = Max(Abs(Row(col, lo - i + 1, stride) - med), Abs(Row(col, lo + j, stride) - med));
    }
    r = Min(r, v);
  }
  const Vec zero = {}, one = zero + 1.0f, bf = zero + static_cast<float>(b);
  Vec n_closer = {}, n_tied = {}, s_closer = {}, s_tied = {};
  for (int64_t q = 0; q < m; q++) {
    const Vec x = Row(col, q, stride);
    const Vec dist = Abs(x - med);
    const Mask closer = dist < r, tied = dist == r;
    n_closer += Where(closer, one);
    n_tied += Where(tied, one);
    s_closer += Where(closer, x / bf);  // scaled before the sum: no overflow
  }
  const Vec share = Max(n_tied, one);
  for (int64_t q = 0; q < m; q++) {
    const Vec x = Row(col, q, stride);
    s_tied += Where(Abs(x - med) == r, x / share);
  }
  return s_closer + s_tied * ((bf - n_closer) / bf);
}

void RunColumns(const Plan& plan, int64_t c0, int64_t c1) {
  const int64_t m = static_cast<int64_t>(plan.rows.size());
  const int64_t P = plan.padded;
  const int64_t stride = plan.stride;
  AlignedBuffer buffer(P * stride);  // [P][stride]: row r of the super-block at r * stride
  float* buf = buffer.data;
  std::fill(buf, buf + P * stride, std::numeric_limits<float>::infinity());
  for (int64_t cs = c0; cs < c1; cs += plan.super) {
    const int64_t width = std::min(plan.super, c1 - cs);
    const int64_t ng = (width + kLanes - 1) / kLanes;
    for (int64_t r = 0; r < m; r++) {
      const float* src = plan.x + static_cast<int64_t>(plan.rows[r]) * plan.d + cs;
      std::memcpy(buf + r * stride, src, sizeof(float) * width);
      if (width < ng * kLanes) std::fill(buf + r * stride + width, buf + r * stride + ng * kLanes, 0.0f);
    }
    if (plan.signs != nullptr) {
      float* s = plan.signs + cs;
      std::fill(s, s + width, 0.0f);
      for (int64_t r = 0; r < m; r++) {
        const float* v = buf + r * stride;
        for (int64_t c = 0; c < width; c++)
          s[c] += static_cast<float>(v[c] > 0.0f) - static_cast<float>(v[c] < 0.0f);
      }
    }
    for (int64_t g = 0; g < ng; g++) {
      float* col = buf + g * kLanes;
      Execute(col, plan.runs, stride);
      const Vec acc = plan.beta > 0 ? ClosestToMedian(plan, col) : WeightedSum(plan, col);
      const int64_t lanes = std::min<int64_t>(kLanes, width - g * kLanes);
      for (int64_t l = 0; l < lanes; l++) plan.out[cs + g * kLanes + l] = acc[l];
    }
  }
}

int64_t AvailableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Valid rows, the network pruned for `weights` (ranks < m), buffer geometry.
Plan MakePlan(const float* x, int64_t n, int64_t d, const bool* valid, const float* weights) {
  Plan plan;
  plan.x = x;
  plan.d = d;
  for (int64_t i = 0; i < n; i++)
    if (valid[i]) plan.rows.push_back(static_cast<int32_t>(i));
  const int32_t m = static_cast<int32_t>(plan.rows.size());
  const Network net = Prune(Bitonic(std::max(m, 1)), m, weights);
  plan.padded = net.padded;
  plan.super = std::clamp<int64_t>(kBufferBytes / (4 * net.padded) / kLanes * kLanes, kLanes,
                                   kMaxSuperBlock);
  plan.stride = plan.super + kLanes;
  plan.runs = Runs(net, plan.stride);
  return plan;
}

// Runs the plan over all d columns; one thread per available CPU by default.
void RunPlan(const Plan& plan, int64_t num_threads) {
  const int64_t d = plan.d;
  if (d == 0) return;
  if (plan.rows.empty()) {  // no valid row: zeros
    std::fill(plan.out, plan.out + d, 0.0f);
    if (plan.signs != nullptr) std::fill(plan.signs, plan.signs + d, 0.0f);
    return;
  }
  // Threads get whole super-blocks; small inputs are not worth a thread start.
  const int64_t blocks = (d + plan.super - 1) / plan.super;
  const int64_t values = static_cast<int64_t>(plan.rows.size()) * d;
  int64_t threads = num_threads > 0 ? num_threads
                                    : std::min(AvailableCpus(), values / kMinPerThread + 1);
  threads = std::max<int64_t>(1, std::min(threads, blocks));
  const int64_t per = (blocks + threads - 1) / threads * plan.super;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; t++) {
    const int64_t c0 = t * per, c1 = std::min(d, (t + 1) * per);
    if (c0 < c1) pool.emplace_back(RunColumns, std::cref(plan), c0, c1);
  }
  RunColumns(plan, 0, std::min(d, per));
  for (auto& th : pool) th.join();
}

// out[j] = sum_r weights[r] * (r-th smallest valid x[:, j]); signs[j] (if not null).
void RankWeightedSum(const float* x, int64_t n, int64_t d, const bool* valid, const float* weights,
                     float* out, float* signs, int64_t num_threads) {
  Plan plan = MakePlan(x, n, d, valid, weights);
  const int32_t m = static_cast<int32_t>(plan.rows.size());
  plan.out = out;
  plan.signs = signs;
  plan.weights = weights;
  plan.r0 = m;
  plan.r1 = 0;
  for (int32_t r = 0; r < m; r++)
    if (weights[r] != 0.0f) {
      plan.r0 = std::min(plan.r0, r);
      plan.r1 = r + 1;
    }
  if (plan.r1 < plan.r0) plan.r0 = plan.r1 = 0;
  RunPlan(plan, num_threads);
}

// Rank classes the Bulyan step needs sorted: ranks lo - b + 1 .. lo + b, each
// on its own (distinct weights); every other rank in one class.
std::vector<float> WindowWeights(int64_t m, int64_t beta) {
  std::vector<float> w(std::max<int64_t>(m, 1), 0.0f);
  const int64_t lo = (m - 1) / 2, b = std::max<int64_t>(1, std::min(beta, m));
  for (int64_t r = std::max<int64_t>(0, lo - b + 1); r <= std::min(m - 1, lo + b); r++)
    w[r] = static_cast<float>(r + 1);
  return w;
}

// out[j] = mean of the beta valid x[:, j] closest to their median (Bulyan).
void ClosestToMedianMean(const float* x, int64_t n, int64_t d, const bool* valid, int64_t beta,
                         float* out, int64_t num_threads) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) m += valid[i] ? 1 : 0;
  const std::vector<float> w = WindowWeights(m, beta);
  Plan plan = MakePlan(x, n, d, valid, w.data());
  plan.out = out;
  plan.signs = nullptr;
  plan.beta = std::max<int64_t>(beta, 1);
  RunPlan(plan, num_threads);
}

}  // namespace

#ifndef FLJAX_NO_FFI
namespace ffi = xla::ffi;

namespace {

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
  if (!with_signs) std::fill(signs->typed_data(), signs->typed_data() + signs->element_count(), 0.0f);
  RankWeightedSum(x.typed_data(), n, d, valid.typed_data(), weights.typed_data(), out->typed_data(),
                  with_signs ? signs->typed_data() : nullptr, num_threads);
  return ffi::Error::Success();
}

ffi::Error ClosestToMedianMeanImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::PRED> valid,
                                   ffi::ResultBuffer<ffi::F32> out, int64_t beta,
                                   int64_t num_threads) {
  const auto dims = x.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("closest_to_median_mean: x must be 2-D");
  const int64_t n = dims[0], d = dims[1];
  if (valid.element_count() != static_cast<size_t>(n))
    return ffi::Error::InvalidArgument("closest_to_median_mean: valid must have n entries");
  if (out->element_count() != static_cast<size_t>(d))
    return ffi::Error::InvalidArgument("closest_to_median_mean: out must have d entries");
  if (beta < 1) return ffi::Error::InvalidArgument("closest_to_median_mean: beta must be >= 1");
  ClosestToMedianMean(x.typed_data(), n, d, valid.typed_data(), beta, out->typed_data(),
                      num_threads);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FljaxClosestToMedianMean, ClosestToMedianMeanImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x: float[n, d]
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // valid: bool[n]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out: float[d]
                                  .Attr<int64_t>("beta")
                                  .Attr<int64_t>("num_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(FljaxRankWeightedSum, RankWeightedSumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x: float[n, d]
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // valid: bool[n]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // weights: float[n]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out: float[d]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // signs: float[d]
                                  .Attr<int64_t>("with_signs")
                                  .Attr<int64_t>("num_threads"));
#endif  // FLJAX_NO_FFI

// For tests: the (pruned) network the kernel runs for m valid rows and these
// rank weights, as comparator pairs (lower row, upper row) in execution order,
// written into pairs (2 * count ints) if it is not null; returns the count.
// Rows >= m (up to the padded size, returned in *padded) hold +inf.
extern "C" int64_t fljax_order_network(int32_t m, const float* weights, int32_t prune,
                                       int32_t* padded, int32_t* pairs) {
  Network net = Bitonic(m);
  if (prune) net = Prune(net, m, weights);
  std::vector<int32_t> flat;
  for (size_t q = 0; q < net.kinds.size(); q++)
    StepPairs(net.kinds[q], net.rows.data() + net.starts[q], &flat);
  if (padded != nullptr) *padded = net.padded;
  if (pairs != nullptr) std::copy(flat.begin(), flat.end(), pairs);
  return static_cast<int64_t>(flat.size() / 2);
}
