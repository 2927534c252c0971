// Device plumbing for the CUDA backend: device selection from the local rank, owning wrappers for
// device memory, streams and events, host<->device copies, and the DeviceArena that is allocated
// once at start-up and handed out by offset (no allocation inside the step loop: DESIGN.md 1).
// A plain C++ header: callers need no nvcc and no CUDA headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "backends/cuda/stream.h"
#include "core/status.h"

struct CUevent_st;

namespace tessera::backends::cuda {

using EventHandle = CUevent_st*;  // the same type as cudaEvent_t

// ---- Devices ------------------------------------------------------------------------------------

// Number of CUDA devices this process can see; 0 when there is none, no driver, or the driver is
// too old for this build. Never throws, and leaves no sticky CUDA error behind.
int device_count();

// Makes device local_rank % device_count() current for the calling host thread and creates its
// context, so a broken device fails here rather than at the first kernel. local_rank and
// local_size come from the launcher (SLURM_LOCALID / OMPI_COMM_WORLD_LOCAL_RANK); several local
// ranks may share one GPU. Errors (as Status, never a throw): local_rank/local_size out of range;
// no usable device ("train.device=cuda but no usable CUDA device: <why>; use train.device=cpu or
// run on a GPU node"); the device refusing a context.
core::Status select_device(int local_rank, int local_size);

// One line on the current device, e.g. "cuda:0 NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)", or
// "no usable CUDA device (<why>)". Never throws.
std::string describe_device();

// ---- Memory -------------------------------------------------------------------------------------

// Bytes on the current device from one cudaMalloc (aligned to at least 256 bytes), freed on
// destruction. Move-only. Construction throws tessera::Error when the device cannot hold it.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  friend class DeviceArena;
  DeviceBuffer(void* adopted, size_t bytes) : ptr_(adopted), bytes_(bytes) {}  // takes ownership

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Every DeviceArena offset is a multiple of this: enough for any vector load and for cuBLASLt's
// preferred operand alignment.
inline constexpr size_t kArenaAlignment = 256;

// bytes rounded up to a multiple of kArenaAlignment. An arena that will hold tensors of sizes
// b_1..b_k in that order needs capacity sum_i align_up(b_i).
constexpr size_t align_up(size_t bytes) {
  return (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

// One cudaMalloc at start-up, carved into 256-byte-aligned blocks by offset. Tensors are handed
// out in order with reserve(); view<T>(offset) turns an offset into a typed device pointer. The
// parameter and gradient arenas reserve the same sizes in the same order, so equal offsets name a
// parameter and its gradient (STYLE.md). Nothing is freed until the arena is destroyed.
// Not thread-safe: one host thread plans an arena.
class DeviceArena {
 public:
  // Allocates capacity_bytes on the current device. `name` appears in messages ("activations").
  // Fails (Status, never a throw) when the device cannot hold it, naming the size, the device's
  // free memory and the fix.
  static core::Result<DeviceArena> create(size_t capacity_bytes, const std::string& name);

  DeviceArena() = default;  // empty: capacity 0, every reserve fails
  ~DeviceArena() = default;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  DeviceArena(DeviceArena&& other) noexcept = default;
  DeviceArena& operator=(DeviceArena&& other) noexcept = default;

  // Reserves `bytes` at the next multiple of kArenaAlignment and returns that offset. Fails when
  // the arena is full, naming `what`, the sizes and the fix. bytes = 0 is allowed (an empty view).
  core::Result<size_t> reserve(size_t bytes, const std::string& what);

  // The device address at `offset`; offset <= capacity() (checked: TESSERA_ASSERT).
  void* at(size_t offset) const;
  template <typename T>
  T* view(size_t offset) const {
    return static_cast<T*>(at(offset));
  }

  void* base() const { return buffer_.data(); }
  size_t capacity() const { return buffer_.bytes(); }
  size_t used() const { return used_; }  // end of the last reservation
  const std::string& name() const { return name_; }

 private:
  DeviceArena(DeviceBuffer buffer, std::string name);

  DeviceBuffer buffer_;
  size_t used_ = 0;
  std::string name_;
};

// ---- Streams and events -------------------------------------------------------------------------

// An owned stream created with cudaStreamNonBlocking: it does not synchronise with the legacy
// default stream (nullptr), so work on it overlaps work elsewhere. Move-only; get() is the
// Stream every launcher takes.
class DeviceStream {
 public:
  DeviceStream();  // throws tessera::Error when CUDA cannot create it
  ~DeviceStream();
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;
  DeviceStream(DeviceStream&& other) noexcept;
  DeviceStream& operator=(DeviceStream&& other) noexcept;

  Stream get() const { return stream_; }
  void synchronize() const;  // waits for everything queued so far

 private:
  Stream stream_ = nullptr;
};

// An owned event. record() marks a point in a stream; wait() makes another stream wait for that
// point without blocking the host (the GradientReducer's side stream); elapsed_ms() times two
// recorded events. timing=false makes a cheaper event that cannot be timed. Move-only.
class Event {
 public:
  explicit Event(bool timing = true);  // throws tessera::Error when CUDA cannot create it
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;

  void record(Stream stream);
  void wait(Stream stream) const;  // `stream`'s later work starts after the recorded point
  void synchronize() const;        // the host waits for the recorded point
  EventHandle get() const { return event_; }

  // Milliseconds between start's and stop's recorded points (waits for stop). Both must be
  // timing events and recorded; the result is >= 0 when stop was recorded after start.
  static float elapsed_ms(const Event& start, const Event& stop);

 private:
  EventHandle event_ = nullptr;
};

// ---- Copies -------------------------------------------------------------------------------------

// Queue a copy of `bytes` on `stream` and return at once. From pageable host memory CUDA may
// stage the copy and return only once the source has been read; from pinned memory it is fully
// asynchronous, and the host buffer must stay alive and untouched until the stream reaches it.
void copy_to_device(void* dst_device, const void* src_host, size_t bytes, Stream stream);
void copy_to_host(void* dst_host, const void* src_device, size_t bytes, Stream stream);

// The same, then wait for `stream`: the copy sees all work queued on `stream` before it and is
// complete on return.
void copy_to_device_sync(void* dst_device, const void* src_host, size_t bytes, Stream stream);
void copy_to_host_sync(void* dst_host, const void* src_device, size_t bytes, Stream stream);

// Queue setting `bytes` of device memory to zero on `stream` (gradients before a step).
void fill_zero(void* dst_device, size_t bytes, Stream stream);

}  // namespace tessera::backends::cuda
