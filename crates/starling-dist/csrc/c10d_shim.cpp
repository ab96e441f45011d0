// A C ABI over PyTorch's c10d: TCPStore rendezvous and the Gloo (CPU) and NCCL (CUDA) backends.
// Buffers arrive as raw pointers owned by the caller (tch tensors on the Rust side) and are wrapped,
// never copied, with at::from_blob. Every entry point catches C++ exceptions and returns their text.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef STARLING_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "guard.h"

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int world;
  int device;  // -1: CPU, else the CUDA device index
  std::chrono::milliseconds timeout;
};

using starling::guarded;
using starling::set_error;

at::ScalarType scalar(int dtype) {
  switch (dtype) {
    case 0: return at::kFloat;
    case 1: return at::kDouble;
    case 2: return at::kBFloat16;
    case 3: return at::kLong;
    case 4: return at::kHalf;
    default: throw std::invalid_argument("unknown dtype code " + std::to_string(dtype));
  }
}

at::Tensor wrap(const Group* g, void* data, int64_t n, int dtype) {
  auto opts = at::TensorOptions().dtype(scalar(dtype));
  opts = g->device < 0 ? opts.device(at::kCPU) : opts.device(at::Device(at::kCUDA, g->device));
  return at::from_blob(data, {n}, opts);
}

}  // namespace

extern "C" {

/// 1 when this library was built with the NCCL backend.
int starling_c10d_has_nccl() {
#ifdef STARLING_NCCL
  return 1;
#else
  return 0;
#endif
}

/// Joins (rank 0: hosts) the TCPStore at host:port and creates the backend ("gloo" or "nccl").
/// The rendezvous (store connection, Gloo's full mesh) may take join_timeout_ms; every collective
/// after it timeout_ms.
void* starling_c10d_new(const char* backend, const char* host, int port, int rank, int world,
                        int join_timeout_ms, int timeout_ms, int device, char* err, size_t len) {
  Group* out = nullptr;
  guarded(err, len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto join_timeout = std::chrono::milliseconds(join_timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = world;
    so.waitWorkers = true;
    so.timeout = join_timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    c10::intrusive_ptr<c10d::Backend> b;
    std::string name(backend);
    if (name == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(join_timeout);
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      o->threads = 2;
      b = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    } else if (name == "nccl") {
#ifdef STARLING_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      b = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
      throw std::runtime_error("this starling was built without NCCL (no CUDA libtorch or nccl.h at build time)");
#endif
    } else {
      throw std::invalid_argument("unknown backend `" + name + "` (gloo or nccl)");
    }
    out = new Group{store, b, rank, world, name == "nccl" ? device : -1, timeout};
  });
  return out;
}

/// Frees a group made by starling_c10d_new.
void starling_c10d_free(void* g) { delete static_cast<Group*>(g); }

/// In-place sum over ranks of n elements at data.
int starling_c10d_allreduce(void* gp, void* data, int64_t n, int dtype, char* err, size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    std::vector<at::Tensor> ts{wrap(g, data, n, dtype)};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    g->backend->allreduce(ts, o)->wait(g->timeout);
  });
}

/// In-place copy of root's n elements at data to every rank.
int starling_c10d_broadcast(void* gp, void* data, int64_t n, int dtype, int root, char* err,
                            size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    std::vector<at::Tensor> ts{wrap(g, data, n, dtype)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    g->backend->broadcast(ts, o)->wait(g->timeout);
  });
}

/// Sums `input` (world·n elements) over ranks; this rank receives its n-element share in `output`.
int starling_c10d_reduce_scatter(void* gp, void* output, void* input, int64_t n, int dtype,
                                 char* err, size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    auto out = wrap(g, output, n, dtype);
    auto in = wrap(g, input, n * g->world, dtype);
    c10d::ReduceScatterOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    g->backend->_reduce_scatter_base(out, in, o)->wait(g->timeout);
  });
}

/// Concatenates every rank's n elements at `input` into `output` (world·n elements), rank order.
int starling_c10d_all_gather(void* gp, void* output, void* input, int64_t n, int dtype, char* err,
                             size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    auto out = wrap(g, output, n * g->world, dtype);
    auto in = wrap(g, input, n, dtype);
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    g->backend->_allgather_base(out, in, o)->wait(g->timeout);
  });
}

/// Waits until every rank has reached this call.
int starling_c10d_barrier(void* gp, char* err, size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    if (g->device >= 0) o.device_ids = {static_cast<int64_t>(g->device)};
    g->backend->barrier(o)->wait(g->timeout);
  });
}

/// Sets a key of the rendezvous store.
int starling_c10d_store_set(void* gp, const char* key, const uint8_t* value, size_t n, char* err,
                            size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    g->store->set(std::string(key), std::vector<uint8_t>(value, value + n));
  });
}

/// Reads a key of the rendezvous store, waiting up to timeout_ms for it; -1 in *got when it never
/// came, else its length (copied up to cap bytes into out).
int starling_c10d_store_get(void* gp, const char* key, int timeout_ms, uint8_t* out, size_t cap,
                            int64_t* got, char* err, size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    *got = -1;
    std::string k(key);
    try {
      g->store->wait({k}, std::chrono::milliseconds(timeout_ms));
    } catch (const c10::DistStoreError&) {
      return;
    }
    auto v = g->store->get(k);
    std::memcpy(out, v.data(), std::min(cap, v.size()));
    *got = static_cast<int64_t>(v.size());
  });
}

/// Keys of the store whose value is set now (non-blocking); 1 in *present when set.
int starling_c10d_store_check(void* gp, const char* key, int* present, char* err, size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] { *present = g->store->check({std::string(key)}) ? 1 : 0; });
}

}  // extern "C"
