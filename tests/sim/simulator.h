// segmind-sim: the Segmind API of SEGMIND_API.md on 127.0.0.1, for tests, the
// demo and rehearsals with zero spend. Jobs run on N simulated workers; every
// simulated duration is multiplied by time_scale. Faults are injected at the
// configured rates from a seeded generator. Every accepted submit is appended
// to a JSON-lines ledger, so a test can count what would have been billed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "tests/sim/http_server.h"

namespace sim {

struct Options {
  std::string api_key;        // empty: any non-empty x-api-key is accepted
  std::string model = "wan2.7-i2v";
  int workers = 4;
  double time_scale = 1.0;    // real seconds per simulated second
  double render_seconds = 138;
  double credits = 1000;
  double price_per_second_720p = 0.1;
  double price_per_second_1080p = 0.15;
  double fail_rate = 0;       // share of jobs that end FAILED
  double error_rate = 0;      // share of API calls answered 500
  double drop_rate = 0;       // share of accepted submits whose answer is dropped
  int rate_limit = 0;         // submits per window; 0 = unlimited
  double rate_window_seconds = 60;
  double expiry_seconds = 3600;  // how long finished records stay
  std::string output_shape = "mixed";  // string | video | video_url | mixed
  double trickle_bytes_per_second = 0;  // > 0: output files are sent this slowly
  long long output_error_bytes = 0;     // > 0: output files answer 500 with a body this large
  uint64_t seed = 1;
  std::string ledger_path;
};

std::string_view sample_mp4();

class Simulator {
 public:
  explicit Simulator(Options options);
  ~Simulator();
  void start(int port);
  void stop();
  int port() const { return server_.port(); }
  std::string base_url() const;

  Response handle(const Request& req);

  struct Stats {
    int requests = 0;  // every request answered or dropped
    int submits_accepted = 0;
    int uploads = 0;  // files received by /upload-asset
    int submits_dropped = 0;
    int rate_limited = 0;
    int errors_injected = 0;
    double credits = 0;
  };
  Stats stats();

 private:
  struct Job;
  double now() const;  // simulated seconds since start
  Response submit(const Request& req);
  Response status(const std::string& id, bool full);
  Response upload(const Request& req);
  Response output(const Request& req, const std::string& id);
  void settle(double t);
  std::string job_state(const Job& j, double t) const;

  Options opt_;
  HttpServer server_;
  std::mutex mu_;
  std::mt19937_64 rng_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
  std::map<std::string, std::string> assets_;  // name -> bytes
  std::vector<double> worker_free_;
  double start_real_ = 0;
  uint64_t seq_ = 0;
  double window_start_ = 0;
  int window_count_ = 0;
  Stats stats_;
};

}  // namespace sim
