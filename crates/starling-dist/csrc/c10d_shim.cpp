// A C ABI over PyTorch's c10d: TCPStore rendezvous and the Gloo (CPU) and NCCL (CUDA) backends.
// Buffers arrive as raw pointers owned by the caller (tch tensors on the Rust side) and are wrapped,
// never copied, with at::from_blob. Every entry point catches C++ exceptions and returns their text.
//
// Each group is also a c10d::ProcessGroup registered by name (c10d's GroupRegistry), so code
// that resolves groups by name - starling-torch's autograd collectives, torch's functional
// collectives - runs on it. Subgroups (the tensor- and data-parallel groups of a mesh) are new
// backends over a prefixed view of the same store, as torch.distributed.new_group makes them.
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
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
  std::chrono::milliseconds join_timeout;
  std::string kind;  // "gloo" or "nccl"
  std::string name;  // the name it is registered under in c10d's GroupRegistry
  c10::intrusive_ptr<c10d::ProcessGroup> pg;

  ~Group() {
    try {
      c10d::unregister_process_group(name);
    } catch (...) {
    }
  }
};

c10::intrusive_ptr<c10d::Backend> make_backend(const std::string& kind,
                                               const c10::intrusive_ptr<c10d::Store>& store,
                                               int rank, int world,
                                               std::chrono::milliseconds join_timeout,
                                               std::chrono::milliseconds timeout) {
  if (kind == "gloo") {
    auto o = c10d::ProcessGroupGloo::Options::create(join_timeout);
    o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    o->threads = 2;
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
  }
  if (kind == "nccl") {
#ifdef STARLING_NCCL
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
    throw std::runtime_error("this starling was built without NCCL (no CUDA libtorch or nccl.h at build time)");
#endif
  }
  throw std::invalid_argument("unknown backend `" + kind + "` (gloo or nccl)");
}

/// Wraps the group's backend in a c10d::ProcessGroup and registers it as `g->name`.
void register_group(Group* g) {
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(g->store, g->rank, g->world);
  const bool nccl = g->kind == "nccl";
  auto type = nccl ? c10d::ProcessGroup::BackendType::NCCL : c10d::ProcessGroup::BackendType::GLOO;
  pg->setBackend(nccl ? c10::DeviceType::CUDA : c10::DeviceType::CPU, type, g->backend);
  pg->setDefaultBackend(type);
  pg->setGroupName(g->name);
  c10d::register_process_group(g->name, pg);
  g->pg = pg;
}

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
                        int join_timeout_ms, int timeout_ms, int device, const char* name,
                        char* err, size_t len) {
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
    std::string kind(backend);
    auto b = make_backend(kind, store, rank, world, join_timeout, timeout);
    auto g = std::make_unique<Group>(Group{store, b, rank, world, kind == "nccl" ? device : -1,
                                           timeout, join_timeout, kind, std::string(name), {}});
    register_group(g.get());
    out = g.release();
  });
  return out;
}

/// The subgroup of `parent` made of its ranks `ranks[0..n]` (in that order), registered as
/// `name`. Every member calls it with the same ranks and name; a rank outside gets null and no
/// error. The rendezvous runs over the parent's store under the prefix `name`.
void* starling_c10d_subgroup(void* parent, const int* ranks, int n, const char* name, char* err,
                             size_t len) {
  auto* p = static_cast<Group*>(parent);
  Group* out = nullptr;
  guarded(err, len, [&] {
    int sub = -1;
    for (int i = 0; i < n; ++i) {
      if (ranks[i] < 0 || ranks[i] >= p->world)
        throw std::invalid_argument("subgroup rank " + std::to_string(ranks[i]) +
                                    " outside the group of " + std::to_string(p->world));
      if (ranks[i] == p->rank) sub = i;
    }
    if (sub < 0) return;
    std::string tag(name);
    auto store = c10::make_intrusive<c10d::PrefixStore>(tag, p->store);
    auto b = make_backend(p->kind, store, sub, n, p->join_timeout, p->timeout);
    auto g = std::make_unique<Group>(
        Group{store, b, sub, n, p->device, p->timeout, p->join_timeout, p->kind, tag, {}});
    register_group(g.get());
    out = g.release();
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

/// The collectives between a rank's n-element `shard` and the world·n-element `whole`:
/// op 0 sums `whole` over ranks into this rank's share (`shard`, reduce-scatter); op 1
/// concatenates every rank's `shard` into `whole` in rank order (all-gather).
int starling_c10d_sharded(void* gp, int op, void* shard, void* whole, int64_t n, int dtype,
                          char* err, size_t len) {
  auto* g = static_cast<Group*>(gp);
  return guarded(err, len, [&] {
    auto part = wrap(g, shard, n, dtype);
    auto all = wrap(g, whole, n * g->world, dtype);
    if (op == 0) {
      c10d::ReduceScatterOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      o.timeout = g->timeout;
      g->backend->_reduce_scatter_base(part, all, o)->wait(g->timeout);
    } else {
      c10d::AllgatherOptions o;
      o.timeout = g->timeout;
      g->backend->_allgather_base(all, part, o)->wait(g->timeout);
    }
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
