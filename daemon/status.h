// `wanbatch status`: what a person sees at a glance, computed from a snapshot of
// the store (read-only) and the running daemon's answer, then shown as text lines
// or JSON. Everything here is pure: no clock, no I/O, no terminal; the command
// around it (daemon/status_cmd.cpp) reads the store, asks the daemon, and redraws.
//
// Per batch: progress (ended shots / shots), credits spent (the shots' known costs)
// and the estimate for the rest (the cost model, for unended shots whose cost is
// not known yet), the batch budget, an ETA, and why waiting shots wait.
//
// The ETA comes from the learned render times (meta/render_model, read with
// RenderModel, the planner's own model): a job at the provider takes its class's
// expected remaining time given how long it has run (RenderDist::mean_residual);
// pending shots are handed, in the daemon's submit order (priority, batch age,
// batch, index), to the earliest free of limits.max_in_flight slots, no faster
// than the submit rate, each taking its class's mean render time: waves. A shot
// fetching or downloading counts as ending now. There is no ETA for a batch that
// has nothing left to do, nor while it cannot move: daemon not running, submits
// paused, or the batch budget not covering the estimate for the rest.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "jobs/credits.h"
#include "jobs/engine/render_model.h"
#include "jobs/engine/spend.h"
#include "jobs/settings.h"
#include "jobs/store.h"

namespace wb {

// What the command read: the store's batches and shots and its small records,
// and the daemon's live figures when it answered.
struct StatusSnapshot {
  std::vector<std::pair<BatchRecord, std::vector<Shot>>> batches;
  std::string submit_wait;    // meta/submit_wait
  std::string render_model;   // meta/render_model (JSON text, may be empty)
  std::string cost_model;     // meta/cost_model (JSON text, may be empty)
  bool daemon_running = false;
  // When not running: "" (no daemon: no socket, or refused), or why a daemon that is
  // there did not answer ("busy: not answering in 3 s").
  std::string daemon_silent;
  bool paused = false;
  int max_in_flight = 8;             // the daemon's live figure, else the config's
  double submits_per_minute = 20;    // the daemon's live rate (lower after 429s), else the config's
  int64_t now_ms = 0;                // wall clock, epoch ms
};

// One batch, summarized.
struct BatchStatus {
  std::string batch;
  bool finished = false;
  int priority = 0;
  int shots = 0;
  std::map<std::string, int> states;  // by state name, as count_states
  // The bar's four parts: DONE; FAILED, REJECTED, HELD or CANCELLED; at the
  // provider or on the way back (SUBMITTING..DOWNLOADING); PENDING.
  int done = 0, failed_or_held = 0, in_flight = 0, pending = 0;
  int stuck = 0;        // of in_flight: far beyond its render time (jobs/engine/stuck.h)
  int takes_queued = 0;  // shots whose next take (a revision) waits for the take on the provider
  double progress = 0;  // ended / shots, 0..1
  MicroCredits spent = 0;
  MicroCredits remaining_estimate = 0;
  std::optional<double> budget;
  std::optional<int64_t> eta_ms;        // wall clock, epoch ms
  std::string no_eta;                   // why there is none, when there is work left
  std::map<std::string, int> waiting;   // reason -> shots
  struct Attention {                    // a shot that needs a person
    std::string id, state, reason;
  };
  std::vector<Attention> attention;     // HELD, FAILED, REJECTED, stuck, in manifest order
};

struct StatusView {
  std::vector<BatchStatus> batches;
  std::string submit_wait;
  bool daemon_running = false, paused = false;
  std::string daemon_silent;  // StatusSnapshot::daemon_silent
  int max_in_flight = 0;
  int at_provider = 0;  // every batch's shots counted against max_in_flight
  double submits_per_minute = 0;
  int64_t now_ms = 0;
};

// Summarizes every batch. `pricing` and `prior_render_seconds` as the daemon's config says.
StatusView summarize(const StatusSnapshot& snap, const PricingConfig& pricing, double prior_render_seconds);

// The ETA arithmetic alone (see the file comment), for summarize() and tests.
struct EtaJob {
  std::string batch;
  RenderClass cls;
  ShotState state = ShotState::pending;
  double elapsed_s = 0;  // at the provider: since submitted
  // A revision's next take queued behind this take (Shot::next_take): it renders
  // in the same slot once this take ends.
  std::optional<RenderClass> then{};
};
// `jobs` in submit order; returns each batch's expected end, seconds from now.
std::map<std::string, double> expected_ends(const std::vector<EtaJob>& jobs, const RenderModel& model,
                                            int max_in_flight, double submits_per_minute);

// One shot of `status BATCH`.
struct ShotRow {
  std::string id, state, reason, request_id;
  int64_t age_ms = 0;  // since submitted; not submitted yet: since its batch arrived
  int take = 1;        // which render of the shot this is (jobs/revision.h)
  std::vector<std::string> changes;  // what changed since the previous take
  bool removed = false;              // it left the manifest in a later revision
  bool stuck = false;  // in flight far beyond its render time
  int queued_take = 0;  // a revision's next take queued behind this one (its number), 0 when none
};
std::vector<ShotRow> shot_rows(const BatchRecord& batch, const std::vector<Shot>& shots, int64_t now_ms);

struct TextStyle {
  bool colour = false;  // ANSI colours (a terminal, NO_COLOR unset)
  int width = 0;        // truncate lines to this many columns (0: never)
};

// "[####!!>>>......]": `width` cells shared out by the four parts, each nonzero
// part at least one cell.
std::string progress_bar(const BatchStatus& b, int width, bool colour);
// "3m", "2h05m", "1d04h".
std::string short_duration(int64_t ms);

// The overview: one line per batch, then for each, its waiting reasons and the
// shots that need a person (at most `attention_lines` each), then the submit
// wait and the daemon line.
std::string overview_text(const StatusView& v, const TextStyle& style, size_t attention_lines = 10);
// One batch: its line, then a table of its shots.
std::string batch_text(const StatusView& v, const BatchStatus& b, const std::vector<ShotRow>& rows,
                       const TextStyle& style);

nlohmann::json batch_json(const BatchStatus& b);
nlohmann::json overview_json(const StatusView& v);
nlohmann::json shot_rows_json(const std::vector<ShotRow>& rows);

}  // namespace wb
