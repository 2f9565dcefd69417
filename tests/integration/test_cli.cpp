// The command line as a person types it: global options on either side of the
// subcommand, validate without a daemon config, exit codes, --version, and
// `status` read from a running daemon, also in a real terminal (tmux).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include <regex>

#include "tests/integration/rig.h"

namespace {

std::string cli_out(const std::vector<std::string>& args, int* code = nullptr,
                    std::map<std::string, std::string> env = {}) {
  std::vector<std::string> argv = {WANBATCH_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  int c = test::run(argv, &out, std::move(env));
  if (code) *code = c;
  return out;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A tmux server of the test's own (its socket in the test folder), one window of
// a fixed size running `sh`; killed at the end.
struct Tmux {
  std::string socket = test::cwd() + "/tmux.sock";
  explicit Tmux(const std::map<std::string, std::string>& env) {
    std::vector<std::string> argv = {"/usr/bin/env", "tmux", "-S", socket, "-f", "/dev/null", "new-session", "-d", "-x", "200",
                                     "-y", "30"};
    for (const auto& [k, v] : env) {
      argv.push_back("-e");
      argv.push_back(k + "=" + v);
    }
    argv.push_back("sh");
    REQUIRE(test::run(argv) == 0);
  }
  ~Tmux() { test::run({"/usr/bin/env", "tmux", "-S", socket, "kill-server"}); }
  void keys(const std::vector<std::string>& keys) {
    std::vector<std::string> argv = {"/usr/bin/env", "tmux", "-S", socket, "send-keys", "-t", "0"};
    argv.insert(argv.end(), keys.begin(), keys.end());
    REQUIRE(test::run(argv) == 0);
  }
  // The screen as shown; `escapes`: with its colour sequences.
  std::string screen(bool escapes = false) {
    std::string out;
    std::vector<std::string> argv = {"/usr/bin/env", "tmux", "-S", socket, "capture-pane", "-p", "-t", "0"};
    if (escapes) argv.push_back("-e");
    test::run(argv, &out);
    return out;
  }
};

int count(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("global options go before or after the subcommand") {
  Rig rig;
  int code = -1;
  auto out = cli_out({"status", "--config", rig.config, "--json"}, &code);
  CHECK_MESSAGE(code == 1, out);  // no state yet: said, not a usage error
  CHECK_MESSAGE(!has(out, "not expected"), out);
  // The daemon with --config after it: it starts on that config.
  test::Process daemon({WANBATCH_BIN, "daemon", "--config", rig.config}, {{"SEGMIND_API_KEY", "k"}},
                       rig.root + "/daemon.log");
  REQUIRE_MESSAGE(test::eventually([&] { return has(rig.log(), "loaded"); }), rig.log());
  out = cli_out({"status", "--config", rig.config, "--json"}, &code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(json::parse(out)["daemon"]["running"] == true);
  out = cli_out({"-c", rig.config, "status"}, &code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(has(out, "daemon: running"));
  daemon.signal(SIGTERM);
  CHECK(daemon.wait() == 0);
  // A usage error is exit 2, with the message.
  out = cli_out({"status", "--no-such-option"}, &code);
  CHECK(code == 2);
  CHECK(has(out, "--no-such-option"));
  out = cli_out({}, &code);
  CHECK(code == 2);
  out = cli_out({"--help"}, &code);
  CHECK(code == 0);
  CHECK(has(out, "Exit codes: 0 success"));
  CHECK(has(out, "2 usage or config error"));
}

TEST_CASE("validate works without a daemon config and says what it checked") {
  struct stat st {};
  if (::stat("/etc/wanbatch/wanbatch.yaml", &st) == 0) {
    MESSAGE("skipped: /etc/wanbatch/wanbatch.yaml exists on this machine, so there is always a config");
    return;
  }
  const std::map<std::string, std::string> no_config = {{"WANBATCH_CONFIG", ""}};
  std::string dir = test::cwd();
  test::mkdirs(dir + "/shots");
  test::write(dir + "/shots/frame.png", test::png());
  test::write(dir + "/shots/good.yaml", "batch: good\nshots:\n  - {id: a, prompt: p, image: frame.png}\n");
  test::write(dir + "/shots/missing.yaml", "shots:\n  - {id: a, prompt: p, image: nowhere.png}\n");
  test::write(dir + "/shots/rules.yaml", "shots:\n  - {id: a, prompt: p, image: frame.png, resolution: 8K}\n");
  int code = -1;
  auto out = cli_out({"validate", dir + "/shots/good.yaml"}, &code, no_config);
  CHECK_MESSAGE(code == 0, out);
  CHECK(has(out, "good.yaml: ok, batch good, 1 shots"));
  CHECK(has(out, "NOT checked against input_roots (no daemon config at /etc/wanbatch/wanbatch.yaml"));
  out = cli_out({"validate", dir + "/shots/missing.yaml"}, &code, no_config);
  CHECK(code == 1);
  CHECK_MESSAGE(has(out, "nowhere.png: cannot open"), out);
  out = cli_out({"validate", dir + "/shots/rules.yaml", dir + "/shots/good.yaml"}, &code, no_config);
  CHECK(code == 1);
  CHECK(has(out, "must be 720P or 1080P, got '8K'"));

  // With a config, media are held to its input_roots (the rig's: <root>/media only).
  Rig rig;
  out = cli_out({"validate", dir + "/shots/good.yaml", "--config", rig.config}, &code);
  CHECK(code == 1);
  CHECK_MESSAGE(has(out, "outside the configured input_roots"), out);
  CHECK(has(out, "lie under input_roots of " + rig.config));
  // A config named but missing, or broken: exit 2, nothing checked.
  out = cli_out({"validate", dir + "/shots/good.yaml", "--config", dir + "/nope.yaml"}, &code);
  CHECK(code == 2);
  CHECK(!has(out, "ok, batch"));
  out = cli_out({"validate", dir + "/shots/good.yaml"}, &code, {{"WANBATCH_CONFIG", dir + "/nope.yaml"}});
  CHECK(code == 2);
  test::write(dir + "/broken.yaml", "limits2: {}\n");
  out = cli_out({"validate", dir + "/shots/good.yaml", "--config", dir + "/broken.yaml"}, &code);
  CHECK(code == 2);
  CHECK(has(out, "limits2: unknown key"));
  out = cli_out({"validate"}, &code, no_config);
  CHECK(code == 2);  // no file: a usage error
}

TEST_CASE("--version prints the version and the git revision it was built from") {
  int code = -1;
  auto out = cli_out({"--version"}, &code);
  CHECK(code == 0);
  CHECK_MESSAGE(std::regex_match(out, std::regex(R"(wanbatch [0-9]+\.[0-9]+\.[0-9]+ \(git ([0-9a-f]{7,40}(-dirty)?|unknown)\)\n)")),
                out);
}

TEST_CASE("status: progress, credits, ETA and why shots wait, from a running daemon, in text and JSON") {
  Rig rig({"--render-seconds", "700"});  // a render takes about 1.4 s
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return has(rig.log(), "loaded"); }));
  REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "pause"}) == 0);
  rig.drop("lake.yaml", manifest("lake", 12));
  json b;
  REQUIRE_MESSAGE(test::eventually([&] {
    auto st = rig.status();
    if (st.value("batches", json::array()).empty()) return false;
    b = st["batches"][0];
    return b["states"].value("PENDING", 0) == 12;
  }), rig.log());
  CHECK(b["progress"] == 0);
  CHECK(b["eta"].is_null());
  CHECK(b["eta_unknown"] == "submits paused");
  CHECK(b["credits_spent"] == 0);
  CHECK(b["credits_remaining_estimate"].get<double>() > 0);
  REQUIRE(b["waiting"].size() == 1);
  CHECK(b["waiting"].begin().value() == 12);
  std::string text = cli_out({"--config", rig.config, "status"});
  CHECK_MESSAGE(has(text, "lake [....................] 0%  0/12 done, 12 pending  credits 0 spent, ~"), text);
  CHECK(has(text, "ETA unknown (submits paused)"));
  CHECK_MESSAGE(has(text, "12 shot(s) waiting: submits paused by an operator"), text);
  CHECK(!has(text, "\x1b"));  // not a terminal: no colour

  REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "resume"}) == 0);
  // Under way: an ETA in the future, in UTC ISO 8601.
  std::string eta;
  REQUIRE_MESSAGE(test::eventually([&] {
    auto st = rig.status();
    if (st.value("batches", json::array()).empty()) return false;
    b = st["batches"][0];
    if (!b["eta"].is_string()) return false;
    eta = b["eta"];
    return true;
  }), rig.log());
  CHECK(std::regex_match(eta, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  CHECK(eta > wb::iso8601_utc(std::chrono::system_clock::now() - std::chrono::seconds(1)));

  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("lake"); }, std::chrono::seconds(60)), rig.log());
  b = rig.status()["batches"][0];
  CHECK(b["progress"] == 1);
  CHECK(b["eta"].is_null());
  CHECK(b["credits_remaining_estimate"] == 0);
  auto report = json::parse(test::read(rig.root + "/out/lake/report.json"));
  CHECK(b["credits_spent"] == report["total_cost"]);
  text = cli_out({"--config", rig.config, "status"});
  CHECK_MESSAGE(has(text, "lake [####################] 100%  12/12 done  credits "), text);
  CHECK(has(text, "finished"));

  // One batch, shot by shot.
  int code = -1;
  text = cli_out({"status", "lake", "--config", rig.config}, &code);
  CHECK(code == 0);
  CHECK(has(text, "SHOT   STATE  AGE     TAKE  REQUEST_ID"));
  CHECK(count(text, " DONE ") == 12);
  auto one = json::parse(cli_out({"status", "lake", "--json", "--config", rig.config}));
  REQUIRE(one["shot_list"].size() == 12);
  for (const auto& s : one["shot_list"]) {
    CHECK(s["state"] == "DONE");
    CHECK(!s["request_id"].get<std::string>().empty());
    CHECK(s["take"] == 1);
  }
  text = cli_out({"status", "nosuch", "--config", rig.config}, &code);
  CHECK(code == 1);
  CHECK(has(text, "no batch named nosuch"));
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("status --watch in a real terminal: redrawn in place, in colour unless NO_COLOR, until Ctrl-C") {
  if (test::run({"/bin/sh", "-c", "command -v tmux"}) != 0) {
    MESSAGE("skipped: tmux is not installed (apt-get install tmux)");
    return;
  }
  Rig rig({"--render-seconds", "700"});
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return has(rig.log(), "loaded"); }));
  REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "pause"}) == 0);
  rig.drop("lake.yaml", manifest("lake", 12));
  REQUIRE(test::eventually([&] { return rig.states("lake").value("PENDING", 0) == 12; }));
  for (bool no_color : {false, true}) {
    CAPTURE(no_color);
    std::map<std::string, std::string> env = {{"TERM", "xterm-256color"}};
    if (no_color) env["NO_COLOR"] = "1";
    Tmux tmux(env);
    REQUIRE(test::eventually([&] { return tmux.screen().find_first_not_of(" \n") != std::string::npos; }));  // a prompt
    tmux.keys({std::string(WANBATCH_BIN) + " status --watch --interval 0.2 --config " + rig.config, "Enter"});
    REQUIRE_MESSAGE(test::eventually([&] { return has(tmux.screen(), "/12 done"); }), tmux.screen());
    std::string coloured = tmux.screen(true);
    CHECK(has(coloured, "\x1b[") != no_color);
    if (!no_color) CHECK(!has(tmux.screen(), "\x1b["));  // the plain capture has none: the colour is the terminal's
    // The batch moves on: the same lines redrawn, never scrolled.
    if (!no_color) REQUIRE(test::run({WANBATCH_BIN, "--config", rig.config, "resume"}) == 0);
    if (!no_color)
      REQUIRE_MESSAGE(test::eventually([&] { return has(tmux.screen(), "12/12 done"); }, std::chrono::seconds(60)),
                      tmux.screen());
    std::string screen = tmux.screen();
    CHECK_MESSAGE(count(screen, "lake [") == 1, screen);
    CHECK_MESSAGE(count(screen, "daemon: running") == 1, screen);
    CHECK(screen.rfind("lake [", 0) == 0);  // drawn from the top
    // Ctrl-C ends it and gives the shell back, the last frame left on the screen.
    tmux.keys({"C-c"});
    tmux.keys({"echo watch-ended-$?", "Enter"});
    REQUIRE_MESSAGE(test::eventually([&] { return has(tmux.screen(), "watch-ended-0"); }), tmux.screen());
    CHECK(has(tmux.screen(), "lake ["));
  }
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

