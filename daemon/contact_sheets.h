// The contact sheets' writer, a sink of the engine's event stream: a shot that
// changes marks its batch's sheet stale; stale sheets are written again at
// most every contact_sheet.interval_seconds, a finished batch's at once, and
// <output_root>/index.html with them. A running batch's cards are kept between
// writes: the store tells which records were written since (Store::on_record_written)
// and only those are read and made again; every record is read at the first write,
// after any change of the batch record (a revision) and at least every ten minutes;
// a finished batch's page is made from all its records and its cards let go.
// Rewrites of running batches whose sheet takes more than 10 ms of CPU take at
// most a twentieth of the daemon's CPU time, or wait until the sheet is ten
// minutes old: their cost follows the work done, not the hours. Posters (<shot>.jpg, ffmpeg) are taken
// once per DONE video; a kept card looks again for a missing poster at each write,
// and for a shown one 256 cards a write. Pages: jobs/contact_sheet.h. Every file goes through a
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
  // Listens to the store's writes (Store::on_record_written) while it lives.
  ContactSheets(const Config& config, Store& store, CpuClock cpu = process_cpu_time);
  ~ContactSheets();
  ContactSheets(const ContactSheets&) = delete;
  ContactSheets& operator=(const ContactSheets&) = delete;
  // The CPU time this process has used so far; this thread.
  static std::chrono::nanoseconds process_cpu_time();
  static std::chrono::nanoseconds thread_cpu_time();
  // For tests: runs inside each batch sheet's write (a slow disk).
  std::function<void()> during_write;
  // Marks every unfinished batch's sheet (and the index) stale: at start.
  void start();
  void on_event(const Event& event);
  // A record was written (Store::on_record_written): a shot's card is made again at
  // its batch's next write; a batch record's change drops the batch's cards.
  void on_record_written(const std::string& key);
  // Writes what is due at `now`. Returns how soon it wants the loop back: at once
  // while the index of a long history is still being counted, else a second.
  Millis tick(std::chrono::steady_clock::time_point now);
  // Writes one batch's sheet now (`now` dates its cards' full reads). Throws wb::Error.
  void write_batch(const std::string& batch,
                   std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
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
  Store& store_;
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
  // A running batch's cards as of its last write, by shot id (the store's order), the
  // ids whose records were written since, and when every record was last read.
  // DONE shots whose card has no poster yet are looked at again at each write; those
  // with one, a slice at each write (a poster removed or replaced leaves the page).
  struct Cards {
    std::map<std::string, SheetCard> by_id;
    std::set<std::string> changed;
    std::set<std::string> posterless, postered;
    std::string next_poster_look;  // where the next slice of `postered` starts
    std::chrono::steady_clock::time_point read_all_at;
  };
  std::map<std::string, Cards> cards_;
  enum class Poster { none, missing, shown };  // not DONE; DONE without its poster; with it
  SheetCard card_of(const Shot& shot, const std::string& dir, Poster& poster) const;
  static void note_poster(Cards& cards, const std::string& id, Poster poster);
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
