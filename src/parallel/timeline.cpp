// Timeline: recorded events written as Chrome trace-event JSON (nlohmann::json), sorted by start
// time, with metadata events naming the process ("rank r") and its lanes.
#include "parallel/timeline.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>

#include "core/timer.h"

namespace tessera::parallel {
namespace {

const char* lane_name(Lane lane) { return lane == Lane::kCompute ? "compute" : "communication"; }

// `args` is JSON object text; anything else (not an object, not JSON) is kept as a string so
// that a bad caller never loses the event.
nlohmann::json parse_args(const std::string& args) {
  if (args.empty()) return nlohmann::json::object();
  nlohmann::json parsed = nlohmann::json::parse(args, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) return parsed;
  return nlohmann::json{{"text", args}};
}

}  // namespace

Timeline::Timeline(int world_rank) : world_rank_(world_rank) {}

void Timeline::record(const std::string& name, const std::string& category, Lane lane,
                      double start_us, double end_us, const std::string& args) {
  events_.push_back(Event{name, category, args, lane, start_us, std::max(start_us, end_us)});
}

Timeline::Scope::Scope(Timeline* timeline, std::string name, std::string category, Lane lane)
    : timeline_(timeline),
      name_(std::move(name)),
      category_(std::move(category)),
      lane_(lane),
      start_us_(timeline ? core::now_us() : 0.0) {}

Timeline::Scope::~Scope() {
  if (timeline_) timeline_->record(name_, category_, lane_, start_us_, core::now_us());
}

core::Status Timeline::write(const std::string& path) const {
  nlohmann::json events = nlohmann::json::array();
  events.push_back({{"ph", "M"},
                    {"name", "process_name"},
                    {"pid", world_rank_},
                    {"tid", 0},
                    {"args", {{"name", "rank " + std::to_string(world_rank_)}}}});
  events.push_back({{"ph", "M"},
                    {"name", "process_sort_index"},
                    {"pid", world_rank_},
                    {"tid", 0},
                    {"args", {{"sort_index", world_rank_}}}});
  for (Lane lane : {Lane::kCompute, Lane::kCommunication}) {
    events.push_back({{"ph", "M"},
                      {"name", "thread_name"},
                      {"pid", world_rank_},
                      {"tid", static_cast<int>(lane)},
                      {"args", {{"name", lane_name(lane)}}}});
  }
  // Asynchronous collectives are recorded when they complete, so recording order is not start
  // order; the trace lists events by start time (ties keep recording order).
  std::vector<size_t> order(events_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [this](size_t a, size_t b) {
    return events_[a].start_us < events_[b].start_us;
  });
  for (size_t i : order) {
    const Event& e = events_[i];
    events.push_back({{"ph", "X"},
                      {"name", e.name},
                      {"cat", e.category},
                      {"ts", e.start_us},
                      {"dur", e.end_us - e.start_us},
                      {"pid", world_rank_},
                      {"tid", static_cast<int>(e.lane)},
                      {"args", parse_args(e.args)}});
  }
  const nlohmann::json trace = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};

  std::ofstream out(path, std::ios::trunc);
  if (!out) {
    return core::Status::error("timeline: cannot open " + path + " for writing (" +
                               std::strerror(errno) +
                               "); check that its directory exists and is writable, or change "
                               "train.timeline");
  }
  out << trace.dump() << '\n';
  out.close();
  if (!out) {
    return core::Status::error("timeline: writing " + path + " failed (" + std::strerror(errno) +
                               "); check free disk space");
  }
  return core::Status::ok();
}

}  // namespace tessera::parallel