TEST_CASE("status --watch to a pipe: plain snapshots one after another, no escapes") {
  Rig rig;
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return has(rig.log(), "loaded"); }));
  rig.drop("lake.yaml", manifest("lake", 3));
  REQUIRE_MESSAGE(test::eventually([&] { return rig.finished("lake"); }), rig.log());
  std::string log = rig.root + "/watch.log";
  test::Process watch({WANBATCH_BIN, "--config", rig.config, "status", "--watch", "--interval", "0.2"}, {}, log);
  REQUIRE(test::eventually([&] { return count(test::read(log), "lake [") >= 2; }));
  watch.signal(SIGINT);
  CHECK(watch.wait() == 0);
  std::string out = test::read(log);
  CHECK(!has(out, "\x1b"));
  CHECK_MESSAGE(has(out, "/min\n\nlake ["), out);
  rig.daemon->signal(SIGTERM);
  CHECK(rig.daemon->wait() == 0);
}

namespace {

// A control socket that a stuck daemon would leave: it takes connections into
// its backlog (`listening`) and never answers, or is bound with no one listening.
struct SilentSocket {
  int fd = -1;
  SilentSocket(const std::string& path, bool listening) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    ::unlink(path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    if (listening) REQUIRE(::listen(fd, 16) == 0);
  }
  ~SilentSocket() { ::close(fd); }
};

}  // namespace

