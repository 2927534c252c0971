// Checkpoint directories: step file names, the `latest` pointer (relative, absolute, absent,
// dangling), keep-K pruning that spares the published file and other names, crashed .tmp
// leftovers.
#include "checkpoint/checkpoint_dir.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "scratch_dir.h"

namespace tessera::checkpoint {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
  const std::string dir = testing::temp_path(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void touch(const std::string& path) { std::ofstream(path) << "x"; }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

TEST(CheckpointDir, PathHasEightDigitSteps) {
  EXPECT_EQ(checkpoint_path("/a/b", 42), "/a/b/step_00000042.h5");
  EXPECT_EQ(checkpoint_path("d", 123456789), "d/step_123456789.h5");
}

TEST(CheckpointDir, PublishMovesLatestAndKeepsTheNewestK) {
  const std::string dir = fresh_dir("ckpt_keep");
  touch(dir + "/notes.txt");
  for (int step = 1; step <= 5; ++step) {
    const std::string p = checkpoint_path(dir, step * 10);
    touch(p);
    ASSERT_TRUE(publish_latest(dir, p, 3).is_ok());
    EXPECT_EQ(read_text(dir + "/latest"), fs::path(p).filename().string());
    core::Result<std::string> r = resolve_checkpoint(dir, "latest");
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(fs::path(*r), fs::path(p));
  }
  EXPECT_FALSE(fs::exists(checkpoint_path(dir, 10)));
  EXPECT_FALSE(fs::exists(checkpoint_path(dir, 20)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 30)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 40)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 50)));
  EXPECT_TRUE(fs::exists(dir + "/notes.txt"));  // not ours: never deleted
  EXPECT_FALSE(fs::exists(dir + "/latest.tmp"));
}

TEST(CheckpointDir, PublishingAnOlderStepKeepsIt) {
  const std::string dir = fresh_dir("ckpt_older");
  for (int step : {1, 2, 3}) touch(checkpoint_path(dir, step));
  // Publishing step 1 with keep 1 (a rewind): step 1 stays though 2 and 3 are newer.
  ASSERT_TRUE(publish_latest(dir, checkpoint_path(dir, 1), 1).is_ok());
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 1)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 3)));
  EXPECT_FALSE(fs::exists(checkpoint_path(dir, 2)));
}

TEST(CheckpointDir, StaleTmpFilesBelowThePublishedStepGo) {
  const std::string dir = fresh_dir("ckpt_tmp");
  touch(checkpoint_path(dir, 1) + ".tmp");  // a crashed write of step 1
  touch(checkpoint_path(dir, 9) + ".tmp");  // a write of a later step, maybe under way
  touch(checkpoint_path(dir, 2));
  ASSERT_TRUE(publish_latest(dir, checkpoint_path(dir, 2), 3).is_ok());
  EXPECT_FALSE(fs::exists(checkpoint_path(dir, 1) + ".tmp"));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 9) + ".tmp"));
}

TEST(CheckpointDir, PublishRejectsAMissingFileAndBadKeep) {
  const std::string dir = fresh_dir("ckpt_bad_publish");
  core::Status s = publish_latest(dir, checkpoint_path(dir, 7), 3);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("step_00000007.h5"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("does not exist"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(dir + "/latest"));
  touch(checkpoint_path(dir, 7));
  s = publish_latest(dir, checkpoint_path(dir, 7), 0);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("keep 0 must be >= 1"), std::string::npos) << s.message();
}

TEST(CheckpointDir, ResolveNamesTheDirWhenLatestIsAbsentOrDangling) {
  const std::string dir = fresh_dir("ckpt_resolve");
  core::Result<std::string> r = resolve_checkpoint(dir, "latest");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("'" + dir + "' has no 'latest' file"), std::string::npos)
      << r.status().message();

  const std::string p = checkpoint_path(dir, 3);
  touch(p);
  ASSERT_TRUE(publish_latest(dir, p, 2).is_ok());
  fs::remove(p);
  r = resolve_checkpoint(dir, "latest");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(dir), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("step_00000003.h5', which does not exist"), std::string::npos)
      << r.status().message();

  r = resolve_checkpoint(dir, dir + "/nope.h5");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("nope.h5' not found"), std::string::npos);
  touch(dir + "/mine.h5");
  r = resolve_checkpoint(dir, dir + "/mine.h5");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r, dir + "/mine.h5");
}

TEST(CheckpointDir, AFileOutsideTheDirIsNamedAbsolutely) {
  const std::string dir = fresh_dir("ckpt_abs");
  const std::string other = fresh_dir("ckpt_abs_other");
  const std::string p = other + "/final.h5";
  touch(p);
  ASSERT_TRUE(publish_latest(dir, p, 2).is_ok());
  EXPECT_EQ(read_text(dir + "/latest"), fs::absolute(p).string());
  core::Result<std::string> r = resolve_checkpoint(dir, "latest");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_TRUE(fs::equivalent(*r, p));
  EXPECT_TRUE(fs::exists(p));
}

}  // namespace
}  // namespace tessera::checkpoint
