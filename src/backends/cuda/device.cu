// Device selection, owning wrappers (DeviceBuffer, DeviceArena, DeviceStream, Event) and copies.
// Selection and arena creation report bad setups as Status; failed CUDA calls elsewhere throw
// tessera::Error through TESSERA_CUDA_CHECK.
#include <cuda_runtime.h>

#include <cstdio>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"

namespace tessera::backends::cuda {
namespace {

std::string cuda_error_text(cudaError_t rc) {
  return std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc);
}

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return buf;
}

// The device count, or the reason there is no usable device (empty when count >= 1).
int count_devices(std::string* why) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    cudaGetLastError();  // clear it, so later unrelated checks do not report it
    if (why != nullptr) *why = cuda_error_text(rc);
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "cudaGetDeviceCount found 0 devices";
  return count;
}

}  // namespace

// ---- Devices ------------------------------------------------------------------------------------

int device_count() { return count_devices(nullptr); }

core::Status select_device(int local_rank, int local_size) {
  if (local_size < 1 || local_rank < 0 || local_rank >= local_size) {
    return core::Status::error("device selection: local rank " + std::to_string(local_rank) +
                               " of local size " + std::to_string(local_size) +
                               " is out of range; the launcher must set 0 <= local rank < local "
                               "size (SLURM_LOCALID or OMPI_COMM_WORLD_LOCAL_RANK)");
  }
  std::string why;
  const int count = count_devices(&why);
  if (count == 0) {
    return core::Status::error("train.device=cuda but no usable CUDA device: " + why +
                               "; use train.device=cpu or run on a GPU node");
  }
  const int device = local_rank % count;
  cudaError_t rc = cudaSetDevice(device);
  if (rc == cudaSuccess) rc = cudaFree(nullptr);  // creates the context now
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return core::Status::error("train.device=cuda but CUDA device " + std::to_string(device) +
                               " (local rank " + std::to_string(local_rank) + " of " +
                               std::to_string(count) +
                               " devices) is not usable: " + cuda_error_text(rc) +
                               "; check that no other job holds it in exclusive mode, or use "
                               "train.device=cpu");
  }
  return core::Status::ok();
}

std::string describe_device() {
  std::string why;
  if (count_devices(&why) == 0) return "no usable CUDA device (" + why + ")";
  int device = 0;
  cudaDeviceProp prop{};
  cudaError_t rc = cudaGetDevice(&device);
  if (rc == cudaSuccess) rc = cudaGetDeviceProperties(&prop, device);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return "CUDA device unreadable (" + cuda_error_text(rc) + ")";
  }
  return "cuda:" + std::to_string(device) + " " + prop.name + " (sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) + " SMs, " +
         gib(prop.totalGlobalMem) + ")";
}

// ---- DeviceBuffer -------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) TESSERA_CUDA_CHECK(cudaMalloc(&ptr_, bytes), "allocating a device buffer");
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);  // a destructor must not throw; a failure here is moot
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

// ---- DeviceArena --------------------------------------------------------------------------------

DeviceArena::DeviceArena(DeviceBuffer buffer, std::string name)
    : buffer_(std::move(buffer)), name_(std::move(name)) {}

core::Result<DeviceArena> DeviceArena::create(size_t capacity_bytes, const std::string& name) {
  void* ptr = nullptr;
  if (capacity_bytes > 0) {
    const cudaError_t rc = cudaMalloc(&ptr, capacity_bytes);
    if (rc != cudaSuccess) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      cudaGetLastError();
      return core::Status::error(
          "device arena '" + name + "': cannot allocate " + std::to_string(capacity_bytes) +
          " bytes (" + gib(capacity_bytes) + "; the device has " + gib(free_bytes) + " free of " +
          gib(total_bytes) + "): " + cuda_error_text(rc) +
          (rc == cudaErrorMemoryAllocation
               ? "; reduce train.batch_size or the sequence length, or use more tensor-parallel "
                 "ranks"
               : "; select a usable device first (train.device=cuda on a GPU node)"));
    }
  }
  return DeviceArena(DeviceBuffer(ptr, capacity_bytes), name);
}

core::Result<size_t> DeviceArena::reserve(size_t bytes, const std::string& what) {
  const size_t offset = align_up(used_);
  if (offset > capacity() || bytes > capacity() - offset) {
    return core::Status::error(
        "device arena '" + name_ + "' is full: " + what + " needs " + std::to_string(bytes) +
        " bytes at offset " + std::to_string(offset) + " but the capacity is " +
        std::to_string(capacity()) +
        " bytes; size the arena as the sum of align_up(bytes) over every tensor it holds");
  }
  used_ = offset + bytes;
  return offset;
}

void* DeviceArena::at(size_t offset) const {
  // Invariant: offsets come from reserve(), so they never pass the end.
  TESSERA_ASSERT(offset <= capacity(), "turning a device arena offset into a pointer");
  return static_cast<char*>(buffer_.data()) + offset;
}

// ---- DeviceStream -------------------------------------------------------------------------------

DeviceStream::DeviceStream() {
  cudaStream_t s = nullptr;
  TESSERA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating a stream");
  stream_ = s;
}

DeviceStream::~DeviceStream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

DeviceStream::DeviceStream(DeviceStream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)) {}

DeviceStream& DeviceStream::operator=(DeviceStream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void DeviceStream::synchronize() const {
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream_), "waiting for a stream");
}

// ---- Event --------------------------------------------------------------------------------------

Event::Event(bool timing) {
  cudaEvent_t e = nullptr;
  TESSERA_CUDA_CHECK(
      cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming),
      "creating an event");
  event_ = e;
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) cudaEventDestroy(event_);
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

void Event::record(Stream stream) {
  TESSERA_CUDA_CHECK(cudaEventRecord(event_, stream), "recording an event");
}

void Event::wait(Stream stream) const {
  TESSERA_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0), "making a stream wait for an event");
}

void Event::synchronize() const {
  TESSERA_CUDA_CHECK(cudaEventSynchronize(event_), "waiting for an event");
}

float Event::elapsed_ms(const Event& start, const Event& stop) {
  stop.synchronize();
  float ms = 0.0f;
  TESSERA_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, stop.event_),
                     "timing between two events");
  return ms;
}

// ---- Copies -------------------------------------------------------------------------------------

void copy_to_device(void* dst_device, const void* src_host, size_t bytes, Stream stream) {
  TESSERA_CUDA_CHECK(cudaMemcpyAsync(dst_device, src_host, bytes, cudaMemcpyHostToDevice, stream),
                     "queuing a host-to-device copy");
}

void copy_to_host(void* dst_host, const void* src_device, size_t bytes, Stream stream) {
  TESSERA_CUDA_CHECK(cudaMemcpyAsync(dst_host, src_device, bytes, cudaMemcpyDeviceToHost, stream),
                     "queuing a device-to-host copy");
}

void copy_to_device_sync(void* dst_device, const void* src_host, size_t bytes, Stream stream) {
  copy_to_device(dst_device, src_host, bytes, stream);
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream), "waiting for a host-to-device copy");
}

void copy_to_host_sync(void* dst_host, const void* src_device, size_t bytes, Stream stream) {
  copy_to_host(dst_host, src_device, bytes, stream);
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream), "waiting for a device-to-host copy");
}

void fill_zero(void* dst_device, size_t bytes, Stream stream) {
  TESSERA_CUDA_CHECK(cudaMemsetAsync(dst_device, 0, bytes, stream), "zeroing device memory");
}

}  // namespace tessera::backends::cuda
