// A CUDA host simulator: as much of CUDA's execution model as the project's kernels use, so that
// the kernel headers (csrc/cuda/*_kernel.cuh) compile and run unmodified on CPU threads. Include it
// before them. It defines DSA_CUDA_SIM (device_macros.cuh then takes the device-only branches,
// reads dynamic shared memory from here and launches through dsa_sim::launch).
//
// - threadIdx, blockIdx, blockDim, gridDim: thread-local, set for each thread of a block;
// - __syncthreads(): a real barrier across the threads of one block (pthread_barrier, which
//   ThreadSanitizer understands: a missing barrier is a data race it reports);
// - dynamic shared memory: one heap buffer per resident block of exactly the launch's size (an
//   access one byte beyond is an AddressSanitizer report), filled with NaN before every block;
// - kResidentBlocks blocks run at a time, each block's threads as real threads (a pool, reused);
// - a launch is rejected, as the driver rejects it, when its block exceeds the kernel's
//   __launch_bounds__ or 1024 threads, its grid is empty or too large, or its dynamic shared memory
//   exceeds the kernel's limit: the device's default unless raised by set_max_dynamic_smem (the
//   simulator's cudaFuncSetAttribute), which itself refuses more than the device's opt-in limit.
#pragma once

#define DSA_CUDA_SIM 1

#include <pthread.h>

#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../common/launch_plan.h"

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
using cudaStream_t = struct dsa_sim_stream*;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace dsa_sim {

constexpr int kResidentBlocks = 2;
constexpr int64_t kMaxBlockThreads = 1024;
constexpr int64_t kMaxGrid = (int64_t(1) << 31) - 1;

// What the launch refuses; the message names the kernel's limit and the launch's value.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Device {
  const char* name;
  dsa_fast::DeviceLimits limits;
};

struct State {
  Device device{"none", {0, 0, 0}};
  std::map<const void*, int64_t> max_dynamic_smem;  // per kernel, as raised by set_max_dynamic_smem
  int64_t launches = 0;
};

inline State& state() {
  static State s;
  return s;
}

// Makes `d` the current device; kernel attributes start from the defaults again.
inline void set_device(const Device& d) {
  state().device = d;
  state().max_dynamic_smem.clear();
}

inline const dsa_fast::DeviceLimits& limits() { return state().device.limits; }

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
template <typename K>
void set_max_dynamic_smem(K kernel, int64_t bytes) {
  if (bytes > limits().smem_optin_bytes) {
    throw LaunchError("cudaFuncSetAttribute: " + std::to_string(bytes) + " B of dynamic shared memory exceeds " +
                      state().device.name + "'s opt-in limit of " + std::to_string(limits().smem_optin_bytes) + " B");
  }
  state().max_dynamic_smem[reinterpret_cast<const void*>(kernel)] = bytes;
}

// One resident block: its barrier and its dynamic shared memory.
struct Block {
  pthread_barrier_t barrier;
  std::unique_ptr<unsigned char[]> smem;
  int64_t smem_bytes;
};

inline thread_local Block* current = nullptr;

inline unsigned char* dynamic_shared_memory() { return current->smem.get(); }

// Fills n bytes with the float NaN pattern 0x7FC00000 (read as double, two of them are a NaN too).
inline void fill_nan(unsigned char* p, int64_t n) {
  const float nan = std::nanf("");
  for (int64_t k = 0; k < n; ++k) p[k] = reinterpret_cast<const unsigned char*>(&nan)[k % 4];
}

// The simulator's threads, started once and reused by every launch (starting hundreds of threads
// per launch would dominate the run time, under ThreadSanitizer most of all). A launch hands each
// worker w < slots x block its (block slot, thread) and waits for all of them.
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  // Runs job(worker) on workers 0 .. n-1 and returns when all are done.
  void run(int n, const std::function<void(int)>& job) {
    while (static_cast<int>(workers_.size()) < n) {
      const int w = static_cast<int>(workers_.size());
      workers_.emplace_back([this, w] { loop(w); });
    }
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &job;
    active_ = n;
    pending_ = n;
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }
  ~Pool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  void loop(int w) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || (generation_ != seen && w < active_); });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      (*job)(w);
      const std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int active_ = 0, pending_ = 0;
  bool stop_ = false;
};

// kernel<<<grid, block, smem>>>(args...), synchronous. bound: the kernel's __launch_bounds__.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), int64_t bound, int64_t grid, int64_t block, int64_t smem, A&&... args) {
  const State& s = state();
  const auto it = s.max_dynamic_smem.find(reinterpret_cast<const void*>(kernel));
  const int64_t smem_limit = it != s.max_dynamic_smem.end() ? it->second : s.device.limits.smem_default_bytes;
  if (block < 1 || block > bound || block > kMaxBlockThreads) {
    throw LaunchError("launch: a block of " + std::to_string(block) + " threads breaks the kernel's __launch_bounds__(" +
                      std::to_string(bound) + ")");
  }
  if (grid < 1 || grid > kMaxGrid) throw LaunchError("launch: invalid grid of " + std::to_string(grid) + " blocks");
  if (smem < 0 || smem > smem_limit) {
    throw LaunchError("launch: " + std::to_string(smem) + " B of dynamic shared memory exceeds the kernel's limit of " +
                      std::to_string(smem_limit) + " B on " + s.device.name);
  }
  ++state().launches;
  const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  const int slots = static_cast<int>(grid < kResidentBlocks ? grid : kResidentBlocks);
  std::vector<Block> blocks(slots);
  for (Block& b : blocks) {
    pthread_barrier_init(&b.barrier, nullptr, static_cast<unsigned>(block));
    b.smem.reset(new unsigned char[smem]);
    b.smem_bytes = smem;
  }
  Pool::get().run(static_cast<int>(slots * block), [&](int worker) {
    const int slot = static_cast<int>(worker / block);
    const int64_t t = worker % block;
    Block& b = blocks[slot];
    current = &b;
    threadIdx = dim3{static_cast<unsigned>(t), 1, 1};
    blockDim = dim3{static_cast<unsigned>(block), 1, 1};
    gridDim = dim3{static_cast<unsigned>(grid), 1, 1};
    for (int64_t id = slot; id < grid; id += slots) {
      if (t == 0) fill_nan(b.smem.get(), b.smem_bytes);  // a new block's shared memory holds garbage
      pthread_barrier_wait(&b.barrier);
      blockIdx = dim3{static_cast<unsigned>(id), 1, 1};
      std::apply(kernel, params);
      pthread_barrier_wait(&b.barrier);  // the block has ended before its successor starts
    }
    current = nullptr;
  });
  for (Block& b : blocks) pthread_barrier_destroy(&b.barrier);
}

}  // namespace dsa_sim

inline void __syncthreads() { pthread_barrier_wait(&dsa_sim::current->barrier); }
