// Videos checked for real: the subprocess runner's bounds, ffprobe's verdict
// on a sound and a hostile MP4, the comparison with what was asked, and the
// downloader's "download again once, then HELD".
#include <doctest/doctest.h>
#include <limits>
#include <sys/resource.h>
#include <signal.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>

#include "jobs/background.h"
#include "jobs/frame_grab.h"
#include "jobs/mp4.h"
#include "jobs/subprocess.h"
#include "jobs/video_probe.h"
#include "tests/sim/simulator.h"
#include "tests/support.h"
#include "tests/unit/scheduler_rig.h"

using namespace wb;
using test::FakeTransport;

namespace {

bool have(const char* tool) {
  SubprocessSpec s;
  s.argv = {tool, "-version"};
  s.env = helper_env();
  s.timeout = std::chrono::milliseconds(10000);
  return run_subprocess(s).ok();
}

// The simulator's MP4 with every byte of its mdat payload replaced: the
// boxes still tile the file (the structural check passes), nothing decodes.
std::string garbled_mp4() {
  std::string d(sim::sample_mp4());
  size_t i = 0;
  while (i + 8 <= d.size()) {
    size_t size = (static_cast<unsigned char>(d[i]) << 24) | (static_cast<unsigned char>(d[i + 1]) << 16) |
                  (static_cast<unsigned char>(d[i + 2]) << 8) | static_cast<unsigned char>(d[i + 3]);
    if (size < 8) break;
    if (d.compare(i + 4, 4, "mdat") == 0)
      for (size_t k = i + 8; k < i + size && k < d.size(); ++k) d[k] = static_cast<char>((k * 7919) % 251);
    i += size;
  }
  return d;
}

#define REQUIRE_FFMPEG()                                                         \
  if (!have("ffprobe") || !have("ffmpeg")) {                                     \
    MESSAGE("skipped: ffprobe/ffmpeg not installed (Debian package ffmpeg)");    \
    return;                                                                      \
  }

}  // namespace

TEST_CASE("a helper gets its stdin, and its output is kept") {
  SubprocessSpec s;
  s.argv = {"cat"};
  s.env = helper_env();
  s.stdin_data = std::string(200000, 'x');  // more than a pipe holds
  auto r = run_subprocess(s);
  CHECK(r.ok());
  CHECK(r.out.size() == 200000);
}

