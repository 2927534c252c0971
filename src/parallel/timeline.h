// Timeline: Chrome trace-event JSON (opens in Perfetto / chrome://tracing) of compute phases
// and collectives on this rank. Events are complete events ("ph": "X") with microsecond
// timestamps from core::now_us(); pid = world rank, tid = a lane (0 compute, 1 communication).
// Not thread-safe: record from the thread that owns the step loop.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace tessera::parallel {

enum class Lane { kCompute = 0, kCommunication = 1 };

class Timeline {
 public:
  explicit Timeline(int world_rank);
  // Records [start_us, end_us) as an event `name` of category `category` ("forward",
  // "backward", "allreduce", "optimizer"...). `args` is a JSON object text or empty.
  void record(const std::string& name, const std::string& category, Lane lane, double start_us,
              double end_us, const std::string& args = "");
  // RAII: records from construction to destruction (no-op when timeline is nullptr).
  class Scope {
   public:
    Scope(Timeline* timeline, std::string name, std::string category, Lane lane = Lane::kCompute);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Timeline* timeline_;
    std::string name_, category_;
    Lane lane_;
    double start_us_;
  };
  // Writes {"traceEvents": [...], "displayTimeUnit": "ms"}.
  core::Status write(const std::string& path) const;
  size_t size() const { return events_.size(); }

 private:
  struct Event {
    std::string name, category, args;
    Lane lane;
    double start_us, end_us;
  };
  int world_rank_;
  std::vector<Event> events_;
};

}  // namespace tessera::parallel
