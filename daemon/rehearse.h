// `wanbatch rehearse FILE... [--at HH:MM] [--json]`: the batch played through
// the real scheduler (jobs/engine/scheduler.h) on a simulated clock against
// the rehearsal's provider (daemon/rehearsal_provider.h): the learned render
// times and costs (read from the state store, read-only), the configured
// limits, window and budgets, and the daemon's last balance reading (asked
// over the control socket; unknown when no daemon runs). It spends nothing
// and sends nothing: the scheduler's transport is the in-process provider,
// its store and output folder a temporary folder ($TMPDIR when set, else
// /dev/shm, else /tmp) removed at the end, also
// when SIGINT or SIGTERM stops it (exit 130 or 143).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "jobs/util.h"

namespace wb {

struct RehearseOptions {
  std::string at;       // "HH:MM" local: the start (its next occurrence); "" now
  bool json = false;
  // Where the learned models and the balance come from; tests set them.
  bool ask_daemon = true;                // the balance from the running daemon
  std::optional<double> balance;         // overrides the daemon's
  double max_simulated_days = 7;         // gives up (not finished) past this
};

struct RehearsalWait {
  std::string reason;     // the wait as the engine words it
  std::string kind;       // window, budget, credits, rate, requests, in_flight, paused, other
  double seconds = 0;     // simulated time spent waiting on it
  int64_t first_ms = 0;   // wall, epoch ms: first seen
};

// A manifest whose batch the state store has: played as its next revision
// (only the shots `wanbatch plan` says render are submitted).
struct RehearsalRevision {
  std::string batch;
  int revision = 1;    // the revision it would be (the stored one when a no-op)
  bool no_op = false;  // nothing renders, is updated or removed
  int renders = 0;     // shots that render (a new take, or the first)
  int shots = 0;       // shots in the manifest
};

struct RehearsalResult {
  int64_t start_ms = 0;         // the rehearsal's start (wall, epoch ms)
  int64_t first_submit_ms = 0;  // 0: nothing was submitted
  int64_t finish_ms = 0;        // the last batch's end; 0: not finished
  bool finished = false;
  bool stalled = false;         // stopped early: nothing at work, and every wait is on money nothing adds
  double makespan_s = 0;        // first submit to the last batch's end
  double credits = 0;           // charged by the provider
  std::map<std::string, int> requests;  // API requests by endpoint (submit, status, result, upload, credits)
  int api_requests = 0;         // their sum
  int downloads = 0;
  int shots = 0;
  std::map<std::string, int> states;    // shots by end state
  std::vector<RehearsalWait> waits;     // in order of first appearance
  std::optional<double> balance;        // what the rehearsal started with (nullopt: unknown)
  int learned_samples = 0;              // render times learned from the store (0: the prior alone)
  double wall_seconds = 0;              // how long the rehearsal itself took
  std::vector<RehearsalRevision> revisions;  // the manifests that revise a stored batch
};

// Why `at` is not a valid --at (HH:MM, 00:00..23:59), "" when it is.
std::string rehearse_at_problem(const std::string& at);

// SIGINT or SIGTERM arrived while a rehearsal ran: it stopped, its temporary
// folder removed. `wanbatch rehearse` then exits 128 + signal (130, 143).
struct RehearsalInterrupted : Error {
  explicit RehearsalInterrupted(int sig);
  int signal;
};

// Plays the manifests. Throws wb::Error (a manifest that does not load, a
// state store that cannot be read; RehearsalInterrupted).
RehearsalResult rehearse(const Config& config, const std::vector<std::string>& files, const RehearseOptions& options);

std::string rehearsal_text(const RehearsalResult& r);
std::string rehearsal_json(const RehearsalResult& r);

// The CLI command: 0 when the rehearsal finished, 1 when it would not finish
// (or a manifest is invalid), as text or --json.
int cmd_rehearse(const Config& config, const std::vector<std::string>& files, const RehearseOptions& options,
                 std::ostream& out, std::ostream& err);

}  // namespace wb