TEST_CASE("a helper past its deadline is killed, with what it started") {
  SubprocessSpec s;
  s.argv = {"sh", "-c", "sleep 30 & sleep 30"};
  s.env = helper_env();
  s.timeout = std::chrono::milliseconds(300);
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_subprocess(s);
  CHECK(r.timed_out);
  CHECK_FALSE(r.ok());
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("a helper's output is bounded and its environment is only what it is given") {
  ::setenv("SEGMIND_API_KEY", "SECRET-KEY", 1);
  SubprocessSpec s;
  s.argv = {"env"};
  s.env = helper_env({"WANBATCH_BATCH=b"});
  auto r = run_subprocess(s);
  ::unsetenv("SEGMIND_API_KEY");
  CHECK(r.ok());
  CHECK(r.out.find("SECRET-KEY") == std::string::npos);
  CHECK(r.out.find("WANBATCH_BATCH=b") != std::string::npos);

  SubprocessSpec y;
  y.argv = {"yes"};
  y.env = helper_env();
  y.max_output_bytes = 1000;
  y.timeout = std::chrono::milliseconds(300);
  auto big = run_subprocess(y);
  CHECK(big.truncated);
  CHECK(big.out.size() == 1000);
}

TEST_CASE("a helper given no input is woken by its end, not by each write, and keeps what it wrote, its status and its stderr") {
  // Found by bench-scale: every wake-up of a probe worker is a context switch, dear on a
  // small VM; a probe cost five of them, a third of its CPU. A child whose output fits
  // its pipes is now waited on by its pidfd.
  auto switches = [] {
    rusage u {};
    ::getrusage(RUSAGE_THREAD, &u);
    return u.ru_nvcsw;
  };
  SubprocessSpec s;
  s.argv = {"sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo line$i; sleep 0.01; done; echo oops >&2; exit 3"};
  s.env = helper_env();
  s.max_output_bytes = 64 << 10;
  const long before = switches();
  auto r = run_subprocess(s);
  const long woken = switches() - before;
  CHECK(r.exit_code == 3);
  CHECK(r.out.find("line1\n") == 0);
  CHECK(r.out.find("line20\n") != std::string::npos);
  CHECK(r.err == "oops\n");
  CHECK_FALSE(r.truncated);
  CHECK_MESSAGE(woken < 8, "woken " << woken << " times for 20 writes");
}

TEST_CASE("a quiet helper that writes more than is kept is truncated, not held to its deadline") {
  SubprocessSpec s;
  s.argv = {"head", "-c", "3000000", "/dev/zero"};
  s.env = helper_env();
  s.max_output_bytes = 1000;
  s.timeout = std::chrono::milliseconds(20000);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_subprocess(s);
  CHECK(r.ok());
  CHECK(r.truncated);
  CHECK(r.out.size() == 1000);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("a quiet helper that ends leaving a process on its output is done, and what it left is killed") {
  SubprocessSpec s;
  s.argv = {"sh", "-c", "echo started; sleep 30 & echo $! >&2"};
  s.env = helper_env();
  s.max_output_bytes = 4096;
  s.timeout = std::chrono::milliseconds(20000);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_subprocess(s);
  CHECK(r.ok());
  CHECK(r.out == "started\n");
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  const pid_t left = static_cast<pid_t>(std::stol(r.err));
  for (int i = 0; i < 100 && ::kill(left, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(::kill(left, 0) != 0);  // killed with its group (and reaped by init)
}

TEST_CASE("a helper that is not there is an error, not a crash") {
  SubprocessSpec s;
  s.argv = {"/nonexistent/wanbatch-no-such-tool"};
  s.env = helper_env();
  auto r = run_subprocess(s);
  CHECK_FALSE(r.started);
  CHECK(r.describe().find("could not run") != std::string::npos);
}

TEST_CASE("ffprobe finds a video and an audio stream that decode in the simulator's MP4") {
  REQUIRE_FFMPEG();
  test::write("v.mp4", std::string(sim::sample_mp4()));
  VideoFacts f = probe_video(VideoConfig{}, test::cwd() + "/v.mp4");
  CHECK_MESSAGE(f.decodes, f.problem);
  CHECK(f.checked);
  CHECK(f.has_audio);
  CHECK(f.width == 96);
  CHECK(f.height == 64);
  CHECK(f.duration_seconds == doctest::Approx(1.0).epsilon(0.05));
}

TEST_CASE("a helper is passed descriptors as its 3, 4, ...: whatever their numbers, in order") {
  test::write("a", "first\n");
  test::write("b", "second\n");
  auto run = [](std::vector<int> fds) {
    SubprocessSpec s;
    s.argv = {"sh", "-c", "cat <&3; cat <&4; ls /proc/self/fd | sort -n | tail -1"};
    s.env = helper_env();
    s.pass_fds = std::move(fds);
    return run_subprocess(s);
  };
  {
    Fd a(::open("a", O_RDONLY | O_CLOEXEC)), b(::open("b", O_RDONLY | O_CLOEXEC));
    auto r = run({a.get(), b.get()});
    REQUIRE(r.ok());
    // 0 to 4 and ls's own directory (5): nothing else of ours.
    CHECK(r.out == "first\nsecond\n5\n");
  }
  // b at 3 and a at 4, passed as {a, b}: a goes to the child's 3, and b (at 3) is moved
  // out of the way first.
  Fd saved3(::fcntl(3, F_DUPFD_CLOEXEC, 100)), saved4(::fcntl(4, F_DUPFD_CLOEXEC, 100));
  {
    auto high = [](const char* name) {  // opened above 3 and 4, which are set below
      Fd low(::open(name, O_RDONLY | O_CLOEXEC));
      return ::fcntl(low.get(), F_DUPFD_CLOEXEC, 10);
    };
    Fd a(high("a")), b(high("b"));
    REQUIRE(::dup3(b.get(), 3, O_CLOEXEC) == 3);
    REQUIRE(::dup3(a.get(), 4, O_CLOEXEC) == 4);
    auto r = run({4, 3});
    CHECK(r.out == "first\nsecond\n5\n");
  }
  if (saved3.get() >= 0) ::dup3(saved3.get(), 3, O_CLOEXEC); else ::close(3);
  if (saved4.get() >= 0) ::dup3(saved4.get(), 4, O_CLOEXEC); else ::close(4);
}

TEST_CASE("ffprobe and the poster's ffmpeg read the descriptor they are passed, not the path, in a process that is not dumpable") {
  // Found by an outside attack: the daemon is not dumpable (its memory holds the API key), so
  // a helper may not open /proc/<daemon>/fd/<n>; the first version of this fell back to the
  // path, where a FIFO or another file could be put after the check.
  REQUIRE_FFMPEG();
  test::write("v.mp4", std::string(sim::sample_mp4()));
  Fd fd(::open("v.mp4", O_RDONLY | O_CLOEXEC));
  REQUIRE(fd.get() >= 0);
  REQUIRE(::rename("v.mp4", "moved.mp4") == 0);
  REQUIRE(::mkfifo("v.mp4", 0644) == 0);  // what a helper opening the name would wait on
  struct Dumpable {
    int was = ::prctl(PR_GET_DUMPABLE);
    Dumpable() { ::prctl(PR_SET_DUMPABLE, 0); }
    ~Dumpable() { ::prctl(PR_SET_DUMPABLE, was); }
  } not_dumpable;
  VideoConfig c;
  c.timeout_seconds = 5;
  const VideoFile video(test::cwd() + "/v.mp4", fd.get());
  VideoFacts f = probe_video(c, video);
  CHECK_MESSAGE(f.decodes, f.problem);
  CHECK(f.width == 96);
  CHECK(make_poster(c, video, f.duration_seconds, test::cwd() + "/p.jpg") == "");
  CHECK(test::read("p.jpg").substr(0, 2) == "\xFF\xD8");
}

TEST_CASE("a symlink put at the poster's or a chain frame's temporary name is never written through") {
  // Found by an outside attack: ffmpeg -y followed a symlink at .<shot>.jpg.tmp and
  // overwrote the file it named (any file the daemon's user may write).
  REQUIRE_FFMPEG();
  test::write("v.mp4", std::string(sim::sample_mp4()));
  test::write("victim", "precious\n");
  REQUIRE(::symlink((test::cwd() + "/victim").c_str(), ".p.jpg.tmp") == 0);
  REQUIRE(::symlink((test::cwd() + "/victim").c_str(), ".f.png.tmp") == 0);
  VideoConfig c;
  CHECK(make_poster(c, test::cwd() + "/v.mp4", 1.0, test::cwd() + "/p.jpg") == "");
  CHECK(extract_frame(c, test::cwd() + "/v.mp4", "last", test::cwd() + "/f.png") == "");
  CHECK(test::read("victim") == "precious\n");
  struct stat st {};
  REQUIRE(::lstat("p.jpg", &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK(test::read("p.jpg").substr(0, 2) == "\xFF\xD8");
  REQUIRE(::lstat("f.png", &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK(test::read("f.png").substr(1, 3) == "PNG");
  CHECK_FALSE(test::exists(".p.jpg.tmp"));
  CHECK_FALSE(test::exists(".f.png.tmp"));
}

TEST_CASE("without /proc no helper is handed an output by its name: the poster and a chain's frame are refused") {
  // Found by an outside attack: without /proc the poster's ffmpeg was given the .tmp
  // path, and a symlink swapped in after it was created was written through.
  REQUIRE_FFMPEG();
  test::write("v.mp4", std::string(sim::sample_mp4()));
  test::write("victim", "precious\n");
  const std::string dir = test::cwd();
  // In a child with a mount namespace of its own, /proc unmounted (root only).
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::umount2("/proc", MNT_DETACH) != 0)
      ::_exit(77);
    if (helpers_read_passed_fds()) ::_exit(10);
    VideoConfig c;
    const std::string poster = make_poster(c, dir + "/v.mp4", 1.0, dir + "/p.jpg");
    const std::string frame = extract_frame(c, dir + "/v.mp4", "last", dir + "/f.png");
    if (poster.find("/proc is not mounted") == std::string::npos) ::_exit(11);
    if (frame.find("/proc is not mounted") == std::string::npos) ::_exit(12);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) {
    MESSAGE("skipped: cannot unmount /proc in a namespace of the test's own (needs root)");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(test::read("victim") == "precious\n");
  CHECK_FALSE(test::exists("p.jpg"));
  CHECK_FALSE(test::exists("f.png"));
  CHECK(helpers_read_passed_fds());  // this process's /proc is untouched
}

TEST_CASE("an MP4 whose boxes are sound but whose samples are garbage does not decode") {
  REQUIRE_FFMPEG();
  std::string bad = garbled_mp4();
  REQUIRE(check_mp4_bytes(bad).ok);  // the structural check alone lets it through
  test::write("bad.mp4", bad);
  VideoFacts f = probe_video(VideoConfig{}, test::cwd() + "/bad.mp4");
  CHECK(f.checked);
  CHECK_FALSE(f.decodes);
  CHECK(f.problem.find("does not decode") != std::string::npos);
}

TEST_CASE("a video without an audio stream is refused") {
  REQUIRE_FFMPEG();
  SubprocessSpec s;
  s.argv = {"ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:duration=1:rate=8",
            "-c:v", "mpeg4", test::cwd() + "/mute.mp4"};
  s.env = helper_env();
  REQUIRE_MESSAGE(run_subprocess(s).ok(), "ffmpeg could not make the test video");
  VideoFacts f = probe_video(VideoConfig{}, test::cwd() + "/mute.mp4");
  CHECK(f.checked);
  CHECK_FALSE(f.decodes);
  CHECK(f.problem == "no audio stream");
}

TEST_CASE("ffprobe missing: the check is not made, which says nothing of the video") {
  VideoConfig c;
  c.ffprobe = "/nonexistent/ffprobe";
  test::write("v.mp4", std::string(sim::sample_mp4()));
  VideoFacts f = probe_video(c, test::cwd() + "/v.mp4");
  CHECK_FALSE(f.checked);
  CHECK_FALSE(f.decodes);
}

TEST_CASE("duration and resolution are compared with what was asked") {
  ShotSpec asked;
  asked.duration = 5;
  asked.resolution = "720P";
  VideoFacts got;
  got.duration_seconds = 5.04;
  got.width = 1280;
  got.height = 720;
  CHECK(video_differences(asked, got).empty());
  got.width = 720;  // portrait: the short side counts
  got.height = 1280;
  CHECK(video_differences(asked, got).empty());
  got.duration_seconds = 3;
  got.width = 96;
  got.height = 64;
  auto d = video_differences(asked, got);
  REQUIRE(d.size() == 2);
  CHECK(d[0] == "duration 3.00 s, asked 5 s");
  CHECK(d[1] == "resolution 96x64, asked 720P");
  auto j = nlohmann::json::parse(video_facts_json(got, d));
  CHECK(j["differences"].size() == 2);
  CHECK(j["width"] == 96);
}

TEST_CASE("ffprobe's answer is read defensively") {
  CHECK_FALSE(parse_ffprobe_json("not json").checked);
  auto f = parse_ffprobe_json(R"({"streams":[{"codec_type":"video","width":"x","nb_read_frames":"3"}]})");
  CHECK(f.checked);
  CHECK_FALSE(f.decodes);
  CHECK(f.problem == "no audio stream");
  const char* video = R"({"codec_type":"video","width":96,"height":64,"nb_read_frames":")";
  const char* audio = R"({"codec_type":"audio","nb_read_frames":")";
  auto both = [&](const char* v, const char* a) {
    return parse_ffprobe_json(std::string(R"({"streams":[)") + video + v + "\"}," + audio + a + "\"}]}");
  };
  CHECK(both("8", "8").decodes);
  CHECK(both("0", "8").problem == "the video stream does not decode (no frame)");
  CHECK(both("8", "0").problem == "the audio stream does not decode (no frame)");
}

namespace {
struct Rig : test::SchedulerRig {
  explicit Rig(bool with_threads = false, const std::string& ffprobe = "") {
    threads = with_threads;
    if (!ffprobe.empty()) config.video.ffprobe = ffprobe;
    start();
  }
  Shot shot() { return store->shots("b").at(0); }
  // Submit, COMPLETED, result: the shot is DOWNLOADING.
  void to_download() {
    accept("batch: b\nshots: [{id: s1, prompt: wind, image: 'https://cdn.example/a.png'}]\n");
    tick();
    answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r1"})");
    until("/status");
    answer("/status", 200, R"({"status":"COMPLETED"})");
    tick();
    answer("/v2/requests/r1", 200, R"({"status":"COMPLETED","output":"https://cdn.example/v.mp4"})");
    tick();
  }
  void deliver(const std::string& body) {
    until("cdn.example/v.mp4");
    auto dl = net.take("cdn.example/v.mp4");
    FakeTransport::deliver(dl, body);
  }
};
}  // namespace

TEST_CASE("a video that does not decode is downloaded again, then HELD with the reason") {
  REQUIRE_FFMPEG();
  Rig rig;
  rig.to_download();
  rig.deliver(garbled_mp4());
  CHECK(rig.shot().state == ShotState::downloading);
  CHECK(rig.shot().reason.find("does not decode") != std::string::npos);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
  rig.deliver(garbled_mp4());
  Shot s = rig.shot();
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("the downloaded video does not decode") == 0);
  CHECK(s.held_from == ShotState::downloading);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
}

TEST_CASE("a video that decodes on the second download is DONE, its facts in sidecar and report") {
  REQUIRE_FFMPEG();
  Rig rig;
  rig.to_download();
  rig.deliver(garbled_mp4());
  rig.deliver(std::string(sim::sample_mp4()));
  Shot s = rig.shot();
  REQUIRE(s.state == ShotState::done);
  auto sidecar = nlohmann::json::parse(test::read(rig.root + "/out/b/s1.json"));
  CHECK(sidecar["video"]["probe"]["width"] == 96);
  CHECK(sidecar["video"]["probe"]["differences"][0] == "duration 1.00 s, asked 5 s");
  CHECK(sidecar["video"]["probe"]["differences"][1] == "resolution 96x64, asked 720P");
  auto report = nlohmann::json::parse(test::read(rig.root + "/out/b/report.json"));
  CHECK(report["items"][0]["video"]["differences"].size() == 2);
  // The contact sheet's poster frame, taken beside the loop with the probe.
  CHECK(test::read(rig.root + "/out/b/s1.jpg").substr(0, 2) == "\xFF\xD8");
}

TEST_CASE("without ffprobe no video is DONE: the download is retried, then HELD") {
  Rig rig;
  rig.config.video.ffprobe = "/nonexistent/ffprobe";
  rig.config.retry.max_attempts = 2;
  rig.to_download();
  rig.deliver(std::string(sim::sample_mp4()));
  CHECK(rig.shot().state == ShotState::downloading);
  rig.deliver(std::string(sim::sample_mp4()));
  Shot s = rig.shot();
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("cannot check the video") != std::string::npos);
}

TEST_CASE("the probe runs beside the loop: a slow ffprobe holds up no tick, the shot is DONE when it answers") {
  REQUIRE_FFMPEG();
  const std::string script = test::cwd() + "/slow-ffprobe";
  test::write(script, "#!/bin/sh\nsleep 1.5\nexec ffprobe \"$@\"\n");
  REQUIRE(::chmod(script.c_str(), 0755) == 0);
  Rig rig(true, script);
  rig.to_download();
  auto t0 = std::chrono::steady_clock::now();
  rig.deliver(std::string(sim::sample_mp4()));
  rig.sched->tick();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1000));  // not 1.5 s
  CHECK(rig.shot().state == ShotState::downloading);
  CHECK_FALSE(rig.net.has("cdn.example/v.mp4"));  // parked, not downloaded again
  pollfd p{rig.sched->background_fd(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 20000) == 1);  // the loop is woken when the probe answers
  rig.sched->tick();
  CHECK(rig.shot().state == ShotState::done);
  CHECK(test::exists(rig.root + "/out/b/s1.mp4"));
}

namespace {
// What a probe finds in a sound 5 s 720p video.
VideoFacts decoding_720p() {
  VideoFacts f;
  f.checked = f.decodes = f.has_video = f.has_audio = true;
  f.duration_seconds = 5;
  f.width = 1280;
  f.height = 720;
  return f;
}

// A probe that answers "decodes" once released, from a worker thread.
struct HeldProbe {
  std::atomic<bool> release{false};
  std::atomic<int> asked{0};
  void install(Rig& rig) {
    rig.sched->set_video_probe([this](const VideoConfig&, const VideoFile&) {
      ++asked;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return decoding_720p();
    });
  }
};

// Descriptors of this process open on `path`.
int open_on(const std::string& path) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code rec;
    auto target = std::filesystem::read_symlink(e.path(), rec);
    if (!rec && target.string() == path) ++n;
  }
  return n;
}

