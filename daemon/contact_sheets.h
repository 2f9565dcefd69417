// The contact sheets' writer, a sink of the engine's event stream: a shot that
// changes marks its batch's sheet stale; stale sheets are written again at
// most every contact_sheet.interval_seconds, a finished batch's at once, and
// <output_root>/index.html with them. A running batch's sheet is read from all
// its records (a 10,000-shot sheet: about 0.3 s), so the rewrites of running
// batches whose sheet takes more than 10 ms of CPU take at most a twentieth of the
// daemon's CPU time, or wait until the sheet is ten minutes old: their cost
// follows the work done, not the hours. Posters (<shot>.jpg, ffmpeg) are taken
// once per DONE video. Pages: jobs/contact_sheet.h. Every file goes through a
// temporary name and a rename; a failure is logged and tried again later.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "config/config.h"
#include "jobs/contact_sheet.h"
#include "jobs/engine/events.h"
#include "jobs/shot.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

// `wanbatch --config <path> retry [--yes] BATCH/SHOT` for a FAILED, REJECTED
// or HELD shot ("" otherwise): --yes only when it needs a new billed job.
std::string retry_command(const Shot& shot, const std::string& config_path);

class ContactSheets {
 public:
  // `cpu` answers the CPU time the daemon has used (all its threads) so far.
  using CpuClock = std::function<std::chrono::nanoseconds()>;
  ContactSheets(const Config& config, const Store& store, CpuClock cpu = process_cpu_time)
      : config_(config), store_(store), cpu_(std::move(cpu)) {}
  // The CPU time this process has used so far; this thread.
  static std::chrono::nanoseconds process_cpu_time();
  static std::chrono::nanoseconds thread_cpu_time();
  // For tests: runs inside each batch sheet's write (a slow disk).
  std::function<void()> during_write;
  // Marks every unfinished batch's sheet (and the index) stale: at start.
  void start();
  void on_event(const Event& event);
  // Writes what is due at `now`. Returns how soon it wants the loop back: at once
  // while the index of a long history is still being counted, else a second.
  Millis tick(std::chrono::steady_clock::time_point now);
  // Writes one batch's sheet now. Throws wb::Error.
  void write_batch(const std::string& batch);
  // Writes <output_root>/index.html once every batch's line is counted. The
  // lines are counted once, from a census of the store made at start(), at most
  // about `records` records and none past `until` per call (a store with 100,000
  // finished shots must not stall the loop at start; the events since the census
  // are added to it); a batch that finished, or was made or grew since, is counted
  // from its records. Returns false while lines are still missing. Throws wb::Error.
  bool write_index(size_t records = SIZE_MAX,
                   std::chrono::steady_clock::time_point until = std::chrono::steady_clock::time_point::max());

 private:
  const Config& config_;
  const Store& store_;
  std::set<std::string> stale_, finished_;
  bool index_stale_ = false;
  bool index_counting_ = false;  // the index waits for finished batches still to be counted
  std::chrono::steady_clock::time_point last_write_{};
  CpuClock cpu_;
  // CPU time spent writing dear sheets, and each running batch's last write: when, and
  // the CPU time it took.
  std::chrono::steady_clock::duration spent_{};
  struct Written {
    std::chrono::steady_clock::time_point at;
    std::chrono::steady_clock::duration took;
  };
  std::map<std::string, Written> written_;
  // A running batch's sheet may be written again now: within the share, or old enough.
  bool may_rewrite(const std::string& batch, std::chrono::steady_clock::time_point now) const;

  // The index's line of each batch: counted from its records once, then followed by
  // the events (a finished batch is counted once more, exactly).
  std::map<std::string, BatchLine> lines_;
  // While the census of start() runs: the changes seen since it was made, per batch,
  // and the batches that finished since (counted again from their records).
  std::unique_ptr<ShotCensus> census_;
  std::map<std::string, BatchLine> since_census_;
  std::set<std::string> recount_;
};

}  // namespace wb
