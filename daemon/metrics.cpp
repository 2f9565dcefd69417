#include "daemon/metrics.h"

// Implementation notes.
// - Every metric object is made once (label values from small fixed sets:
//   states, outcomes, endpoints, status classes, wait labels, resolutions) or
//   per unfinished batch (the progress gauge, removed when the batch ends), so
//   the series stay few however many shots pass.
// - Detection delay: how long a completed job went unseen. A status poll that
//   saw COMPLETED bounds it by the gap since the poll before, which saw it
//   unfinished. Where the result's timings say when the job ended (queue_time
//   + inference_time after our submit was answered), that moment is used,
//   clamped into the gap; otherwise half the gap. The submit answer comes a
//   little after the provider took the job, so the estimate errs short by at
//   most one submit's round trip.
// - HELD shots over every batch: a census of the store as of the start of the
//   loop, plus the HELD changes on the event stream from then on.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

namespace wb {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

constexpr Millis kSnapshotEvery{1000};
constexpr Millis kSnapshotMax{15000};
// The census's share of a loop turn while it runs: the control socket waits no longer.
constexpr auto kCensusTurn = std::chrono::milliseconds(3);

const ShotState kUnfinished[] = {ShotState::pending, ShotState::submitting, ShotState::in_flight, ShotState::fetching,
                                 ShotState::downloading};
const ShotState kEnded[] = {ShotState::done, ShotState::failed, ShotState::rejected, ShotState::cancelled,
                            ShotState::held};
const char* const kOutcomes[] = {"accepted", "not_accepted", "rejected", "held"};

bool starts(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

double seconds_between(MonoPoint from, MonoPoint to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

std::string wait_label(const std::string& reason) {
  static const std::pair<const char*, const char*> kinds[] = {
      {"waiting: submits paused", "paused"},
      {"waiting: outside the submit window", "window"},
      {"waiting: rate limited", "rate_limited"},
      {"waiting: the API key was refused", "key_refused"},
      {"waiting: reading the credit balance", "balance_read"},
      {"waiting: insufficient credits", "credits"},
      {"waiting: credits:", "credits"},
      {"waiting: in-flight cap", "in_flight"},
      {"waiting: batch budget", "batch_budget"},
      {"waiting: daily budget", "daily_budget"},
      {"waiting: request budget", "request_budget"},
      {"waiting: submit rate", "submit_rate"},
      {"waiting: cannot write the video", "output_write"},
  };
  for (const auto& [prefix, label] : kinds)
    if (starts(reason, prefix)) return label;
  if (starts(reason, "waiting: ") && reason.find("provider's queue") != std::string::npos) return "provider_queue";
  return "other";
}

std::string status_class(long http_status) {
  if (http_status < 100 || http_status > 599) return "error";
  return std::to_string(http_status / 100) + "xx";
}

EngineMetrics::EngineMetrics(MonoFn mono, NowFn wall)
    : mono_(std::move(mono)), wall_(std::move(wall)), registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  shots_ = &BuildGauge().Name("wanbatch_shots").Help("Unfinished shots by state").Register(r);
  for (ShotState s : kUnfinished) shots_->Add({{"state", to_string(s)}});
  waiting_ = &BuildGauge()
                  .Name("wanbatch_shots_waiting")
                  .Help("Unfinished shots waiting to be submitted (or to write their video), by why")
                  .Register(r);
  progress_ = &BuildGauge()
                   .Name("wanbatch_batch_last_progress_timestamp_seconds")
                   .Help("Unix time of the last state change of a shot of each unfinished batch (its start, at most)")
                   .Register(r);
  batches_ = &BuildGauge().Name("wanbatch_batches_unfinished").Help("Batches not finished").Register(r).Add({});
  stuck_ = &BuildGauge()
                .Name("wanbatch_shots_stuck")
                .Help("Jobs in flight far beyond their render time (poll.stuck_after_seconds or twice the 99th percentile)")
                .Register(r)
                .Add({});
  balance_family_ = &BuildGauge()
                         .Name("wanbatch_credit_balance")
                         .Help("The provider's credit balance at its last reading (absent until read)")
                         .Register(r);
  submits_ = &BuildCounter()
                  .Name("wanbatch_submits_total")
                  .Help("Submits answered, by outcome: accepted (a job started), not_accepted (retried later), "
                        "rejected, held (ambiguous or refused)")
                  .Register(r);
  for (const char* o : kOutcomes) submits_->Add({{"outcome", o}});
  ended_ = &BuildCounter().Name("wanbatch_shots_ended_total").Help("Shots that ended, by state").Register(r);
  for (ShotState s : kEnded) ended_->Add({{"state", to_string(s)}});
  requests_ = &BuildCounter()
                   .Name("wanbatch_api_requests_total")
                   .Help("Requests to the provider (API calls and downloads), by endpoint and status class")
                   .Register(r);
  rate_limited_ = &BuildCounter()
                       .Name("wanbatch_rate_limited_total")
                       .Help("Answers 429 (rate limited) from the provider, by endpoint")
                       .Register(r);
  limits_ = &BuildCounter()
                 .Name("wanbatch_submit_limits_total")
                 .Help("Times a limit started holding submits back, by limit")
                 .Register(r);
  spent_ = &BuildCounter()
                .Name("wanbatch_credits_spent_total")
                .Help("Credits the provider charged for results read")
                .Register(r)
                .Add({});
  notify_dropped_ = &BuildCounter()
                        .Name("wanbatch_notifications_dropped_total")
                        .Help("Webhook deliveries dropped undelivered because notify.max_pending were waiting")
                        .Register(r)
                        .Add({});
  render_ = &BuildHistogram()
                 .Name("wanbatch_render_seconds")
                 .Help("Render time of completed jobs (the result's inference_time), by resolution")
                 .Register(r);
  delay_ = &BuildHistogram()
                .Name("wanbatch_detection_delay_seconds")
                .Help("How long a completed job went unseen before a status poll found it, by resolution")
                .Register(r);
}

EngineMetrics::~EngineMetrics() = default;

void EngineMetrics::start_census(const Store& store) {
  census_ = store.census();
  held_delta_ = 0;
  census_done_ = false;
}

void EngineMetrics::on_event(const Event& e) {
  switch (e.kind) {
    case Event::Kind::shot_changed:
      on_shot(e);
      return;
    case Event::Kind::batch_finished:
      if (auto it = batch_progress_.find(e.key); it != batch_progress_.end()) {
        progress_->Remove(it->second);
        batch_progress_.erase(it);
      }
      return;
    case Event::Kind::request_made:
      requests_->Add({{"endpoint", e.endpoint}, {"status", status_class(e.http_status)}}).Increment();
      if (e.http_status == 429) rate_limited_->Add({{"endpoint", e.endpoint}}).Increment();
      if (e.endpoint == "status" && e.http_status == 200) {
        // An answer that says where the job is (the loop has not yet acted on it).
        if (auto it = polls_.find(e.key); it != polls_.end()) {
          it->second.previous = it->second.last;
          it->second.last = mono_();
        }
      }
      return;
    case Event::Kind::limit_hit:
      limits_->Add({{"limit", e.limit}}).Increment();
      return;
    case Event::Kind::job_completed:
      on_completed(e);
      return;
    case Event::Kind::balance_read:
      if (!balance_) balance_ = &balance_family_->Add({});
      balance_->Set(e.credits);
      return;
    case Event::Kind::shot_stuck:  // counted from the book (tick)
      return;
  }
}

void EngineMetrics::on_shot(const Event& e) {
  progress(e.key.substr(0, e.key.find('/')));
  if (e.from == ShotState::submitting) {
    const char* outcome = e.to == ShotState::in_flight   ? "accepted"
                          : e.to == ShotState::pending   ? "not_accepted"
                          : e.to == ShotState::rejected  ? "rejected"
                          : e.to == ShotState::held      ? "held"
                                                         : nullptr;
    if (outcome) submits_->Add({{"outcome", outcome}}).Increment();
  }
  if (is_terminal(e.to) && !is_terminal(e.from)) ended_->Add({{"state", to_string(e.to)}}).Increment();
  if (census_ || census_done_) {
    held_delta_ += (e.to == ShotState::held) - (e.from == ShotState::held);
    set_held();
  }
  if (e.to == ShotState::in_flight) {
    // Its job's clock started at the submit; a job resumed by an operator's retry is not timed from it.
    polls_[e.key] = e.from == ShotState::submitting ? Poll{mono_(), std::nullopt, std::nullopt} : Poll{};
  } else if (e.from == ShotState::in_flight) {
    auto it = polls_.find(e.key);
    if (e.to == ShotState::fetching && it != polls_.end() && it->second.last) {
      const Poll& p = it->second;
      Seen s;
      if (p.previous) s.gap_s = seconds_between(*p.previous, *p.last);
      if (p.accepted) s.since_submit_s = seconds_between(*p.accepted, *p.last);
      seen_[e.key] = s;
    }
    if (it != polls_.end()) polls_.erase(it);
  }
  if (e.to != ShotState::fetching && e.to != ShotState::downloading) seen_.erase(e.key);
}

void EngineMetrics::on_completed(const Event& e) {
  if (e.credits > 0) spent_->Increment(e.credits);
  auto it = seen_.find(e.key);
  if (it == seen_.end()) return;  // a result read again, or followed since a restart: not timed
  const Seen s = it->second;
  seen_.erase(it);
  const std::string res = e.resolution.empty() ? "unknown" : e.resolution;
  if (e.render_seconds && *e.render_seconds >= 0)
    render_
        ->Add({{"resolution", res}},
              prometheus::Histogram::BucketBoundaries{15, 30, 60, 90, 120, 150, 180, 240, 300, 450, 600, 900, 1800})
        .Observe(*e.render_seconds);
  std::optional<double> delay;
  if (s.since_submit_s && e.render_seconds && e.queue_seconds) {
    delay = std::max(0.0, *s.since_submit_s - (*e.queue_seconds + *e.render_seconds));
    if (s.gap_s) delay = std::min(*delay, *s.gap_s);
  } else if (s.gap_s) {
    delay = *s.gap_s / 2;
  }
  if (delay)
    delay_
        ->Add({{"resolution", res}},
              prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600})
        .Observe(*delay);
}

void EngineMetrics::set_held() {
  if (!census_done_) return;
  if (!held_) held_ = &BuildGauge()
                           .Name("wanbatch_shots_held")
                           .Help("HELD shots in every batch, finished or not: each needs a person "
                                 "(wanbatch status; wanbatch retry or cancel)")
                           .Register(*registry_)
                           .Add({});
  held_->Set(static_cast<double>(std::max<int64_t>(0, held_counted_ + held_delta_)));
}

void EngineMetrics::progress(const std::string& batch) {
  auto it = batch_progress_.find(batch);
  if (it == batch_progress_.end())
    it = batch_progress_.emplace(batch, &progress_->Add({{"batch", batch}})).first;
  it->second->Set(static_cast<double>(to_epoch_ms(wall_())) / 1000.0);
}

Millis EngineMetrics::tick(const Scheduler& scheduler) {
  Millis next = kSnapshotEvery;
  if (census_) {
    try {
      if (census_->step(SIZE_MAX, std::chrono::steady_clock::now() + kCensusTurn)) {
        held_counted_ = census_->counts().count(ShotState::held) ? census_->counts().at(ShotState::held) : 0;
        census_.reset();
        census_done_ = true;
        set_held();
      } else {
        next = Millis(0);
      }
    } catch (const Error& e) {
      spdlog::warn("metrics: cannot count the stored shots ({}); wanbatch_shots_held is not served", e.what());
      census_.reset();
    }
  }
  const MonoPoint now = mono_();
  if (last_snapshot_ && now - *last_snapshot_ < kSnapshotEvery) return next;
  last_snapshot_ = now;
  const ShotBook& book = scheduler.book();
  for (ShotState s : kUnfinished) shots_->Add({{"state", to_string(s)}}).Set(book.count(s));
  batches_->Set(static_cast<double>(book.batches().size()));
  for (const auto& [name, b] : book.batches())
    if (!batch_progress_.count(name)) progress(name);
  for (auto it = batch_progress_.begin(); it != batch_progress_.end();) {
    if (book.batch(it->first)) {
      ++it;
      continue;
    }
    progress_->Remove(it->second);
    it = batch_progress_.erase(it);
  }
  // The walk of every unfinished shot (waits, stuck shots): once a second for up to
  // 1,000 of them, then a second more per 1,000 (at most 15 s, a usual scrape
  // interval), so that its cost follows the work done, not the hours a big batch waits.
  const Millis walk_every =
      std::clamp(Millis(static_cast<int64_t>(book.shots().size())), kSnapshotEvery, kSnapshotMax);
  if (last_walk_ && now - *last_walk_ < walk_every) return next;
  last_walk_ = now;
  std::map<std::string, int> waiting;
  const std::string& daemon_wide = scheduler.submit_wait();
  int stuck = 0;
  for (const auto& [key, shot] : book.shots()) {
    stuck += is_stuck_now(shot);
    if (shot.state == ShotState::in_flight && !polls_.count(key)) polls_[key] = Poll{};  // followed since a start
    if (starts(shot.reason, "waiting: ")) ++waiting[wait_label(shot.reason)];
    else if (shot.state == ShotState::pending && !daemon_wide.empty()) ++waiting[wait_label(daemon_wide)];
  }
  for (auto it = polls_.begin(); it != polls_.end();) {  // a poll answered after its shot was cancelled
    const Shot* shot = book.find(it->first);
    it = shot && shot->state == ShotState::in_flight ? std::next(it) : polls_.erase(it);
  }
  stuck_->Set(stuck);
  for (auto& [label, gauge] : waiting_by_label_) gauge->Set(0);
  for (const auto& [label, n] : waiting) {
    auto it = waiting_by_label_.find(label);
    if (it == waiting_by_label_.end()) it = waiting_by_label_.emplace(label, &waiting_->Add({{"reason", label}})).first;
    it->second->Set(n);
  }
  return next;
}

void EngineMetrics::notification_dropped() { notify_dropped_->Increment(); }

std::string EngineMetrics::text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

MetricsServer::MetricsServer(const std::string& listen, const std::shared_ptr<prometheus::Registry>& registry)
    : server_(std::make_unique<MetricsHttpServer>(listen, [registry] {
        return prometheus::TextSerializer().Serialize(registry->Collect());
      })) {
  url_ = "http://" + listen.substr(0, listen.rfind(':')) + ":" + std::to_string(server_->port()) + "/metrics";
}

MetricsServer::~MetricsServer() = default;

DaemonMetrics::DaemonMetrics(const std::string& listen, Scheduler& scheduler, MonoFn mono, NowFn wall)
    : scheduler_(scheduler), engine_(std::move(mono), std::move(wall)) {
  scheduler_.events().subscribe([this](const Event& e) { engine_.on_event(e); });
  if (listen.empty()) return;
  try {
    server_ = std::make_unique<MetricsServer>(listen, engine_.registry());
    spdlog::info("metrics at {}", server_->url());
  } catch (const Error& e) {
    spdlog::error("{}; the daemon runs on without its metrics endpoint", e.what());
  }
}

}  // namespace wb
