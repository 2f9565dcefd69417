// The provider as a rehearsal imagines it (daemon/rehearse.h): an in-process
// Transport that answers every request the engine makes, on the rehearsal's
// simulated clock, and never touches the network.
//
// - A submit is accepted at once; its job renders from then on (no provider
//   queue: how many jobs the provider runs at once for us is not known ahead)
//   for a time drawn from the render model of its class (learned, or the
//   prior), seeded, so one rehearsal gives one answer.
// - A status poll answers PROCESSING until the job's end, then COMPLETED; the
//   result carries metrics (inference_time, cost, remaining_credits) as the
//   real API's do. A job costs what the engine's cost model estimates for it
//   (observed costs per resolution, else the price table).
// - The balance is the one given (the daemon's last reading) less what was
//   charged; unknown: unlimited. Uploads answer a URL; downloads write the
//   simulator's sample video.
// Answers are not given inside start(): answer_all() gives them, in order,
// as a network would later.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "jobs/engine/render_model.h"
#include "jobs/engine/spend.h"
#include "jobs/http.h"
#include "jobs/manifest.h"

namespace wb {

namespace rehearsal {
std::string_view sample_mp4();  // the simulator's 1 s H.264 + AAC sample (tests/sim/sample.mp4)
}

class RehearsalProvider : public Transport {
 public:
  using ClockMs = std::function<int64_t()>;
  RehearsalProvider(const RenderModel& model, const CostModel& costs, std::optional<double> balance, ClockMs now_ms,
                    uint64_t seed = 1);

  void start(HttpRequest request, HttpCallback done) override;
  size_t active() const override { return calls_.size(); }
  // Answers every request started so far (and those their answers start); returns how many.
  size_t answer_all();

  double charged() const { return charged_; }
  size_t jobs() const { return jobs_.size(); }

 private:
  struct Job {
    int64_t finish_ms = 0;
    double render_s = 0;
    double cost = 0;
    bool charged = false;
  };
  HttpResponse answer(const HttpRequest& request);
  HttpResponse submit(const HttpRequest& request);
  HttpResponse job_answer(const std::string& id, bool full);
  double balance_left() const;

  const RenderModel& model_;
  const CostModel& costs_;
  std::optional<double> balance_;
  ClockMs now_ms_;
  std::mt19937_64 rng_;
  std::deque<std::pair<HttpRequest, HttpCallback>> calls_;
  std::map<std::string, Job> jobs_;
  double charged_ = 0;
  int uploads_ = 0;
};

}  // namespace wb
