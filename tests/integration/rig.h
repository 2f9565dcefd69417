// The integration rig: the real segmind-sim and wanbatch binaries on a
// temporary spool, with the simulator on a free loopback port.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "daemon/control.h"
#include "jobs/store.h"
#include "tests/support.h"

using nlohmann::json;

struct Rig {
  std::string root = test::cwd();
  std::string config = root + "/wanbatch.yaml";
  std::string ledger = root + "/sim-ledger.jsonl";
  std::unique_ptr<test::Process> sim;
  std::unique_ptr<test::Process> daemon;
  std::string base;

  explicit Rig(std::vector<std::string> sim_args = {}, const std::string& extra_config = "",
               double settle_seconds = 0.2) {
    for (const char* d : {"/spool/incoming", "/spool/done", "/spool/failed", "/state", "/out", "/media/frames"})
      test::mkdirs(root + d);
    for (int i = 0; i < 3; ++i) test::write(root + "/media/frames/f" + std::to_string(i) + ".png", test::png(i));
    std::vector<std::string> argv = {SIM_BIN, "--port", "0", "--port-file", root + "/sim.port", "--time-scale",
                                     "0.002", "--workers", "8", "--ledger", ledger, "--seed", "7"};
    argv.insert(argv.end(), sim_args.begin(), sim_args.end());
    sim = std::make_unique<test::Process>(argv, std::map<std::string, std::string>{}, root + "/sim.log");
    REQUIRE(test::eventually([&] { return test::exists(root + "/sim.port"); }));
    std::string port = test::read(root + "/sim.port");
    port.erase(port.find_last_not_of("\n") + 1);
    base = "http://127.0.0.1:" + port;
    test::write(config, test::config_yaml(root, base, extra_config, settle_seconds));
  }

  void start_daemon(std::map<std::string, std::string> env = {}) {
    env["SEGMIND_API_KEY"] = "test-key";
    daemon = std::make_unique<test::Process>(std::vector<std::string>{WANBATCH_BIN, "--config", config, "daemon"},
                                             env, root + "/daemon.log");
  }

  // Writes a manifest beside the media and renames it into the spool, with
  // base_dir set as `wanbatch submit` would.
  void drop(const std::string& name, const std::string& text) {
    std::string staged = root + "/media/" + name;
    test::write(staged, "base_dir: " + root + "/media\n" + text);
    REQUIRE(std::rename(staged.c_str(), (root + "/spool/incoming/" + name).c_str()) == 0);
  }

  // Renames `text` into the spool as is.
  void drop_raw(const std::string& name, const std::string& text) {
    std::string staged = root + "/media/" + name;
    test::write(staged, text);
    REQUIRE(std::rename(staged.c_str(), (root + "/spool/incoming/" + name).c_str()) == 0);
  }

  json status() {
    std::string out;
    int code = test::run({WANBATCH_BIN, "--config", config, "status", "--json"}, &out);
    if (code != 0) return json::object();
    auto j = json::parse(out, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  // Shot counts by state of one batch; empty until the daemon has accepted it.
  json states(const std::string& batch) {
    for (const auto& b : status().value("batches", json::array()))
      if (b["batch"] == batch) return b["states"];
    return json::object();
  }

  bool finished(const std::string& batch) {
    return test::exists(root + "/out/" + batch + "/report.json") &&
           test::exists(root + "/spool/done/" + batch + ".yaml");
  }

  // "id HELD: reason" for every HELD shot of every batch, as `wanbatch status
  // BATCH --json` lists them (the overview shows at most ten a batch).
  std::vector<std::string> held_lines() {
    std::vector<std::string> held;
    for (const auto& b : status().value("batches", json::array())) {
      std::string out;
      if (test::run({WANBATCH_BIN, "--config", config, "status", "--json", b["batch"].get<std::string>()}, &out) != 0)
        continue;
      auto j = json::parse(out, nullptr, false);
      if (j.is_discarded()) continue;
      for (const auto& s : j.value("shot_list", json::array()))
        if (s["state"] == "HELD") held.push_back(s["id"].get<std::string>() + " HELD: " + s["reason"].get<std::string>());
    }
    return held;
  }

  // Accepted submits per shot id, from the simulator's ledger (prompts name the shot).
  std::map<std::string, int> billed() {
    std::map<std::string, int> out;
    std::istringstream in(test::read(ledger));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      std::string prompt = json::parse(line)["params"]["prompt"];
      ++out[prompt.substr(0, prompt.find(':'))];
    }
    return out;
  }

  std::string log() { return test::read(root + "/daemon.log"); }

  // The daemon's own submit ledger (key space l/), read from its store as
  // `wanbatch status` reads it, also while the daemon runs.
  std::vector<json> daemon_ledger() {
    std::vector<json> out;
    bool read = test::eventually([&] {
      try {
        out = wb::Store::open(root + "/state/db", wb::Store::Mode::read_only)->ledger();
        return true;
      } catch (const wb::Error&) {
        return false;  // a table file compacted away under the read: read again
      }
    });
    REQUIRE(read);
    return out;
  }

  // Returns once the daemon has answered `turns` control pings one after the
  // other. The loop ticks, then serves the control socket, so a ping answered
  // after a first one was comes from a later turn (unless it connected before
  // that serve's last accept: a few microseconds, hence three): every submit the
  // gates allowed when this was called has its `attempt` in the ledger by then.
  void loop_turns(int turns = 3) {
    for (int i = 0; i < turns; ++i) REQUIRE(wb::control_request(root + "/state", {{"command", "ping"}})["ok"] == true);
  }
};

inline int count_events(const std::vector<json>& ledger, const std::string& event) {
  int n = 0;
  for (const auto& e : ledger) n += e.value("event", "") == event;
  return n;
}

inline std::string manifest(const std::string& batch, int shots) {
  std::string text = "batch: " + batch + "\ndefaults:\n  duration: 4\nshots:\n";
  for (int i = 0; i < shots; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "sh%03d", i * 10);
    text += "  - id: " + std::string(id) + "\n    prompt: \"" + id + ": a breeze over the lake\"\n";
    text += i % 3 == 2 ? "    image: https://cdn.example/still.png\n"
                       : "    image: frames/f" + std::to_string(i % 2) + ".png\n";
    if (i % 4 == 1) text += "    resolution: 1080P\n";
  }
  return text;
}

