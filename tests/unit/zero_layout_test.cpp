// ZeRO-1's slicing arithmetic: piece_of splits a bucket into dp pieces that cover it once, in
// rank order; shard_segments cuts a rank's owned ranges at parameter boundaries, skips the
// padding between parameters, and places each run's moments in the compact arena.
#include <gtest/gtest.h>

#include "optim/optimizer.h"
#include "parallel/communicator.h"
#include "params/param_spec.h"

namespace tessera {
namespace {

using parallel::Piece;
using parallel::piece_of;

TEST(ZeroLayout, PiecesCoverTheBufferOnceInRankOrder) {
  // Worked by hand: 10 elements over 4 ranks are pieces of ceil(10/4) = 3: [0,3) [3,6) [6,9)
  // [9,10); 2 elements over 4 ranks: [0,1) [1,2) [2,2) [2,2).
  EXPECT_EQ(piece_of(10, 4, 0).begin, 0);
  EXPECT_EQ(piece_of(10, 4, 0).end, 3);
  EXPECT_EQ(piece_of(10, 4, 2).begin, 6);
  EXPECT_EQ(piece_of(10, 4, 3).begin, 9);
  EXPECT_EQ(piece_of(10, 4, 3).end, 10);
  EXPECT_EQ(piece_of(2, 4, 2).size(), 0);
  EXPECT_EQ(piece_of(2, 4, 3).size(), 0);
  for (int64_t count : {0, 1, 7, 64, 1001}) {
    for (int size : {1, 2, 3, 4, 8}) {
      int64_t next = 0;
      for (int r = 0; r < size; ++r) {
        const Piece p = piece_of(count, size, r);
        EXPECT_EQ(p.begin, next) << count << " over " << size << ", rank " << r;
        EXPECT_GE(p.size(), 0);
        EXPECT_LE(p.size(), (count + size - 1) / size);
        next = p.end;
      }
      EXPECT_EQ(next, count) << count << " over " << size;
    }
  }
}

params::ParamSpec spec(const std::string& name, core::Shape shape, bool decay) {
  params::ParamSpec s;
  s.name = name;
  s.global_shape = std::move(shape);
  s.weight_decay = decay;
  return s;
}

TEST(ZeroLayout, SegmentsCutOwnedRangesAtParameterBoundaries) {
  // Three parameters of 20, 5 and 16 floats; the arena aligns each to 16 floats, so they sit at
  // [0,20) [32,37) [48,64).
  params::ParamSet ps({spec("a", {4, 5}, true), spec("b", {5}, false), spec("c", {16}, true)}, 0,
                      1);
  ASSERT_EQ(ps.offset(1), 32);
  ASSERT_EQ(ps.offset(2), 48);
  // A rank owning [10, 40) of one bucket and [50, 56) of another: the moments are compact,
  // 30 + 6 = 36 elements, the padding [20, 32) among them but in no segment.
  const std::vector<optim::ShardSegment> segs =
      optim::shard_segments(ps, {Piece{10, 40}, Piece{50, 56}});
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].param, 0);  // a[10, 20)
  EXPECT_EQ(segs[0].offset, 10);
  EXPECT_EQ(segs[0].count, 10);
  EXPECT_EQ(segs[0].moment_offset, 0);
  EXPECT_EQ(segs[1].param, 1);  // b, whole: arena [32, 37), moments [22, 27)
  EXPECT_EQ(segs[1].offset, 32);
  EXPECT_EQ(segs[1].count, 5);
  EXPECT_EQ(segs[1].moment_offset, 22);
  EXPECT_EQ(segs[2].param, 2);  // c[2, 8): arena [50, 56), moments [30, 36)
  EXPECT_EQ(segs[2].offset, 50);
  EXPECT_EQ(segs[2].count, 6);
  EXPECT_EQ(segs[2].moment_offset, 30);

  optim::AdamW adamw(ps, {Piece{10, 40}, Piece{50, 56}});
  EXPECT_TRUE(adamw.sharded());
  EXPECT_EQ(adamw.state_bytes(), 2 * 4 * 36);
}

TEST(ZeroLayout, AShardedStepUpdatesOnlyTheOwnedWeights) {
  params::ParamSet ps({spec("a", {4, 5}, true), spec("b", {5}, false)}, 0, 1);
  core::Tensor w = ps.make_twin(), g = ps.make_twin();
  for (int64_t i = 0; i < w.numel(); ++i) {
    w.f32()[i] = 1.0f;
    g.f32()[i] = 0.5f;
  }
  optim::AdamW sharded(ps, {Piece{5, 34}});
  optim::AdamW whole(ps);
  core::Tensor w2 = ps.make_twin();
  for (int64_t i = 0; i < w2.numel(); ++i) w2.f32()[i] = 1.0f;
  core::OptimConfig oc;
  sharded.step(w, g, 1e-2, 1, oc);
  whole.step(w2, g, 1e-2, 1, oc);
  for (int64_t i = 0; i < 20; ++i) {
    if (i < 5) {
      EXPECT_EQ(w.f32()[i], 1.0f) << "a[" << i << "] is not owned";
    } else {
      EXPECT_EQ(w.f32()[i], w2.f32()[i]) << "a[" << i << "] is owned";
      EXPECT_NE(w.f32()[i], 1.0f);
    }
  }
  for (int64_t i = 32; i < 34; ++i) EXPECT_EQ(w.f32()[i], w2.f32()[i]) << "b owned";
  for (int64_t i = 34; i < 37; ++i) EXPECT_EQ(w.f32()[i], 1.0f) << "b not owned";
}

}  // namespace
}  // namespace tessera
