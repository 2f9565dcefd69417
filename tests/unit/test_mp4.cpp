#include <doctest/doctest.h>

#include "jobs/mp4.h"
#include "tests/sim/simulator.h"

using namespace wb;

TEST_CASE("the simulator's sample is a valid MP4 with video and audio") {
  auto r = check_mp4_bytes(std::string(sim::sample_mp4()));
  CHECK_MESSAGE(r.ok, r.error);
  CHECK(r.has_video);
  CHECK(r.has_audio);
}

TEST_CASE("a truncated MP4 is refused at every cut") {
  std::string data(sim::sample_mp4());
  for (size_t cut = 0; cut < data.size(); cut += 97) {
    auto r = check_mp4_bytes(data.substr(0, cut));
    CHECK_FALSE_MESSAGE(r.ok, "cut at " << cut);
  }
}

TEST_CASE("non-MP4 content is refused with a reason") {
  CHECK(check_mp4_bytes("<html><body>Access denied</body></html>").error.find("not an MP4") != std::string::npos);
  CHECK_FALSE(check_mp4_bytes("").ok);
  std::string data(sim::sample_mp4());
  data += "trailing";
  CHECK_FALSE(check_mp4_bytes(data).ok);
}
