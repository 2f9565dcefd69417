// The hostile corpus (tests/hostile/): every case lands in failed/ with its
// error, nothing outside the input roots is read or uploaded, and a good
// manifest dropped among them still completes.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>

#include "jobs/curl_transport.h"
#include "tests/integration/rig.h"

namespace {

std::string expectation(const std::string& text) {
  const std::string tag = "# expect: ";
  REQUIRE(text.rfind(tag, 0) == 0);
  return text.substr(tag.size(), text.find('\n') - tag.size());
}

json sim_stats(const std::string& base) {
  wb::CurlTransport t(true);
  wb::HttpRequest r;
  r.url = base + "/sim/stats";
  std::optional<wb::HttpResponse> out;
  t.start(r, [&](wb::HttpResponse resp) { out = std::move(resp); });
  for (int i = 0; i < 500 && !out; ++i) t.perform(wb::Millis(10), {});
  REQUIRE(out);
  return json::parse(out->body);
}

}  // namespace

TEST_CASE("every hostile manifest is refused with its error, and a good one still completes") {
  Rig rig({}, "limits: {max_shots_per_manifest: 50, max_media_bytes: 1048576, submits_per_minute: 60000}\n");
  std::string frames = rig.root + "/media/frames";
  // The media the cases point at.
  test::mkdirs(rig.root + "/outside");
  test::write(rig.root + "/outside/outside.png", test::png(5));
  REQUIRE(::symlink("/etc/shadow", (frames + "/shadow.png").c_str()) == 0);
  REQUIRE(::symlink((rig.root + "/outside").c_str(), (rig.root + "/media/elsewhere").c_str()) == 0);
  REQUIRE(::link((frames + "/f1.png").c_str(), (frames + "/hard.png").c_str()) == 0);
  REQUIRE(::mkfifo((frames + "/pipe.png").c_str(), 0644) == 0);
  test::write(frames + "/notes.png", "this is a text file with a .png name");
  test::write(frames + "/huge.png", test::png() + std::string(2 << 20, '\0'));
  // A device node inside the roots, where the sandbox lets us make one.
  bool have_device = ::mknod((frames + "/null.png").c_str(), S_IFCHR | 0644, makedev(1, 3)) == 0;
  if (!have_device) MESSAGE("mknod refused here: the device-inside-the-roots case is skipped");

  std::map<std::string, std::string> expect;
  for (const auto& e : std::filesystem::directory_iterator(std::string(HOSTILE_DIR))) {
    std::string name = e.path().filename().string();
    if (e.path().extension() != ".yaml") continue;
    std::string text = test::read(e.path().string());
    expect[name] = expectation(text);
    // Cases that name media get base_dir: <root>/media, as `wanbatch submit` would add.
    if (text.find("image:") != std::string::npos) rig.drop(name, text);
    else rig.drop_raw(name, text);
  }
  // Made at run time: a 100 MB manifest, and a FIFO posing as a manifest (must not block).
  {
    std::string big = rig.root + "/media/big.yaml";
    int fd = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(::ftruncate(fd, 100ll << 20) == 0);
    ::close(fd);
    REQUIRE(std::rename(big.c_str(), (rig.root + "/spool/incoming/big.yaml").c_str()) == 0);
    expect["big.yaml"] = "over limits.max_manifest_bytes";
    REQUIRE(::mkfifo((rig.root + "/spool/incoming/fifo.yaml").c_str(), 0644) == 0);
    expect["fifo.yaml"] = "is not a regular file";
  }
  if (have_device) {
    rig.drop("device-inside.yaml", "shots:\n  - {id: a, prompt: p, image: frames/null.png}\n");
    expect["device-inside.yaml"] = "not a regular file";
  }
  REQUIRE(expect.size() >= 28);
  rig.start_daemon();
  rig.drop("good.yaml", "shots:\n  - {id: ok, prompt: \"ok: fine\", image: frames/f0.png}\n");
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("good"); }, std::chrono::seconds(60)), rig.log());
  REQUIRE(test::eventually([&] { return test::list(rig.root + "/spool/incoming").empty(); }));

  for (const auto& [name, want] : expect) {
    CAPTURE(name);
    CHECK(test::exists(rig.root + "/spool/failed/" + name));
    std::string errors = test::read(rig.root + "/spool/failed/" + name + ".error.txt");
    CHECK_MESSAGE(errors.find(want) != std::string::npos, "wanted '" << want << "' in:\n" << errors);
  }
  auto stats = sim_stats(rig.base);
  CHECK(stats["uploads"] == 1);  // the good manifest's frame, nothing else
  CHECK(stats["submits_accepted"] == 1);
  auto st = rig.status();
  CHECK(st["batches"].size() == 1);
}

TEST_CASE("a manifest still being written is not taken until it has settled") {
  Rig rig({}, "", 1.0);
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return rig.log().find("loaded") != std::string::npos; }));
  std::string path = rig.root + "/spool/incoming/slow.yaml";
  std::string text = "base_dir: " + rig.root + "/media\nbatch: slow\nshots:\n";
  test::write(path, text);
  for (int i = 0; i < 15; ++i) {  // 1.5 s of appends, 0.1 s apart: never still for the 1 s settle time
    ::usleep(100000);
    text += "  - {id: s" + std::to_string(i) + ", prompt: \"s" + std::to_string(i) + ": p\", image: frames/f0.png}\n";
    test::write(path, text);
    CHECK(test::exists(path));  // not taken while it grows
  }
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("slow"); }), rig.log());
  CHECK(rig.states("slow")["DONE"] == 15);
  CHECK(test::list(rig.root + "/spool/failed").empty());
}

TEST_CASE("a daemon without /proc refuses to start, with what to do, and takes nothing") {
  // Found by an outside attack: without /proc the helpers got paths (a symlink at a
  // .tmp name was written through) and local media were refused one manifest at a time.
  Rig rig;
  rig.drop("p.yaml", manifest("p", 1));
  std::string out;
  int code = test::run({"/usr/bin/unshare", "-m", "/bin/sh", "-c",
                        "mount --make-rprivate / && umount -l /proc || exit 77; exec \"$0\" --config \"$1\" daemon",
                        WANBATCH_BIN, rig.config},
                       &out, {{"SEGMIND_API_KEY", "test-key"}});
  if (code == 77 || code == 127) {
    MESSAGE("skipped: cannot unmount /proc in a namespace of the test's own (needs root and unshare)");
    return;
  }
  CHECK_MESSAGE(code == 1, out);
  CHECK(out.find("/proc is not mounted") != std::string::npos);
  CHECK(test::exists(rig.root + "/spool/incoming/p.yaml"));  // not claimed
  CHECK(test::list(rig.root + "/out").empty());
}