void wait_for_probe_answer(Rig& rig) {
  pollfd p{rig.sched->background_fd(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 20000) == 1);
  rig.sched->tick();
}

// The rig with a held probe, its shot downloaded and being probed.
struct ProbingRig {
  Rig rig{true};
  HeldProbe probe;
  std::string part;
  ProbingRig() {
    probe.install(rig);
    rig.to_download();
    rig.deliver(std::string(sim::sample_mp4()));
    rig.sched->tick();
    part = rig.root + "/out/b/.s1.mp4.part";
    for (int i = 0; i < 1000 && probe.asked == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(probe.asked == 1);
  }
};
}  // namespace

TEST_CASE("a probe that throws is a check not made: the shot is retried, then HELD, never left parked") {
  // Background work that throws is dropped (jobs/background.cpp): before the
  // guard, a probe that threw (a read error while the rehearsal's stand-in
  // hashed the video) left its shot parked for ever, neither DONE nor retried.
  Rig rig(true);
  rig.config.retry.max_attempts = 2;
  std::atomic<int> asked{0};
  rig.sched->set_video_probe([&asked](const VideoConfig&, const VideoFile&) -> VideoFacts {
    ++asked;
    throw Error("cannot read the file to hash it (at byte 0): Input/output error");
  });
  // The answer may be taken by any tick (the probe throws at once): wait until the
  // shot is no longer parked (or has left the book), ticking.
  auto answered = [&rig] {
    rig.sched->tick();
    const Shot* s = rig.sched->book().find("b/s1");
    return !s || s->due_ms < std::numeric_limits<int64_t>::max() / 8;
  };
  rig.to_download();
  rig.deliver(std::string(sim::sample_mp4()));
  REQUIRE(test::eventually(answered, std::chrono::seconds(20)));
  CHECK(asked == 1);
  CHECK(rig.shot().state == ShotState::downloading);
  rig.deliver(std::string(sim::sample_mp4()));  // downloaded again: it came back to the loop
  REQUIRE(test::eventually(answered, std::chrono::seconds(20)));
  Shot s = rig.shot();
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("cannot check the video: cannot read the file to hash it") != std::string::npos);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
}

