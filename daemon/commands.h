// The CLI subcommands other than `daemon`. Each returns the process exit code
// and writes its output to the given streams.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "config/config.h"

namespace wb {

// Prints every problem as file:line: field: message. 0 when all are valid, 1 if not.
int cmd_validate(const Config& config, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err);

// Validates all files, then drops each into spool.incoming atomically (with
// base_dir recorded when the manifest has none). Submits nothing if any is invalid.
int cmd_submit(const Config& config, const std::vector<std::string>& files, std::ostream& out,
               std::ostream& err);

// Batches with shot counts by state, read from the state store (works while the
// daemon runs).
int cmd_status(const Config& config, bool json, std::ostream& out, std::ostream& err);

// pause, resume, retry TARGET, cancel TARGET: sent to the running daemon.
// `yes`: retry may resubmit (a new billed job); without it, only free resumes.
// `wanbatch adopt BATCH/SHOT REQUEST_ID`, through the control socket.
int cmd_adopt(const Config& config, const std::string& target, const std::string& request_id, std::ostream& out,
              std::ostream& err);
int cmd_control(const Config& config, const std::string& command, const std::string& target,
                std::ostream& out, std::ostream& err, bool yes = false);

// What the manifests will cost by the estimate, and whether the balance and the
// budgets cover it. 0 when covered, 1 when something does not cover it.
int cmd_estimate(const Config& config, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err);

}  // namespace wb
