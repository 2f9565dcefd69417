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
  // Render time by class: the mean is render_seconds x (duration / 5), x 2.25 at
  // 1080P, when render_by_class; otherwise render_seconds for every job.
  bool render_by_class = false;
  // Per-job draw around that mean, from a generator seeded by seed and the job's
  // prompt, duration and resolution (the same shot renders as long whichever
  // client sends it, in whatever order): a lognormal factor of mean 1 and this
  // sigma (0: none), and a share of slow jobs whose time is multiplied by a
  // log-uniform factor between 1 and render_tail_max.
  double render_sigma = 0;
  double render_tail_share = 0;
  double render_tail_max = 1;
  // A job whose prompt contains render_slow_text (when not empty) renders
  // render_slow_seconds instead, whatever the draw: one stuck-looking job.
  std::string render_slow_text;
  double render_slow_seconds = 0;
  double credits = 1000;
  double price_per_second_720p = 0.1;
  double price_per_second_1080p = 0.15;
  double fail_rate = 0;       // share of jobs that end FAILED
  std::string fail_text;      // a job whose prompt contains it (when not empty) ends FAILED
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

// The render time of one job of this class (Options: render_by_class and the
// spread); `draw` seeds its generator.
double render_time(const Options& o, int duration, const std::string& resolution, uint64_t draw);

class Simulator {
 public:
  explicit Simulator(Options options);
  ~Simulator();
  void start(int port);
  void stop();
  int port() const { return server_.port(); }
  std::string base_url() const;

  Response handle(const Request& req);

  // Requests by endpoint, whatever their answer (/sim/ endpoints not counted).
  struct Endpoints {
    int submit = 0;    // POST /v2/<model>
    int status = 0;    // GET /v2/requests/<id>/status
    int result = 0;    // GET /v2/requests/<id>
    int upload = 0;    // /upload-asset
    int download = 0;  // /outputs/<id>.mp4
    int credits = 0;   // /v1/get-user-credits
    int other = 0;
  };

  struct Stats {
    int requests = 0;  // every request answered or dropped
    Endpoints endpoints;
    int submits_accepted = 0;
    int uploads = 0;  // files received by /upload-asset
    int submits_dropped = 0;
    int rate_limited = 0;
    int errors_injected = 0;
    double credits = 0;
  };
  Stats stats();

  // One job as seen by the provider, in simulated seconds since the start; for
  // detection delay = first_completed - finish. -1: not happened (yet).
  struct JobView {
    std::string id;
    int duration = 5;
    std::string resolution;
    double render = 0;           // the job's own render time (finish - start)
    double submitted = 0, start = 0, finish = 0;
    double first_completed = -1;  // the first status or result answer saying COMPLETED
    double last_download = -1;    // the last output download served
    bool fails = false;
    int status_requests = 0, result_requests = 0, download_requests = 0;
  };
  std::vector<JobView> jobs();  // in submit order

 private:
  struct Job;
  double now() const;  // simulated seconds since start
  Response submit(const Request& req);
  Response status(const std::string& id, bool full);
  Response upload(const Request& req);
  Response output(const Request& req, const std::string& id);
  void settle(double t);
  void count(const Request& req);
  std::vector<JobView> jobs_view() const;
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