TEST_CASE("a video that cannot be read to its end at its commit is downloaded again, then HELD, not waited on for ever") {
  // Outside attack F1: the hash's read error went to the disk wait, which never
  // HOLDs: the video was downloaded again once a minute for as long as the error lasted.
  REQUIRE_FFMPEG();
  Rig rig;
  rig.config.retry.max_attempts = 2;
  rig.start();
  int hashed = 0;
  rig.sched->set_video_hash([&hashed](int) -> std::string {
    ++hashed;
    throw Error("cannot read the file to hash it (at byte 0): Input/output error");
  });
  rig.to_download();
  rig.deliver(std::string(sim::sample_mp4()));
  CHECK(rig.shot().state == ShotState::downloading);
  rig.deliver(std::string(sim::sample_mp4()));
  Shot s = rig.shot();
  CHECK(hashed == 2);
  CHECK(s.state == ShotState::held);
  CHECK(s.reason.find("cannot check the video: cannot read the file to hash it") != std::string::npos);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
  CHECK_FALSE(test::exists(rig.root + "/out/b/.s1.mp4.part"));
}

TEST_CASE("a video waiting for its probe holds no descriptor, and is committed by its path when it answers") {
  // Found by bench-scale: 10,000 downloads outran two probe workers and the daemon
  // held a descriptor per waiting video (8,700 at once): past a service's open-file
  // limit (1,024 under systemd) downloads and sockets fail, and every helper started
  // copied and closed them all.
  ProbingRig p;
  Rig& rig = p.rig;
  REQUIRE(test::exists(p.part));
  CHECK(open_on(p.part) <= 1);  // the worker's, while its probe runs (one per worker at most)
  CHECK(rig.shot().state == ShotState::downloading);
  p.probe.release = true;
  wait_for_probe_answer(rig);
  Shot s = rig.shot();
  REQUIRE(s.state == ShotState::done);
  CHECK(open_on(rig.root + "/out/b/s1.mp4") == 0);
  auto sidecar = nlohmann::json::parse(test::read(rig.root + "/out/b/s1.json"));
  CHECK(sidecar["video"]["sha256"] == sha256_hex(std::string(sim::sample_mp4())));
}

