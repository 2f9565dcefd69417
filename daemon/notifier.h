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
//   when the hook has a secret. Each delivery is kept in the store
//   (meta/notify_outbox) from the event until a 2xx, so it survives restarts;
//   retried with backoff (5 s doubling, at most 1 h apart) for 24 h, then
//   dropped with an error. Sent through the daemon's transport: the loop
//   never waits on it.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "jobs/engine/events.h"
#include "jobs/http.h"
#include "jobs/store.h"
#include "jobs/subprocess.h"

namespace wb {

// hex HMAC-SHA256 of `body` with `secret`.
std::string hmac_sha256_hex(const std::string& secret, const std::string& body);

class Notifier {
 public:
  using WallMs = std::function<int64_t()>;
  Notifier(const Config& config, Store& store, Transport& transport, WallMs wall_ms);
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Reads the deliveries a previous run left in the store.
  void load();
  void on_event(const Event& event);
  // Starts due deliveries and moves running commands along; never blocks.
  void tick();

  size_t outbox_size() const { return outbox_.size(); }
  size_t commands_running() const { return commands_.size(); }
  // The wall time (ms) of the next attempt of a delivery not on the wire;
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
    bool on_wire = false;
  };
  void enqueue(const std::string& event, const std::string& json_body, const std::string& text);
  void send(Delivery& d);
  void save() const;
  // `event`: batch_finished (`state` success | failure) or shot_stuck (`state` stuck).
  void run_command(const std::string& batch, const std::string& summary, const std::string& state,
                   const std::string& event);
  void on_stuck(const Event& e);

  const Config& config_;
  Store& store_;
  Transport& transport_;
  WallMs wall_ms_;
  std::vector<Delivery> outbox_;
  uint64_t next_id_ = 1;
  bool credits_low_ = false;
  struct Running {
    std::string batch;
    std::unique_ptr<Child> child;
  };
  std::list<Running> commands_;
};

}  // namespace wb