TEST_CASE("status tells a busy daemon (its socket takes the connection, no answer in 3 s) from one not running") {
  Rig rig;
  rig.start_daemon();
  REQUIRE(test::eventually([&] { return has(rig.log(), "loaded"); }));
  rig.daemon->signal(SIGTERM);
  REQUIRE(rig.daemon->wait() == 0);
  const std::string sock = rig.root + "/state/control.sock";
  ::unlink(sock.c_str());
  std::string out = cli_out({"--config", rig.config, "status"});
  CHECK_MESSAGE(has(out, "daemon: not running"), out);
  {
    SilentSocket refused(sock, false);  // a socket file left behind: connection refused
    out = cli_out({"--config", rig.config, "status"});
    CHECK_MESSAGE(has(out, "daemon: not running"), out);
  }
  SilentSocket stuck(sock, true);
  const auto t0 = std::chrono::steady_clock::now();
  out = cli_out({"--config", rig.config, "status"});
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(6));
  CHECK_MESSAGE(has(out, "daemon: busy: not answering in 3 s"), out);
  CHECK(!has(out, "not running"));
  auto j = nlohmann::json::parse(cli_out({"--config", rig.config, "status", "--json"}));
  CHECK(j["daemon"]["running"] == false);
  CHECK(j["daemon"]["not_answering"].get<std::string>().find("busy") == 0);
}
