// The engine's event stream: what happened, for whoever listens (the daemon's
// log of limits, later metrics, notifications, an HTML report). Sinks are
// called synchronously, in the order they subscribed, after the change is
// stored; a sink that throws is logged and does not stop the engine or the
// sinks after it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "jobs/shot.h"

namespace wb {

struct Event {
  enum class Kind {
    shot_changed,    // key: "batch/shot"; from -> to; reason
    batch_finished,  // key: the batch; its report is written
    request_made,    // endpoint: submit, status, result, upload, credits, download; http_status (0: none)
    limit_hit,       // limit: what stopped submits ("rate", "requests", "in_flight", ...); reason
    job_completed,   // key: "batch/shot"; its result read: resolution, render_seconds and queue_seconds
                     // (the result metrics' inference_time and queue_time), credits newly spent (0: none)
    balance_read,    // credits: the balance just read (a balance check, or a result's remaining_credits)
    shot_stuck,      // key: "batch/shot" in flight far beyond its render time (jobs/engine/stuck.h), once per
                     // take; reason; render_seconds: how long it has been in flight; queue_seconds: the limit
  };
  Kind kind = Kind::shot_changed;
  std::string key;
  ShotState from = ShotState::pending;
  ShotState to = ShotState::pending;
  std::string reason;
  std::string endpoint;
  long http_status = 0;
  std::string limit;
  std::string resolution;
  std::optional<double> render_seconds;
  std::optional<double> queue_seconds;
  double credits = 0;

  static Event shot(std::string key, ShotState from, ShotState to, std::string reason) {
    Event e;
    e.kind = Kind::shot_changed;
    e.key = std::move(key);
    e.from = from;
    e.to = to;
    e.reason = std::move(reason);
    return e;
  }
  static Event batch(std::string name) {
    Event e;
    e.kind = Kind::batch_finished;
    e.key = std::move(name);
    return e;
  }
  static Event request(std::string key, std::string endpoint, long http_status) {
    Event e;
    e.kind = Kind::request_made;
    e.key = std::move(key);
    e.endpoint = std::move(endpoint);
    e.http_status = http_status;
    return e;
  }
  static Event completed(std::string key, std::string resolution, std::optional<double> render_seconds,
                         std::optional<double> queue_seconds, double credits_spent) {
    Event e;
    e.kind = Kind::job_completed;
    e.key = std::move(key);
    e.resolution = std::move(resolution);
    e.render_seconds = render_seconds;
    e.queue_seconds = queue_seconds;
    e.credits = credits_spent;
    return e;
  }
  static Event balance(double credits) {
    Event e;
    e.kind = Kind::balance_read;
    e.credits = credits;
    return e;
  }
  static Event stuck(std::string key, std::string reason, double in_flight_seconds, double limit_seconds) {
    Event e;
    e.kind = Kind::shot_stuck;
    e.key = std::move(key);
    e.to = ShotState::in_flight;
    e.reason = std::move(reason);
    e.render_seconds = in_flight_seconds;
    e.queue_seconds = limit_seconds;
    return e;
  }
  static Event limit_of(std::string limit, std::string reason) {
    Event e;
    e.kind = Kind::limit_hit;
    e.limit = std::move(limit);
    e.reason = std::move(reason);
    return e;
  }
};

const char* to_string(Event::Kind kind);

class EventBus {
 public:
  using Sink = std::function<void(const Event&)>;
  void subscribe(Sink sink) { sinks_.push_back(std::move(sink)); }
  void emit(const Event& event) const;

 private:
  std::vector<Sink> sinks_;
};

}  // namespace wb
