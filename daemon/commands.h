// The CLI subcommands other than `daemon`. Each returns the process exit code
// and writes its output to the given streams.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "config/config.h"
#include "jobs/manifest.h"

namespace wb {

// The manifest limits of a config (validate, submit, plan, rehearse, the daemon).
ManifestRules manifest_rules(const Config& config);

// Prints every problem as file:line: field: message. 0 when all are valid, 1 if not.
// `config_found` false: there is no daemon config (a workstation), so `config`
// holds the defaults and local media are checked for existence (and as media)
// but not against input_roots; the output says which of the two was done.
int cmd_validate(const Config& config, bool config_found, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err);

// Validates all files, then drops each into spool.incoming atomically (with
// base_dir recorded when the manifest has none). Submits nothing if any is invalid.
int cmd_submit(const Config& config, const std::vector<std::string>& files, std::ostream& out,
               std::ostream& err);

struct StatusOptions {
  bool json = false;
  std::string batch;        // list this batch's shots ("" : every batch, one line each)
  bool watch = false;       // redraw every `interval_seconds` until SIGINT or SIGTERM
  double interval_seconds = 2;
  bool terminal = false;    // `out` is a terminal: redraw in place, fit its width
  bool colour = false;      // ANSI colours (a terminal, NO_COLOR unset, TERM not dumb)
  int width = 0;            // the terminal's columns (0: unknown)
  // For stdout: a terminal or not, colour unless NO_COLOR is set, the width.
  static StatusOptions for_stdout();
};

// Batches at a glance (daemon/status.h), read from the state store read-only
// (works while the daemon runs) and the daemon's live figures when it runs.
// 0, or 1 when the store cannot be read or the batch is unknown.
int cmd_status(const Config& config, const StatusOptions& options, std::ostream& out, std::ostream& err);

// pause, resume, retry TARGET, cancel TARGET: sent to the running daemon.
// `yes`: retry may resubmit (a new billed job); without it, only free resumes.
// `abandon`: cancel also abandons a paid take on the provider (never done without it).
// Exit 0; 1 on an error; cancel: 3 when a paid take was kept running (not abandoned).
// `wanbatch adopt BATCH/SHOT REQUEST_ID`, through the control socket.
int cmd_adopt(const Config& config, const std::string& target, const std::string& request_id, std::ostream& out,
              std::ostream& err);
int cmd_control(const Config& config, const std::string& command, const std::string& target,
                std::ostream& out, std::ostream& err, bool yes = false, bool abandon = false);

// What the manifests will cost by the estimate, and whether the balance and the
// budgets cover it. 0 when covered, 1 when something does not cover it.
int cmd_estimate(const Config& config, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err);

// What each manifest would render as a revision of its batch and why (new,
// changed fields, last take failed, unchanged), with the estimated credits;
// changes nothing (the store read-only, so the daemon may run). 0, or 2 when a
// manifest does not load. daemon/plan.cpp.
int cmd_plan(const Config& config, const std::vector<std::string>& files, bool json, std::ostream& out,
             std::ostream& err);

}  // namespace wb