TEST_CASE("a video replaced while it was probed is downloaded again, never committed unchecked") {
  ProbingRig p;
  Rig& rig = p.rig;
  const std::string& part = p.part;
  // Another file takes its name while the probe looks at the first.
  test::write(rig.root + "/out/b/other", garbled_mp4());
  REQUIRE(::rename((rig.root + "/out/b/other").c_str(), part.c_str()) == 0);
  p.probe.release = true;
  wait_for_probe_answer(rig);
  Shot s = rig.shot();
  CHECK(s.state == ShotState::downloading);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
  CHECK_FALSE(test::exists(part));
  // Downloaded again, checked again, and DONE with what was checked.
  rig.deliver(std::string(sim::sample_mp4()));
  rig.sched->tick();
  wait_for_probe_answer(rig);
  REQUIRE(rig.shot().state == ShotState::done);
  CHECK(test::read(rig.root + "/out/b/s1.mp4") == std::string(sim::sample_mp4()));
}

TEST_CASE("a FIFO put at the .part name while the video is probed does not block the loop") {
  // Found by an outside attack: the probe's answer opened the path for reading and
  // waited for a writer that never came: control socket and metrics frozen.
  ProbingRig p;
  REQUIRE(::unlink(p.part.c_str()) == 0);
  REQUIRE(::mkfifo(p.part.c_str(), 0644) == 0);
  std::atomic<bool> done{false};
  std::thread rescue([&] {  // opens the other end every 4 s, so that a blocked open ends (and the test)
    for (int i = 1; !done; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (i % 400 == 0) ::close(::open(p.part.c_str(), O_WRONLY | O_NONBLOCK));
    }
  });
  p.probe.release = true;
  pollfd answered{p.rig.sched->background_fd(), POLLIN, 0};
  REQUIRE(::poll(&answered, 1, 20000) == 1);  // (the poster's ffmpeg may wait on the FIFO: a worker, bounded)
  const auto t0 = std::chrono::steady_clock::now();
  p.rig.sched->tick();  // the loop takes the answer up
  const auto took = std::chrono::steady_clock::now() - t0;
  done = true;
  rescue.join();
  CHECK(took < std::chrono::seconds(3));
  CHECK(p.rig.shot().state == ShotState::downloading);
  CHECK_FALSE(test::exists(p.rig.root + "/out/b/s1.mp4"));
  // The FIFO is gone; the video is downloaded again and DONE.
  p.rig.deliver(std::string(sim::sample_mp4()));
  p.rig.sched->tick();
  wait_for_probe_answer(p.rig);
  REQUIRE(p.rig.shot().state == ShotState::done);
  CHECK(test::read(p.rig.root + "/out/b/s1.mp4") == std::string(sim::sample_mp4()));
}

