// The contact sheets' writer, a sink of the engine's event stream: a shot that
// changes marks its batch's sheet stale; stale sheets are written again at
// most every contact_sheet.interval_seconds, a finished batch's at once, and
// <output_root>/index.html with them. Posters (<shot>.jpg, ffmpeg) are taken
// once per DONE video. Pages: jobs/contact_sheet.h. Every file goes through a
// temporary name and a rename; a failure is logged and tried again later.
#pragma once

#include <chrono>
#include <set>
#include <string>

#include "config/config.h"
#include "jobs/contact_sheet.h"
#include "jobs/engine/events.h"
#include "jobs/shot.h"
#include "jobs/store.h"

namespace wb {

// `wanbatch --config <path> retry [--yes] BATCH/SHOT` for a FAILED, REJECTED
// or HELD shot ("" otherwise): --yes only when it needs a new billed job.
std::string retry_command(const Shot& shot, const std::string& config_path);

class ContactSheets {
 public:
  ContactSheets(const Config& config, const Store& store) : config_(config), store_(store) {}
  // Marks every unfinished batch's sheet (and the index) stale: at start.
  void start();
  void on_event(const Event& event);
  // Writes what is due at `now`.
  void tick(std::chrono::steady_clock::time_point now);
  // Writes one batch's sheet and the index now. Throws wb::Error.
  void write_batch(const std::string& batch);
  void write_index();

 private:
  const Config& config_;
  const Store& store_;
  std::set<std::string> stale_, finished_;
  bool index_stale_ = false;
  std::chrono::steady_clock::time_point last_write_{};

  // The index's lines of finished batches, read once (a change drops one).
  std::map<std::string, BatchLine> finished_lines_;  // keys whose poster ffmpeg could not take
};

}  // namespace wb
