// Timeline: recorded events written as Chrome trace JSON, parsed back: fields, ordering by start
// time, lanes, metadata naming the process and lanes, Scope, and the error for a bad path.
#include "parallel/timeline.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/timer.h"

namespace tessera::parallel {
namespace {

nlohmann::json write_and_parse(const Timeline& timeline, const std::string& name) {
  const std::string path = ::testing::TempDir() + name;
  const core::Status status = timeline.write(path);
  EXPECT_TRUE(status.is_ok()) << status.message();
  std::ifstream in(path);
  nlohmann::json trace = nlohmann::json::parse(in);  // throws (fails the test) on invalid JSON
  std::remove(path.c_str());
  return trace;
}

std::vector<nlohmann::json> events_with_phase(const nlohmann::json& trace, const char* ph) {
  std::vector<nlohmann::json> out;
  for (const auto& e : trace.at("traceEvents")) {
    if (e.at("ph") == ph) out.push_back(e);
  }
  return out;
}

TEST(Timeline, WritesCompleteEventsWithEveryField) {
  Timeline timeline(3);
  timeline.record("forward", "forward", Lane::kCompute, 10.0, 35.5);
  timeline.record("dp.all_reduce_async", "collective", Lane::kCommunication, 20.0, 50.0,
                  R"({"bytes": 4096, "wire": "bf16"})");
  EXPECT_EQ(timeline.size(), 2u);
  const nlohmann::json trace = write_and_parse(timeline, "tessera_timeline_fields.json");
  EXPECT_EQ(trace.at("displayTimeUnit"), "ms");
  const auto events = events_with_phase(trace, "X");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].at("name"), "forward");
  EXPECT_EQ(events[0].at("cat"), "forward");
  EXPECT_EQ(events[0].at("ts"), 10.0);
  EXPECT_EQ(events[0].at("dur"), 25.5);
  EXPECT_EQ(events[0].at("pid"), 3);
  EXPECT_EQ(events[0].at("tid"), 0);
  EXPECT_TRUE(events[0].at("args").is_object());
  EXPECT_TRUE(events[0].at("args").empty());
  EXPECT_EQ(events[1].at("name"), "dp.all_reduce_async");
  EXPECT_EQ(events[1].at("cat"), "collective");
  EXPECT_EQ(events[1].at("ts"), 20.0);
  EXPECT_EQ(events[1].at("dur"), 30.0);
  EXPECT_EQ(events[1].at("tid"), 1);
  EXPECT_EQ(events[1].at("args").at("bytes"), 4096);
  EXPECT_EQ(events[1].at("args").at("wire"), "bf16");
}

TEST(Timeline, MetadataNamesTheRankAndTheLanes) {
  Timeline timeline(5);
  const auto meta = events_with_phase(write_and_parse(timeline, "tessera_timeline_meta.json"), "M");
  bool process = false, compute = false, communication = false;
  for (const auto& e : meta) {
    EXPECT_EQ(e.at("pid"), 5);
    if (e.at("name") == "process_name") {
      process = e.at("args").at("name") == "rank 5";
    } else if (e.at("name") == "thread_name" && e.at("tid") == 0) {
      compute = e.at("args").at("name") == "compute";
    } else if (e.at("name") == "thread_name" && e.at("tid") == 1) {
      communication = e.at("args").at("name") == "communication";
    }
  }
  EXPECT_TRUE(process) << "no process_name \"rank 5\"";
  EXPECT_TRUE(compute) << "no thread_name \"compute\" for tid 0";
  EXPECT_TRUE(communication) << "no thread_name \"communication\" for tid 1";
}

TEST(Timeline, EventsAreWrittenInStartOrder) {
  // An async collective is recorded when it completes, after later-starting compute events.
  Timeline timeline(0);
  timeline.record("backward.layer3", "backward", Lane::kCompute, 100.0, 200.0);
  timeline.record("backward.layer2", "backward", Lane::kCompute, 200.0, 300.0);
  timeline.record("dp.all_reduce_async", "collective", Lane::kCommunication, 150.0, 320.0);
  timeline.record("optimizer", "optimizer", Lane::kCompute, 320.0, 330.0);
  timeline.record("tie.first", "x", Lane::kCompute, 320.0, 321.0);
  const auto events =
      events_with_phase(write_and_parse(timeline, "tessera_timeline_order.json"), "X");
  std::vector<std::string> names;
  for (const auto& e : events) names.push_back(e.at("name"));
  EXPECT_EQ(names, (std::vector<std::string>{"backward.layer3", "dp.all_reduce_async",
                                             "backward.layer2", "optimizer", "tie.first"}));
  EXPECT_EQ(events[1].at("tid"), 1);
  for (size_t i = 0; i < events.size(); ++i) {
    if (i != 1) {
      EXPECT_EQ(events[i].at("tid"), 0) << events[i].at("name");
    }
  }
}

TEST(Timeline, ScopeRecordsItsLifetimeAndNullIsOff) {
  Timeline timeline(0);
  const double before = core::now_us();
  {
    Timeline::Scope scope(&timeline, "step", "step");
    { Timeline::Scope off(nullptr, "ignored", "ignored"); }
    EXPECT_EQ(timeline.size(), 0u);
  }
  const double after = core::now_us();
  ASSERT_EQ(timeline.size(), 1u);
  const auto events =
      events_with_phase(write_and_parse(timeline, "tessera_timeline_scope.json"), "X");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("name"), "step");
  EXPECT_EQ(events[0].at("tid"), 0);
  const double ts = events[0].at("ts"), dur = events[0].at("dur");
  EXPECT_GE(ts, before);
  EXPECT_GE(dur, 0.0);
  EXPECT_LE(ts + dur, after);
}

TEST(Timeline, ArgsThatAreNotAJsonObjectAreKeptAsText) {
  Timeline timeline(0);
  timeline.record("odd", "x", Lane::kCompute, 0.0, 1.0, "not json");
  const auto events =
      events_with_phase(write_and_parse(timeline, "tessera_timeline_args.json"), "X");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("args").at("text"), "not json");
}

TEST(Timeline, UnwritablePathIsAnErrorNamingIt) {
  Timeline timeline(0);
  timeline.record("forward", "forward", Lane::kCompute, 0.0, 1.0);
  const std::string path = "/nonexistent-dir/tessera/timeline.json";
  const core::Status status = timeline.write(path);
  ASSERT_FALSE(status.is_ok());
  EXPECT_NE(status.message().find(path), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("train.timeline"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace tessera::parallel
