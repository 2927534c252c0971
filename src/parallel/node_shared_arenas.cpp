// NodeSharedArenas: one memfd mapping shared by the ranks of a node-local communicator; see
// node_shared_arenas.h.
#include "parallel/node_shared_arenas.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace tessera::parallel {
namespace {

constexpr size_t kPage = 4096;

// Whether every rank of comm shares this rank's node (the same answer on every rank).
bool all_on_one_node(MPI_Comm comm, int size) {
  MPI_Comm node = MPI_COMM_NULL;
  TESSERA_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
                    "grouping the data-parallel ranks by node");
  int node_size = 0;
  TESSERA_MPI_CHECK(MPI_Comm_size(node, &node_size), "reading the node group's size");
  TESSERA_MPI_CHECK(MPI_Comm_free(&node), "freeing the node group");
  int mine = node_size == size ? 1 : 0, all = 0;
  TESSERA_MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm),
                    "agreeing whether the data-parallel ranks share a node");
  return all == 1;
}

}  // namespace

std::shared_ptr<NodeSharedArenas> NodeSharedArenas::create(MPI_Comm comm, int64_t numel, int count,
                                                           std::string* why) {
  TESSERA_ASSERT(numel >= 0 && count > 0, "sharing arenas on a node (numel >= 0, count > 0)");
  int rank = 0, size = 1;
  TESSERA_MPI_CHECK(MPI_Comm_rank(comm, &rank), "reading the rank for node-shared arenas");
  TESSERA_MPI_CHECK(MPI_Comm_size(comm, &size), "reading the size for node-shared arenas");
  if (!all_on_one_node(comm, size)) {
    *why = "the data-parallel ranks are not all on one node";
    return nullptr;
  }
  const size_t arena_bytes =
      (static_cast<size_t>(numel) * sizeof(float) + kPage - 1) / kPage * kPage;
  const size_t total = arena_bytes * static_cast<size_t>(count) * static_cast<size_t>(size);

  // Rank 0 makes the memory file; the others open it by its /proc path.
  std::string error;
  int fd = -1;
  long ident[2] = {static_cast<long>(getpid()), -1};  // pid, fd on rank 0
  if (rank == 0) {
    fd = memfd_create("tessera-node-arenas", MFD_CLOEXEC);
    if (fd < 0) {
      error = std::string("memfd_create: ") + std::strerror(errno);
    } else if (ftruncate(fd, static_cast<off_t>(total)) != 0) {
      error = "sizing the shared memory to " + std::to_string(total) +
              " bytes: " + std::strerror(errno);
    }
    ident[1] = error.empty() ? fd : -1;
  }
  TESSERA_MPI_CHECK(MPI_Bcast(ident, 2, MPI_LONG, 0, comm),
                    "sending the shared memory's name to the node's ranks");
  if (rank != 0 && ident[1] >= 0) {
    const std::string path =
        "/proc/" + std::to_string(ident[0]) + "/fd/" + std::to_string(ident[1]);
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) error = "opening " + path + ": " + std::strerror(errno);
  } else if (rank != 0) {
    error = "rank 0 could not make the shared memory";
  }
  void* base = MAP_FAILED;
  if (error.empty() && total > 0) {
    base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) error = std::string("mmap: ") + std::strerror(errno);
  }
  // Every rank has opened the file before any closes it (the agreement below is a collective).
  int ok = error.empty() ? 1 : 0, all_ok = 0;
  TESSERA_MPI_CHECK(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm),
                    "agreeing whether the node-shared arenas were mapped");
  if (fd >= 0) close(fd);
  if (all_ok != 1) {
    if (base != MAP_FAILED) munmap(base, total);
    *why = error.empty() ? "another rank of the node could not map the shared memory"
                         : "rank " + std::to_string(rank) + ": " + error;
    return nullptr;
  }
  std::shared_ptr<NodeSharedArenas> arenas(new NodeSharedArenas());
  arenas->base_ = total > 0 ? static_cast<char*>(base) : nullptr;
  arenas->mapped_bytes_ = total;
  arenas->arena_bytes_ = arena_bytes;
  arenas->numel_ = numel;
  arenas->count_ = count;
  arenas->rank_ = rank;
  arenas->size_ = size;
  return arenas;
}

std::shared_ptr<NodeSharedArenas> NodeSharedArenas::create(Communicator& comm, int64_t numel,
                                                           int count, std::string* why) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&comm);
  if (mpi == nullptr) {
    *why = "the " + comm.name() + " group is not an MPI communicator";
    return nullptr;
  }
  return create(mpi->comm(), numel, count, why);
}

NodeSharedArenas::~NodeSharedArenas() {
  if (base_ != nullptr) munmap(base_, mapped_bytes_);
}

float* NodeSharedArenas::peer(int q, int k) const {
  TESSERA_ASSERT(q >= 0 && q < size_ && k >= 0 && k < count_,
                 "addressing a node-shared arena (rank and arena index in range)");
  if (base_ == nullptr) return nullptr;
  return reinterpret_cast<float*>(
      base_ + (static_cast<size_t>(q) * static_cast<size_t>(count_) + static_cast<size_t>(k)) *
                  arena_bytes_);
}

core::Tensor NodeSharedArenas::arena(int k) {
  float* data = peer(rank_, k);
  // The storage holds the mapping: it is unmapped when the last tensor and owner are gone.
  auto storage =
      std::make_shared<core::Storage>(data, static_cast<size_t>(numel_) * sizeof(float),
                                      core::Device::kCpu, [keep = shared_from_this()](void*) {});
  return core::Tensor::adopt(storage, {numel_}, core::DType::kF32);
}

int NodeSharedArenas::index_of(const void* data) const {
  for (int k = 0; k < count_; ++k) {
    if (data == peer(rank_, k)) return k;
  }
  return -1;
}

}  // namespace tessera::parallel