TEST_CASE("a FIFO put at the .part name before the probe starts is never handed to ffprobe or ffmpeg") {
  // Found by an outside attack: with both workers busy, a FIFO planted at a waiting
  // video's name was given to the helpers, and ffmpeg held a worker until
  // video.timeout_seconds (then a check failed: "cannot check the video").
  Rig rig(true);
  std::atomic<bool> release{false};
  std::mutex m;
  std::set<std::string> probed;  // the files the probe was given, by their real names
  int not_regular = 0;
  rig.sched->set_video_probe([&](const VideoConfig&, const VideoFile& video) {
    // What a helper would read: the descriptor it is passed, else the path.
    const std::string read = video.fd >= 0 ? "/proc/self/fd/" + std::to_string(video.fd) : video.path;
    struct stat st {};
    std::error_code ec;
    {
      std::lock_guard<std::mutex> lock(m);
      if (::stat(read.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) ++not_regular;
      probed.insert(std::filesystem::canonical(read, ec).filename().string());
    }
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return decoding_720p();
  });
  auto asked = [&] {
    std::lock_guard<std::mutex> lock(m);
    return probed.size();
  };
  rig.accept(
      "batch: b\nshots:\n"
      "  - {id: s1, prompt: wind, image: 'https://cdn.example/a.png'}\n"
      "  - {id: s2, prompt: wind, image: 'https://cdn.example/a.png'}\n"
      "  - {id: s3, prompt: wind, image: 'https://cdn.example/a.png'}\n");
  for (int i = 1; i <= 3; ++i) {
    rig.until("/v2/wan2.7-i2v");
    rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r)" + std::to_string(i) + R"("})");
  }
  for (int i = 1; i <= 3; ++i) {
    rig.until("/status");
    rig.answer("/status", 200, R"({"status":"COMPLETED"})");
  }
  for (int i = 1; i <= 3; ++i) {
    rig.until("/v2/requests/r");
    auto call = rig.net.take("/v2/requests/r");
    const std::string id = call.request.url.substr(call.request.url.rfind('/') + 1);
    FakeTransport::reply(call, 200, R"({"status":"COMPLETED","output":"https://cdn.example/)" + id + R"(.mp4"})");
  }
  // Two videos hold both workers in their probes; the third waits its turn.
  for (int i = 1; i <= 3; ++i) {
    rig.until("cdn.example/r");
    auto dl = rig.net.take("cdn.example/r");
    FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
    rig.sched->tick();
  }
  for (int i = 0; i < 1000 && asked() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(asked() == 2);
  std::string waiting;
  for (const char* id : {"s1", "s2", "s3"})
    if (!probed.count("." + std::string(id) + ".mp4.part")) waiting = id;
  REQUIRE_FALSE(waiting.empty());
  const std::string part = rig.root + "/out/b/." + waiting + ".mp4.part";
  CHECK(open_on(part) == 0);  // a video waiting for a worker holds no descriptor
  REQUIRE(::unlink(part.c_str()) == 0);
  REQUIRE(::mkfifo(part.c_str(), 0644) == 0);
  release = true;
  auto state = [&](const std::string& id) { return rig.store->shot("b", id)->state; };
  for (int i = 0; i < 100 && (rig.sched->active_shots() > 1 || test::exists(part)); ++i) {
    pollfd p{rig.sched->background_fd(), POLLIN, 0};
    ::poll(&p, 1, 200);
    rig.sched->tick();
  }
  CHECK(not_regular == 0);  // neither ffprobe nor the poster's ffmpeg was given the FIFO
  CHECK(asked() == 2);
  CHECK(state(waiting) == ShotState::downloading);
  CHECK_FALSE(test::exists(part));  // the FIFO is removed, the video downloaded again
  rig.until("cdn.example/r");
  auto dl = rig.net.take("cdn.example/r");
  FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  rig.sched->tick();
  wait_for_probe_answer(rig);
  CHECK(state(waiting) == ShotState::done);
  CHECK(not_regular == 0);
}

TEST_CASE("a directory put at the .part name holds the shot for a person, with what to do") {
  // Found by an outside attack: the shot waited "for the output folder" forever, never HELD.
  ProbingRig p;
  REQUIRE(::unlink(p.part.c_str()) == 0);
  REQUIRE(::mkdir(p.part.c_str(), 0755) == 0);
  p.probe.release = true;
  wait_for_probe_answer(p.rig);
  for (int i = 0; i < 20 && p.rig.shot().state == ShotState::downloading; ++i) p.rig.tick(Millis(60000));
  Shot s = p.rig.shot();
  REQUIRE(s.state == ShotState::held);
  CHECK(s.held_from == ShotState::downloading);  // `wanbatch retry` resumes it without a new submit
  CHECK(s.reason.find("is not a regular file: remove it") != std::string::npos);
  CHECK(std::count_if(p.rig.net.started.begin(), p.rig.net.started.end(), [](const wb::HttpRequest& r) {
          return r.url.find("/v2/wan2.7-i2v") != std::string::npos;
        }) == 1);
}

TEST_CASE("a video edited in place at the same size, its mtime set back, is downloaded again") {
  // Found by an outside attack: inode, size and mtime matched, the change went unprobed.
  ProbingRig p;
  struct stat before {};
  REQUIRE(::stat(p.part.c_str(), &before) == 0);
  {
    int fd = ::open(p.part.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "XXXX", 4, 64) == 4);
    ::close(fd);
  }
  const timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, p.part.c_str(), times, 0) == 0);
  p.probe.release = true;
  wait_for_probe_answer(p.rig);
  CHECK(p.rig.shot().state == ShotState::downloading);
  CHECK_FALSE(test::exists(p.rig.root + "/out/b/s1.mp4"));
}

