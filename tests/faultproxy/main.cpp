// segmind-faultproxy: a fault-injecting proxy in front of segmind-sim (tests/faultproxy/proxy.h).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "jobs/util.h"
#include "tests/faultproxy/proxy.h"

int main(int argc, char** argv) {
  faultproxy::Options o;
  int port = 0;
  std::string port_file;
  std::vector<std::string> rates;
  double all_rate = -1;
  bool list = false;
  CLI::App app{"segmind-faultproxy: forwards to segmind-sim and answers with hostile shapes at the\n"
               "given rates. GET /proxy/stats tallies the faults injected; each is logged to stderr."};
  app.add_option("--upstream", o.upstream, "the simulator's base URL, e.g. http://127.0.0.1:8080");
  app.add_option("--port", port, "TCP port on 127.0.0.1; 0 picks a free one")->capture_default_str();
  app.add_option("--port-file", port_file, "write the chosen port to this file (atomically)");
  app.add_option("--seed", o.seed, "seed for the fault generator")->capture_default_str();
  app.add_option("--rate", rates, "KIND=R: inject KIND into a share R of the requests it applies to (repeatable)");
  app.add_option("--all", all_rate, "the rate of every kind not given by --rate")->check(CLI::Range(0.0, 1.0));
  app.add_option("--force", o.force, "inject KIND into every request it applies to (overrides rates)");
  app.add_option("--trickle-seconds", o.trickle_seconds, "how long a trickled download lasts before the close")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--deep-levels", o.deep_levels, "nesting of deep_json")->capture_default_str();
  app.add_option("--huge-bytes", o.huge_bytes, "body size of the huge 500s")->capture_default_str();
  app.add_flag("--list", list, "list the fault kinds and exit");
  CLI11_PARSE(app, argc, argv);

  if (list) {
    const char* scopes[] = {"GET status/result", "submit", "download"};
    for (const auto& k : faultproxy::fault_kinds())
      std::cout << k.name << "\t" << scopes[static_cast<int>(k.scope)] << "\t" << k.what << "\n";
    return 0;
  }
  auto fail = [](const std::string& why) {
    std::cerr << "segmind-faultproxy: " << why << "\n";
    return 2;
  };
  if (o.upstream.empty()) return fail("--upstream is required");
  while (!o.upstream.empty() && o.upstream.back() == '/') o.upstream.pop_back();
  for (const auto& r : rates) {
    auto eq = r.find('=');
    std::string name = r.substr(0, eq);
    if (eq == std::string::npos || !faultproxy::find_kind(name)) return fail("unknown --rate " + r + " (see --list)");
    try {
      double v = std::stod(r.substr(eq + 1));
      if (v < 0 || v > 1) throw std::out_of_range("rate");
      o.rates[name] = v;
    } catch (const std::exception&) {
      return fail("--rate " + r + ": the rate must be a number from 0 to 1");
    }
  }
  if (all_rate >= 0)
    for (const auto& k : faultproxy::fault_kinds()) o.rates.emplace(k.name, all_rate);
  if (!o.force.empty() && !faultproxy::find_kind(o.force)) return fail("unknown --force " + o.force + " (see --list)");

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);

  faultproxy::Proxy proxy(o);
  try {
    proxy.start(port);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (!port_file.empty())
    wb::write_file_atomic(wb::dirname_of(port_file), wb::basename_of(port_file), std::to_string(proxy.port()) + "\n");
  std::cerr << "segmind-faultproxy: listening on " << proxy.base_url() << ", upstream " << o.upstream << "\n";
  int sig = 0;
  sigwait(&mask, &sig);
  proxy.stop();
  return 0;
}
