// `wanbatch rehearse` on the real binary, at its edges: SIGINT or SIGTERM in the
// middle of a rehearsal removes its temporary folder and exits 130 or 143; a
// malformed --at (even '') is a usage error, exit 2, before anything runs.
#include <doctest/doctest.h>
#include <glob.h>

#include <cstdlib>
#include <fstream>

#include "tests/integration/rig.h"

namespace {

// Whether the process is stopped (SIGSTOP): the state letter in /proc/<pid>/stat.
bool stopped(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T';
}

// The rehearsal folders of process `pid`, wherever the rehearsal made them (/dev/shm, $TMPDIR, /tmp).
std::vector<std::string> rehearsal_dirs(pid_t pid) {
  std::vector<std::string> out;
  const char* tmpdir = std::getenv("TMPDIR");
  for (std::string base : {std::string("/dev/shm"), std::string(tmpdir ? tmpdir : "/tmp"), std::string("/tmp")}) {
    glob_t g{};
    std::string pattern = base + "/wanbatch-rehearsal-" + std::to_string(pid) + "-*";
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
  return out;
}

}  // namespace

TEST_CASE("rehearse stopped by SIGINT or SIGTERM removes its temporary folder and exits 130 or 143") {
  Rig rig;
  std::string file = rig.root + "/media/r.yaml";
  test::write(file, "base_dir: " + rig.root + "/media\n" + manifest("r", 6));
  for (int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    test::Process p({WANBATCH_BIN, "--config", rig.config, "rehearse", file}, {{"WANBATCH_STOP_AT", "rehearsal_turn"}},
                    rig.root + "/rehearse.log");
    REQUIRE_MESSAGE(test::eventually([&] { return stopped(p.pid()); }), test::read(rig.root + "/rehearse.log"));
    REQUIRE(rehearsal_dirs(p.pid()).size() == 1);  // mid-rehearsal: its folder is there
    p.signal(sig);
    p.signal(SIGCONT);
    CHECK(p.wait() == 128 + sig);
    CHECK(rehearsal_dirs(p.pid()).empty());
    CHECK(test::read(rig.root + "/rehearse.log").find("interrupted") != std::string::npos);
  }
  CHECK(test::list(rig.root + "/state").empty());  // the real state untouched
}

TEST_CASE("rehearse --at '' and other malformed times are a usage error, exit 2, with the reason") {
  Rig rig;
  std::string file = rig.root + "/media/r.yaml";
  test::write(file, "base_dir: " + rig.root + "/media\n" + manifest("r", 1));
  for (const char* at : {"", "7:30", "24:00", "12:60", "noon", "12:30:00"}) {
    CAPTURE(at);
    std::string out;
    CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "rehearse", "--at", at, file}, &out) == 2);
    CHECK_MESSAGE(out.find("--at must be HH:MM") != std::string::npos, out);
    CHECK(out.find("rehearsal of") == std::string::npos);
  }
  std::string out;
  CHECK(test::run({WANBATCH_BIN, "--config", rig.config, "rehearse", "--at", "23:59", file}, &out) == 0);
}

TEST_CASE("rehearse makes its temporary folder in $TMPDIR when it is set, not in /dev/shm, and removes it") {
  Rig rig;
  std::string file = rig.root + "/media/r.yaml";
  test::write(file, "base_dir: " + rig.root + "/media\n" + manifest("r", 2));
  const std::string scratch = rig.root + "/scratch";
  test::mkdirs(scratch);
  test::Process p({WANBATCH_BIN, "--config", rig.config, "rehearse", file},
                  {{"WANBATCH_STOP_AT", "rehearsal_turn"}, {"TMPDIR", scratch}}, rig.root + "/rehearse.log");
  REQUIRE_MESSAGE(test::eventually([&] { return stopped(p.pid()); }), test::read(rig.root + "/rehearse.log"));
  auto listed = test::list(scratch);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].rfind("wanbatch-rehearsal-" + std::to_string(p.pid()) + "-", 0) == 0);
  glob_t g{};
  const std::string shm = "/dev/shm/wanbatch-rehearsal-" + std::to_string(p.pid()) + "-*";
  CHECK(::glob(shm.c_str(), 0, nullptr, &g) == GLOB_NOMATCH);
  ::globfree(&g);
  p.signal(SIGTERM);
  p.signal(SIGCONT);
  CHECK(p.wait() == 128 + SIGTERM);
  CHECK(test::list(scratch).empty());
}