TEST_CASE("background work: done runs on the draining thread, each one even when one throws") {
  Background bg(2);
  std::thread::id loop = std::this_thread::get_id();
  std::atomic<int> off_loop{0};
  std::vector<int> seen;
  for (int i = 0; i < 5; ++i)
    bg.run([&, i]() -> Background::Done {
      if (std::this_thread::get_id() != loop) ++off_loop;
      return [&, i] {
        CHECK(std::this_thread::get_id() == loop);
        seen.push_back(i);
        if (i == 2) throw Error("full disk");
      };
    });
  size_t ran = 0;
  int throws = 0;
  while (seen.size() < 5) {
    pollfd p{bg.fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    try {
      ran += bg.drain();
    } catch (const Error&) {
      ++throws;
    }
  }
  CHECK(off_loop == 5);
  CHECK(throws == 1);
  CHECK(bg.pending() == 0);
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("an ffprobe that fails on everything is a broken tool, not a video that does not decode") {
  REQUIRE_FFMPEG();
  const std::string script = test::cwd() + "/broken-ffprobe";
  test::write(script, "#!/bin/sh\nexit 1\n");
  REQUIRE(::chmod(script.c_str(), 0755) == 0);
  test::write("v.mp4", std::string(sim::sample_mp4()));
  VideoConfig c;
  c.ffprobe = script;
  VideoFacts broken = probe_video(c, "v.mp4");
  CHECK_FALSE(broken.checked);
  CHECK(broken.problem.find("ffprobe does not work") == 0);
  // The real ffprobe refusing a file is a verdict on the file.
  test::write("junk.mp4", "not a video at all");
  VideoFacts junk = probe_video(VideoConfig{}, "junk.mp4");
  CHECK(junk.checked);
  CHECK_FALSE(junk.decodes);
}

TEST_CASE("an ffprobe that exits 0 with nothing useful is a broken tool, not a video that does not decode") {
  REQUIRE_FFMPEG();
  test::write("v.mp4", std::string(sim::sample_mp4()));
  const std::string useless = test::cwd() + "/useless-ffprobe";
  test::write(useless, "#!/bin/sh\necho '{}'\n");
  REQUIRE(::chmod(useless.c_str(), 0755) == 0);
  VideoConfig c;
  c.ffprobe = useless;
  VideoFacts broken = probe_video(c, "v.mp4");
  CHECK_FALSE(broken.checked);
  CHECK_MESSAGE(broken.problem.find("ffprobe does not work") == 0, broken.problem);
  CHECK(broken.problem.find("no video stream") != std::string::npos);
  // A working ffprobe (its -version answers) that finds no streams: a verdict on the video.
  const std::string picky = test::cwd() + "/picky-ffprobe";
  test::write(picky, "#!/bin/sh\nfor a; do [ \"$a\" = -version ] && exec ffprobe -version; done\necho '{}'\n");
  REQUIRE(::chmod(picky.c_str(), 0755) == 0);
  c.ffprobe = picky;
  VideoFacts verdict = probe_video(c, "v.mp4");
  CHECK(verdict.checked);
  CHECK_FALSE(verdict.decodes);
}

TEST_CASE("a useless ffprobe is retried as 'cannot check the video', then HELD, never 'does not decode'") {
  const std::string useless = test::cwd() + "/useless-ffprobe";
  test::write(useless, "#!/bin/sh\necho '{}'\n");
  REQUIRE(::chmod(useless.c_str(), 0755) == 0);
  Rig rig;
  rig.config.video.ffprobe = useless;
  rig.config.retry.max_attempts = 2;
  rig.to_download();
  rig.deliver(std::string(sim::sample_mp4()));
  CHECK(rig.shot().state == ShotState::downloading);
  rig.deliver(std::string(sim::sample_mp4()));
  Shot s = rig.shot();
  CHECK(s.state == ShotState::held);
  CHECK_MESSAGE(s.reason.find("cannot check the video") != std::string::npos, s.reason);
  CHECK(s.reason.find("ffprobe does not work") != std::string::npos);
}

TEST_CASE("a full output disk at the commit leaves no <shot>.mp4 for a shot that is not DONE, and cancel takes back a stray one") {
  REQUIRE_FFMPEG();
  Rig rig;
  const std::string out = rig.root + "/out";
  // The output folder on a small tmpfs of the test's own (root only).
  if (test::run({"/bin/mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", out}) != 0) {
    MESSAGE("skipped: cannot mount a tmpfs here (needs root)");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { test::run({"/bin/umount", "-l", path}); }
  } unmount{out};
  const std::string video(sim::sample_mp4());
  rig.to_download();  // the part file is open in out/b
  REQUIRE(test::exists(out + "/b/.s1.mp4.part"));
  // Fill the disk so that the video fits, and not one byte after it.
  struct statvfs vfs {};
  REQUIRE(::statvfs(out.c_str(), &vfs) == 0);
  const size_t page = vfs.f_bsize;
  const size_t room = static_cast<size_t>(vfs.f_bavail) * page;
  const size_t video_pages = (video.size() + page - 1) / page * page;
  REQUIRE(room > video_pages);
  test::write(out + "/filler", std::string(room - video_pages, 'f'));
  rig.deliver(video);
  Shot s = rig.shot();
  CHECK(s.state == ShotState::downloading);
  CHECK_MESSAGE(s.reason.find("cannot write") != std::string::npos, s.reason);
  CHECK_FALSE(test::exists(out + "/b/s1.mp4"));  // nothing visible for a shot that is not DONE
  CHECK_FALSE(test::exists(out + "/b/s1.json"));
  CHECK(test::exists(out + "/b/.s1.mp4.part"));  // kept for the next try
  // A crash between a commit and the DONE record leaves the video visible: a cancel (--abandon: its take was paid for) takes it back.
  test::run({"/bin/rm", "-f", out + "/filler"});
  test::write(out + "/b/s1.mp4", video);
  test::write(out + "/b/s1.json", R"({"request_id":"r1"})");  // the commit's sidecar names this take's job
  auto r = rig.sched->cancel("b/s1", true);
  CHECK(r.changed.size() == 1);
  CHECK(rig.shot().state == ShotState::cancelled);
  CHECK_FALSE(test::exists(out + "/b/s1.mp4"));
  CHECK_FALSE(test::exists(out + "/b/s1.json"));
}

TEST_CASE("a video left visible by a crash before its shot was DONE is taken back when the download starts again") {
  Rig rig;
  test::mkdirs(rig.root + "/out/b");
  test::write(rig.root + "/out/b/s1.mp4", "left by a crash");
  test::write(rig.root + "/out/b/s1.json", R"({"request_id":"r1"})");  // the commit's sidecar names this take's job
  rig.to_download();
  CHECK(rig.shot().state == ShotState::downloading);
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.mp4"));
  CHECK_FALSE(test::exists(rig.root + "/out/b/s1.json"));
}

TEST_CASE("files that name another job (an earlier DONE take's) are left when a download starts or is cancelled") {
  Rig rig;
  test::mkdirs(rig.root + "/out/b");
  test::write(rig.root + "/out/b/s1.mp4", "take 1, DONE and paid for");
  test::write(rig.root + "/out/b/s1.json", R"({"request_id":"r0","take":1})");
  rig.to_download();
  CHECK(rig.shot().state == ShotState::downloading);
  CHECK(test::read(rig.root + "/out/b/s1.mp4") == "take 1, DONE and paid for");
  rig.sched->cancel("b/s1", true);
  CHECK(rig.shot().state == ShotState::cancelled);
  CHECK(test::exists(rig.root + "/out/b/s1.mp4"));
  CHECK(test::exists(rig.root + "/out/b/s1.json"));
}

TEST_CASE("a cancelled take's late check does not touch the take after it, whose download goes on") {
  // Outside attack (cf34e07): the check of take 1, cancelled while it was probed,
  // was applied to take 2 (the shot found by its key alone): take 2 lost an
  // attempt (HELD with retry.max_attempts 1) and never downloaded its own video.
  ProbingRig p;
  Rig& rig = p.rig;
  rig.config.retry.max_attempts = 1;
  auto cancelled = rig.sched->cancel("b/s1", true);
  REQUIRE(cancelled.changed == std::vector<std::string>{"s1"});
  ManifestRules rules;
  rules.input_roots = rig.config.input_roots;
  auto m = parse_manifest("batch: b\nshots: [{id: s1, prompt: storm, image: 'https://cdn.example/a.png'}]\n",
                          rig.root + "/media/b2.yaml", rules);
  REQUIRE(m.manifest);
  REQUIRE(rig.sched->accept(*m.manifest, "b2.yaml", rig.root + "/spool/active/b2.yaml") == Scheduler::Accept::revised);
  rig.until("/v2/wan2.7-i2v");
  rig.answer("/v2/wan2.7-i2v", 200, R"({"request_id":"r2"})");
  rig.until("/v2/requests/r2/status");
  rig.answer("/v2/requests/r2/status", 200, R"({"status":"COMPLETED"})");
  rig.until("/v2/requests/r2");
  rig.answer("/v2/requests/r2", 200, R"({"status":"COMPLETED","output":"https://cdn.example/v2.mp4"})");
  rig.tick();
  // Take 1's check answers now.
  p.probe.release = true;
  wait_for_probe_answer(rig);
  Shot s = rig.store->shots("b").at(0);
  CHECK(s.take == 2);
  CHECK(s.state == ShotState::downloading);
  CHECK(s.attempts == 0);
  rig.until("cdn.example/v2.mp4", Millis(10000));
  auto dl = rig.net.take("cdn.example/v2.mp4");
  FakeTransport::deliver(dl, std::string(sim::sample_mp4()));
  rig.tick();
  wait_for_probe_answer(rig);
  s = rig.store->shots("b").at(0);
  CHECK(s.state == ShotState::done);
  CHECK(s.request_id == "r2");
}
