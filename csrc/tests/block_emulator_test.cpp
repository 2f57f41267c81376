// The per-image program of kernels/augment.h run as a CUDA block runs it, on CPU threads: T
// workers per image, worker t takes pixels t, t + T, ... (begin = tid, stride = T), sync() is a
// real barrier and sum() the fixed tree reduction of the CUDA executor. Its results must equal the
// serial executor's (forward and backward), over random shapes (H or W = 1, sizes that are no
// multiple of T), random flags and ω, both align_corners, T = 2, 4, 32, 256.
//
// No torch: built with the system compiler and run by tests/test_block_emulator.py, under
// ThreadSanitizer (a missing barrier is a data race it reports) and under
// AddressSanitizer + UndefinedBehaviorSanitizer.
//
//   g++ -std=c++20 -O1 -g -pthread -fsanitize=thread csrc/tests/block_emulator_test.cpp -o emu && ./emu [cases]
#include <pthread.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "../kernels/augment.h"
#include "random_case.h"

namespace dsa_fast {
namespace {

// One thread block on CPU threads. scratch: T values shared by the block (as CUDA's shared memory).
struct ThreadBlockExec {
  int tid, T;
  pthread_barrier_t* barrier;

  int begin() const { return tid; }
  int stride() const { return T; }
  void sync() const { pthread_barrier_wait(barrier); }
  // The CUDA executor's tree: T is a power of two.
  template <typename V>
  V sum(V v, V* scratch) const {
    scratch[tid] = v;
    sync();
    for (int s = T / 2; s > 0; s >>= 1) {
      if (tid < s) scratch[tid] += scratch[tid + s];
      sync();
    }
    const V total = scratch[0];
    sync();
    return total;
  }
};

using acc_t = double;

struct Case {
  int C, H, W;
  int64_t flags;
  bool align_corners;
  double omega[kOmegaWidth];
};

Case random_case(std::mt19937& rng) {
  using testing::pick;
  Case k;
  k.C = pick(rng, 1, 4);
  k.H = pick(rng, 1, 3) == 1 ? 1 : pick(rng, 1, 13);
  k.W = pick(rng, 1, 3) == 1 ? 1 : pick(rng, 1, 13);
  k.flags = pick(rng, 0, kAllOps);
  k.align_corners = pick(rng, 0, 1) == 1;
  testing::random_omega_row(rng, k.H, k.W, k.omega);
  return k;
}

// One image's run: its input, output and workspace.
struct Job {
  const Case* k;
  bool backward;
  const std::vector<double>* in;
  std::vector<double> out;
  std::vector<acc_t> ws;

  Job(const Case& kase, bool bwd, const std::vector<double>& x)
      : k(&kase), backward(bwd), in(&x), out(x.size(), std::nan("")),
        ws(workspace_size(kase.C, kase.H, kase.W), std::nan("")) {}

  template <typename Exec>
  void run(const Exec& ex, acc_t* scratch) {
    const ImageGeometry<acc_t> g{k->C, k->H, k->W, k->flags, k->align_corners};
    const Omega<acc_t> o = Omega<acc_t>::load(k->omega);
    const View<const double, acc_t> src{in->data(), int64_t(k->H) * k->W, k->W, 1};
    const View<double, acc_t> dst{out.data(), int64_t(k->H) * k->W, k->W, 1};
    if (backward) {
      augment_backward_image(ex, src, dst, g, o, ws.data(), scratch);
    } else {
      augment_image(ex, src, dst, g, o, ws.data(), scratch);
    }
  }
};

// Every job on one block of T workers, one image after the other with a barrier between images
// (as a CUDA block that loops over images): T threads started once.
void run_block(std::vector<Job>& jobs, int T) {
  std::vector<acc_t> scratch(T, std::nan(""));
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, nullptr, T);
  std::vector<std::thread> workers;
  for (int t = 0; t < T; ++t) {
    workers.emplace_back([&, t] {
      const ThreadBlockExec ex{t, T, &barrier};
      for (Job& job : jobs) {
        job.run(ex, scratch.data());
        ex.sync();
      }
    });
  }
  for (auto& w : workers) w.join();
  pthread_barrier_destroy(&barrier);
}

}  // namespace
}  // namespace dsa_fast

int main(int argc, char** argv) {
  using namespace dsa_fast;
  const int cases = argc > 1 ? std::atoi(argv[1]) : 40;
  std::mt19937 rng(12345);
  std::vector<Case> ks;
  std::vector<std::vector<double>> xs;
  for (int n = 0; n < cases; ++n) {
    ks.push_back(random_case(rng));
    std::vector<double> x(size_t(ks.back().C) * ks.back().H * ks.back().W);
    std::normal_distribution<double> normal;
    for (double& v : x) v = normal(rng);
    xs.push_back(std::move(x));
  }
  auto make_jobs = [&] {
    std::vector<Job> jobs;
    for (int n = 0; n < cases; ++n) {
      for (const bool backward : {false, true}) jobs.emplace_back(ks[n], backward, xs[n]);
    }
    return jobs;
  };
  std::vector<Job> want = make_jobs();
  for (Job& job : want) job.run(SerialExec{}, static_cast<acc_t*>(nullptr));
  int failures = 0, checked = 0;
  for (const int T : {2, 4, 32, 256}) {
    std::vector<Job> got = make_jobs();
    run_block(got, T);
    for (size_t n = 0; n < got.size(); ++n) {
      const Case& k = *got[n].k;
      ++checked;
      for (size_t e = 0; e < got[n].out.size(); ++e) {
        const double a = got[n].out[e], b = want[n].out[e];
        // Only the contrast sums differ in order (tree vs serial): a last-bits tolerance.
        if (!(std::fabs(a - b) <= 1e-12 * (1.0 + std::fabs(b)))) {
          std::fprintf(stderr,
                       "MISMATCH T=%d %s (C=%d H=%d W=%d flags=%lld active=%g align_corners=%d) element %zu: "
                       "%.17g vs serial %.17g\n",
                       T, got[n].backward ? "backward" : "forward", k.C, k.H, k.W, static_cast<long long>(k.flags),
                       k.omega[kSlotActive], int(k.align_corners), e, a, b);
          ++failures;
          break;
        }
      }
    }
  }
  std::printf("block emulator: %d image runs (T = 2, 4, 32, 256) checked against the serial executor, %d mismatches\n",
              checked, failures);
  return failures == 0 ? 0 : 1;
}
