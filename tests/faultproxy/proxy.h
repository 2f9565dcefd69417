// segmind-faultproxy: a hostile stand-in between wanbatch and segmind-sim.
// It forwards each request to the upstream (the simulator) with libcurl and,
// drawn from a seeded generator at a rate per fault kind (or always, for a
// forced kind), answers with a hostile shape instead: malformed or deeply
// nested JSON, truncated bodies, headers without a body, duplicate headers,
// wrong content types, statuses out of the table, huge error bodies, garbage
// rate-limit headers, dropped connections, bad or duplicate request_ids,
// trickled and truncated downloads. Upstream URLs in bodies are rewritten to
// the proxy's own, so downloads come through it too. GET /proxy/stats tallies
// what was injected; each injection is logged to stderr.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/sim/http_server.h"

namespace faultproxy {

// Which requests a fault kind applies to.
enum class Scope {
  api_get,   // GET /v2/requests/<id>[/status]
  submit,    // POST /v2/<model>
  download,  // GET /outputs/<file>
};

struct FaultKind {
  const char* name;
  Scope scope;
  bool forwards;  // the request reaches the upstream (for a submit: billed)
  const char* what;
};

// Every kind, in the order they are drawn.
const std::vector<FaultKind>& fault_kinds();
const FaultKind* find_kind(const std::string& name);

struct Options {
  std::string upstream;                 // e.g. http://127.0.0.1:8080, no trailing slash
  std::map<std::string, double> rates;  // kind -> share of eligible requests
  std::string force;                    // a kind injected into every eligible request
  uint64_t seed = 1;
  double trickle_seconds = 4;           // how long a trickled download lasts before the close
  size_t deep_levels = 100000;          // nesting of the deep JSON kinds
  size_t huge_bytes = 20u << 20;        // body of the huge 500s
};

class Proxy {
 public:
  explicit Proxy(Options options);
  void start(int port);
  void stop();
  int port() const { return server_.port(); }
  std::string base_url() const;

  sim::Response handle(const sim::Request& req);

  // {"requests": n, "forwarded": n, "upstream_failures": n, "faults": {kind: n}}
  std::string stats_json();

 private:
  struct Upstream {
    bool ok = false;  // an answer came (any status)
    long status = 0;
    std::string content_type;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
  };
  Upstream forward(const sim::Request& req);
  const FaultKind* draw(Scope scope, const sim::Request& req);
  sim::Response inject(const FaultKind& kind, const sim::Request& req);
  sim::Response relay(const Upstream& up);

  Options opt_;
  sim::HttpServer server_;
  std::mutex mu_;
  std::mt19937_64 rng_;
  int requests_ = 0;
  int forwarded_ = 0;
  int upstream_failures_ = 0;
  std::map<std::string, int> tally_;
  std::vector<std::string> request_ids_;  // from forwarded submits, for the duplicate kind
  std::set<std::string> not_found_once_;  // download paths already answered 404
};

}  // namespace faultproxy
