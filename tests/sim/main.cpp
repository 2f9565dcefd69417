// segmind-sim: a local stand-in for the Segmind API (tests/sim/simulator.h).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "jobs/util.h"
#include "tests/sim/simulator.h"

int main(int argc, char** argv) {
  sim::Options o;
  int port = 0;
  std::string port_file;
  CLI::App app{"segmind-sim: the Segmind async API (Wan 2.7 image-to-video) on 127.0.0.1, for tests,\n"
               "demos and rehearsals with zero spend. Extra endpoints: GET /sim/stats,\n"
               "GET /sim/jobs, POST /sim/credits {\"add\": n} or {\"set\": n}."};
  app.add_option("--port", port, "TCP port on 127.0.0.1; 0 picks a free one")->capture_default_str();
  app.add_option("--port-file", port_file, "write the chosen port to this file (atomically)");
  app.add_option("--api-key", o.api_key, "accept only this x-api-key (default: any non-empty key)");
  app.add_option("--model", o.model, "model slug served at POST /v2/<model>")->capture_default_str();
  app.add_option("--workers", o.workers, "jobs rendered at once")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--time-scale", o.time_scale, "real seconds per simulated second (0.005: a 138 s render takes 0.69 s)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--render-seconds", o.render_seconds, "simulated render time of one job")->capture_default_str();
  app.add_flag("--render-by-class", o.render_by_class,
               "mean render time = render-seconds x duration/5, x 2.25 at 1080P (default: render-seconds for all)");
  app.add_option("--render-spread", o.render_sigma,
                 "per-job lognormal factor of mean 1 with this sigma (0: every job of a class takes the mean)")
      ->capture_default_str()->check(CLI::Range(0.0, 3.0));
  std::string tail;
  app.add_option("--render-tail", tail,
                 "SHARE:MAX: that share of jobs render longer, by a log-uniform factor between 1 and MAX")
      ->each([&](const std::string& v) {
        auto colon = v.find(':');
        try {
          if (colon == std::string::npos) throw std::invalid_argument(v);
          size_t used = 0;
          o.render_tail_share = std::stod(v.substr(0, colon), &used);
          if (used != colon) throw std::invalid_argument(v);
          std::string max = v.substr(colon + 1);
          o.render_tail_max = std::stod(max, &used);
          if (used != max.size()) throw std::invalid_argument(v);
        } catch (const std::exception&) {
          throw CLI::ValidationError("--render-tail", "must be SHARE:MAX, e.g. 0.05:4, got '" + v + "'");
        }
        if (!(o.render_tail_share >= 0 && o.render_tail_share <= 1) || !(o.render_tail_max >= 1 && o.render_tail_max <= 100))
          throw CLI::ValidationError("--render-tail", "SHARE must be in [0, 1] and MAX in [1, 100], got '" + v + "'");
      });
  std::string slow;
  app.add_option("--render-slow", slow, "TEXT:SECONDS: a job whose prompt contains TEXT renders SECONDS (simulated)")
      ->each([&](const std::string& v) {
        auto colon = v.rfind(':');
        try {
          if (colon == std::string::npos || colon == 0) throw std::invalid_argument(v);
          size_t used = 0;
          std::string secs = v.substr(colon + 1);
          o.render_slow_seconds = std::stod(secs, &used);
          if (used != secs.size() || !(o.render_slow_seconds > 0 && o.render_slow_seconds <= 86400))
            throw std::invalid_argument(v);
          o.render_slow_text = v.substr(0, colon);
        } catch (const std::exception&) {
          throw CLI::ValidationError("--render-slow", "must be TEXT:SECONDS with SECONDS in (0, 86400], got '" + v + "'");
        }
      });
  app.add_option("--credits", o.credits, "starting credit balance")->capture_default_str();
  app.add_option("--fail-rate", o.fail_rate, "share of jobs that end FAILED (422)")->check(CLI::Range(0.0, 1.0));
  app.add_option("--fail-text", o.fail_text, "a job whose prompt contains this text ends FAILED (422)");
  app.add_option("--error-rate", o.error_rate, "share of API calls answered 500")->check(CLI::Range(0.0, 1.0));
  app.add_option("--drop-rate", o.drop_rate, "share of accepted submits whose answer is dropped")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--rate-limit", o.rate_limit, "submits allowed per window (0: unlimited)");
  app.add_option("--rate-window", o.rate_window_seconds, "rate-limit window, simulated seconds")->capture_default_str();
  app.add_option("--expiry", o.expiry_seconds, "simulated seconds a finished record is kept")->capture_default_str();
  app.add_option("--output-shape", o.output_shape, "string, video, video_url or mixed")
      ->capture_default_str()->check(CLI::IsMember({"string", "video", "video_url", "mixed"}));
  app.add_option("--trickle-downloads", o.trickle_bytes_per_second,
                 "send output files at this many bytes a second (0: at full speed)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--output-error-bytes", o.output_error_bytes,
                 "output files answer 500 with a body of this many bytes (0: they serve the video)")
      ->check(CLI::Range(0LL, 1LL << 32));
  app.add_option("--seed", o.seed, "seed for the fault generator and the render-time draws (the last one given counts)")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--ledger", o.ledger_path, "append every accepted submit to this JSON-lines file");
  CLI11_PARSE(app, argc, argv);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);

  sim::Simulator s(o);
  try {
    s.start(port);
  } catch (const std::exception& e) {
    std::cerr << "segmind-sim: " << e.what() << "\n";
    return 1;
  }
  if (!port_file.empty()) wb::write_file_atomic(wb::dirname_of(port_file), wb::basename_of(port_file),
                                                std::to_string(s.port()) + "\n");
  std::cerr << "segmind-sim: listening on " << s.base_url() << "\n";
  int sig = 0;
  sigwait(&mask, &sig);
  s.stop();
  return 0;
}
