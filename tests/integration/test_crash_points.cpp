// SIGKILL at each persisted step (WANBATCH_CRASH_AT, jobs/crash_point.h), from
// the claim of the manifest on, then a clean restart: the claimed manifest is
// taken again, every shot ends, none is billed twice, a HELD shot is only
// an ambiguous submit, and every DONE video is valid. The four shots are all
// submitted in one tick, so a kill at a submit step catches the others on the
// wire too: they are HELD, as they must be. A kill at a later step loses nothing.
#include <doctest/doctest.h>

#include "jobs/mp4.h"
#include "tests/integration/rig.h"

TEST_CASE("a kill just before or after each persisted step loses nothing and pays nothing twice") {
  for (std::string point : {"claimed", "manifest_read", "accepted", "before_submitting", "submitting", "request_id",
                            "status_change", "download_start", "renamed", "done"}) {
    for (const char* nth : {"1", "3"}) {
      bool once = point == "claimed" || point == "manifest_read" || point == "accepted";
      if (once && std::string(nth) != "1") continue;  // one manifest, one claim, one acceptance
      CAPTURE(point);
      CAPTURE(nth);
      test::mkdirs(test::cwd() + "/" + point + nth);
      ::chdir((point + nth).c_str());
      {
        Rig rig;
        rig.start_daemon({{"WANBATCH_CRASH_AT", point + ":" + nth}});
        rig.drop("kp.yaml", manifest("kp", 4));
        CHECK_MESSAGE(rig.daemon->wait(std::chrono::seconds(30)) == 128 + SIGKILL, rig.log());
        rig.start_daemon();
        REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("kp"); }), rig.log());
        CHECK(test::list(rig.root + "/spool/incoming/.claimed").empty());
        json st = rig.states("kp");
        CHECK(st.value("DONE", 0) + st.value("HELD", 0) == 4);
        for (auto& [shot, n] : rig.billed()) CHECK_MESSAGE(n == 1, shot);
        bool submit_step = point == "before_submitting" || point == "submitting" || point == "request_id";
        if (!submit_step) CHECK(st.value("DONE", 0) == 4);
        if (point == "submitting" && std::string(nth) == "1") CHECK(st.value("HELD", 0) >= 1);
        for (const auto& line : rig.held_lines())
          CHECK_MESSAGE(line.find("ambiguous submit") != std::string::npos, line);
        for (const auto& name : test::list(rig.root + "/out/kp"))
          if (name.size() > 4 && name.substr(name.size() - 4) == ".mp4")
            CHECK(wb::check_mp4_file(rig.root + "/out/kp/" + name).ok);
        rig.daemon->signal(SIGTERM);
        rig.daemon->wait();
      }
      ::chdir("..");
    }
  }
}
