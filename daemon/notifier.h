// Notifications, a sink of the engine's event stream (docs/OPERATIONS.md,
// "Notifications"):
// - notify.command: run at each batch end and each shot_stuck (argv, no shell),
//   the summary JSON on its stdin, WANBATCH_EVENT (batch_finished | shot_stuck),
//   WANBATCH_BATCH and WANBATCH_STATE (success | failure | stuck) in an
//   environment built from nothing (never the API key), killed after
//   notify.command_timeout_seconds; stepped from the loop, never waited for.
// - notify.webhooks: a POST per event a hook asks for (batch_finished,
//   shot_held, shot_stuck, credits_low): the summary (json) or a Slack / Discord message,
//   signed with X-Wanbatch-Signature: sha256=<hex HMAC-SHA256 of the body>
//   when the hook has a secret. Each delivery is kept in the store under its
//   own key (n/<id>) from the event until a 2xx, so it survives restarts and
//   an event or an attempt writes one small record; at most
//   notify.max_pending are kept (past it the oldest is dropped, with a
//   warning, and counted). Sent through the daemon's transport, so the loop
//   never waits on it, and paced: one request at a time per endpoint (URL),
//   at most kStartsPerSecond starts a second over all (a burst of kBurst), and
//   an endpoint that fails waits 5 s, doubling, at most 1 h, before its next
//   delivery: an outage ends with a trickle, not a burst. A delivery not
//   made in 24 h is dropped with an error.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "jobs/credits.h"
#include "jobs/engine/events.h"
#include "jobs/engine/scheduler.h"
#include "jobs/http.h"
#include "jobs/store.h"
#include "jobs/subprocess.h"

namespace wb {

// hex HMAC-SHA256 of `body` with `secret`.
std::string hmac_sha256_hex(const std::string& secret, const std::string& body);

// What the engine keeps of an unfinished batch, for the shot_held message
// without reading the batch's shots.
struct BatchProgress {
  int shots = 0;
  int unfinished = 0;
  MicroCredits spent = 0;
};

// The engine's figures for `batch` while it is unfinished (nullopt after).
std::optional<BatchProgress> batch_progress(const Scheduler& scheduler, const std::string& batch);

class Notifier {
 public:
  using WallMs = std::function<int64_t()>;
  using ProgressFn = std::function<std::optional<BatchProgress>(const std::string& batch)>;
  static constexpr int kStartsPerSecond = 4;
  static constexpr int kBurst = 4;

  Notifier(const Config& config, Store& store, Transport& transport, WallMs wall_ms, ProgressFn progress = {});
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Reads the deliveries a previous run left in the store (also the single
  // list meta/notify_outbox of earlier versions, moved to one key each).
  void load();
  void on_event(const Event& event);
  // Starts due deliveries and moves running commands along; never blocks.
  void tick();

  size_t outbox_size() const { return outbox_.size(); }
  size_t on_the_wire() const;
  size_t commands_running() const { return commands_.size(); }
  // Deliveries dropped because the outbox was full (notify.max_pending).
  uint64_t dropped() const { return dropped_; }
  // Called with each delivery dropped for a full outbox (a metrics counter).
  std::function<void()> on_dropped;
  // The wall time (ms) at which tick() may start a delivery next;
  // INT64_MAX when none waits.
  int64_t next_attempt_ms() const;

  // The batch's summary as the command and the json webhooks get it.
  std::string summary_json(const std::string& batch, const std::string& event) const;

 private:
  struct Delivery {
    uint64_t id = 0;
    std::string url, event, format, body;
    int attempts = 0;
    int64_t first_ms = 0, next_ms = 0;
  };
  // One receiver: its deliveries in order, one on the wire at a time, its backoff.
  struct Endpoint {
    std::set<uint64_t> ids;
    int failures = 0;
    int64_t next_ms = 0;
    int64_t last_start_ms = 0;
    bool on_wire = false;
  };
  void enqueue(const std::string& event, const std::string& json_body, const std::string& text);
  void add(Delivery d);
  void remove(uint64_t id);
  bool take_token(int64_t now);
  void send(Delivery& d, int64_t now);
  void persist(const Delivery& d) const;
  // `event`: batch_finished (`state` success | failure) or shot_stuck (`state` stuck).
  void run_command(const std::string& batch, const std::string& summary, const std::string& state,
                   const std::string& event);
  void on_stuck(const Event& e);

  const Config& config_;
  Store& store_;
  Transport& transport_;
  WallMs wall_ms_;
  ProgressFn progress_;
  std::map<uint64_t, Delivery> outbox_;  // by id: oldest first
  std::map<std::string, Endpoint> endpoints_;  // by URL
  uint64_t next_id_ = 1;
  double tokens_ = kBurst;
  int64_t tokens_ms_ = 0;
  uint64_t dropped_ = 0;
  uint64_t dropped_unlogged_ = 0;
  std::optional<int64_t> drop_logged_ms_;  // the last warning of a drop
  bool credits_low_ = false;
  struct Running {
    std::string batch;
    std::unique_ptr<Child> child;
  };
  std::list<Running> commands_;
};

}  // namespace wb
