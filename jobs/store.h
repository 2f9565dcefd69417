// The single source of truth: RocksDB in the state directory. Key spaces (by
// prefix, in one column family so a WriteBatch spans them atomically):
//   meta/schema            schema version
//   b/<batch>              batch record (JSON)
//   s/<batch>/<shot>       shot record (JSON, see shot.h)
//   r/<request_id>         "<batch>/<shot>"
//   a/<sha256>             uploaded asset URL (JSON)
//   l/<20-digit seq>       the submit ledger: every POST attempt and its outcome
//   q/<key>@<ms>           the raw bytes of a record that could not be read
//   u/<batch>/<shot>       index: the shot is unfinished (kept by every shot write)
//   ub/<batch>             index: the batch is unfinished (kept by every batch write)
//   d/<YYYY-MM-DD>         micro-credits spent that local day (an aggregate)
//   n/<20-digit id>        a webhook delivery not yet made (daemon/notifier)
//   meta/cost_model, meta/render_model   what was learned, small aggregates
// The indexes and aggregates let a daemon start read unfinished work only,
// however much finished history the store holds; a store from before them is
// indexed once, at its first read-write open (meta/index_version).
// Writes that matter for money (SUBMITTING, request_id, ledger) are synced, and
// each ledger entry is first appended to the submit journal beside the store
// (jobs/journal.h), an independent record checked against the store at open.
#pragma once

#include <chrono>
#include <map>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "jobs/journal.h"
#include "jobs/shot.h"

namespace rocksdb {
class DB;
class WriteBatch;
struct WriteOptions;
}

namespace wb {

struct BatchRecord {
  std::string name;
  int priority = 0;
  std::optional<double> budget_credits;
  std::string manifest_name;  // the file name it arrived under
  std::string manifest_path;  // where the file sits while the batch runs
  std::string sha256;
  std::string base_dir;
  int64_t created_ms = 0;
  int shot_count = 0;
  bool finished = false;
  int64_t finished_ms = 0;
  bool damaged = false;  // its stored record was unreadable; this is a stand-in
  int revision = 1;      // manifests taken for this batch (jobs/revision.h)
};

enum class Sync { no, yes };

// The stored shots counted by state, in all and per batch (with the batch's
// record and the credits its shots spent), as they were when the census was made
// (a store snapshot), read a slice at a time: a daemon counts a long history
// without stalling its loop, and adds the changes it sees from that moment on.
// Unreadable records are not counted. Must not outlive its Store.
class ShotCensus {
 public:
  struct Batch {
    BatchRecord record;                      // as of the snapshot
    std::map<ShotState, int64_t> states;     // its shot records by state
    int64_t spent_micro = 0;                 // their costs (earlier takes too), micro-credits
  };
  ~ShotCensus();
  ShotCensus(const ShotCensus&) = delete;
  ShotCensus& operator=(const ShotCensus&) = delete;
  // Reads up to `records` more records (batch records first, then shots), and
  // none past `until`; true once every one is read. A slice is the loop's to
  // give: a daemon gives a few milliseconds a turn, whatever the disk's speed.
  bool step(size_t records,
            std::chrono::steady_clock::time_point until = std::chrono::steady_clock::time_point::max());
  const std::map<ShotState, int64_t>& counts() const { return counts_; }
  // Every batch record of the snapshot, with its shots counted (complete once step is true).
  const std::map<std::string, Batch>& batches() const { return batches_; }

 private:
  friend class Store;
  struct Scan;
  explicit ShotCensus(std::unique_ptr<Scan> scan);
  std::unique_ptr<Scan> scan_;
  std::map<ShotState, int64_t> counts_;
  std::map<std::string, Batch> batches_;
  bool done_ = false;
};

class Store {
 public:
  static constexpr int kSchemaVersion = 1;
  enum class Mode { read_write, read_only };

  // Opens (creating when read_write) the database under `dir`. Throws wb::Error.
  // read_write also: recovers from a damaged write-ahead log to its last
  // consistent point, sets unreadable records aside (HELD stand-ins, raw bytes
  // under q/), and checks every submit in the journal `dir`/../submits.journal
  // against the store, restoring or HOLDing what the store forgot.
  static std::unique_ptr<Store> open(const std::string& dir, Mode mode);

  // What open() had to repair, one line each, for the log and for tests.
  const std::vector<std::string>& repairs() const { return repairs_; }

  // Small daemon-wide settings that must survive a restart (e.g. "paused").
  std::optional<std::string> meta(const std::string& name) const;
  void put_meta(const std::string& name, const std::string& value);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // A new batch and all its shots in one synced write.
  void add_batch(const BatchRecord& batch, const std::vector<Shot>& shots);
  void put_batch(const BatchRecord& batch);
  std::optional<BatchRecord> batch(const std::string& name) const;
  std::vector<BatchRecord> batches() const;
  // Unfinished batches and shots only (the u/ and ub/ indexes).
  std::vector<BatchRecord> unfinished_batches() const;
  std::vector<Shot> unfinished_shots() const;

  void put_shot(const Shot& shot, Sync sync);
  // The shot, its request_id index entry and a ledger entry, in one synced write.
  void put_shot_and_ledger(const Shot& shot, const nlohmann::json& ledger_entry);
  // The shot with its newly known cost, in one synced write with the day's
  // spend aggregate (+ `cost_micro` on local day `day`) and the cost model.
  void put_shot_spent(const Shot& shot, const std::string& day, int64_t cost_micro,
                      const std::string& cost_model_json);
  // Micro-credits spent on a local day ("YYYY-MM-DD"), from the aggregate.
  int64_t spent_on(const std::string& day) const;
  std::vector<Shot> shots(const std::string& batch) const;
  // The batch's shots one at a time, in the order shots() gives them, without
  // holding them all (nor filling the block cache with a big batch's records).
  void each_shot(const std::string& batch, const std::function<void(const Shot&)>& visit) const;
  std::optional<Shot> shot(const std::string& batch, const std::string& id) const;
  // A revision (jobs/revision.h): the batch record and every shot it changes
  // or adds, in one synced write (their index entries follow their states).
  void put_revision(const BatchRecord& batch, const std::vector<Shot>& shots);
  std::vector<Shot> all_shots() const;
  // A census of the shots by state as of now (ShotCensus above).
  std::unique_ptr<ShotCensus> census() const;
  std::optional<std::string> shot_by_request(const std::string& request_id) const;

  std::optional<std::string> asset_url(const std::string& sha256) const;
  void put_asset(const std::string& sha256, const std::string& url);

  // Webhook deliveries not yet made (daemon/notifier), one key each, so an
  // event or an attempt writes only its own: puts and erases in one write, not
  // synced (the WAL survives a crash of the process). Listed in id order.
  void update_notifications(const std::vector<std::pair<uint64_t, std::string>>& puts,
                            const std::vector<uint64_t>& erases);
  std::vector<std::pair<uint64_t, std::string>> notifications() const;

  // Told the key of every shot ("s/<batch>/<id>") and batch ("b/<name>") record
  // written, once the write is made: a reader that keeps what it read (the
  // contact sheets' cards, daemon/contact_sheets.h) knows what changed since.
  // One listener; nullptr for none.
  void on_record_written(std::function<void(const std::string& key)> tell) { record_written_ = std::move(tell); }

  void append_ledger(const nlohmann::json& entry);
  std::vector<nlohmann::json> ledger() const;
  // The ledger newest first, while `more` says so (a long ledger costs only what is read).
  void ledger_backwards(const std::function<bool(const nlohmann::json&)>& more) const;

 private:
  Store() = default;
  // Every shot and batch record when `all`, else the unfinished ones (the indexes).
  void set_aside_unreadable(bool all);
  // Builds the u/, ub/, d/ indexes and the cost model from every record, once.
  void build_indexes();
  // One atomic write, with the Resume() retry after a failed one (see write()).
  void commit(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch& batch);
  void reconcile_with_journal(bool store_damaged, const SubmitJournal::Contents& journal);
  void put_raw(const std::vector<std::pair<std::string, std::string>>& puts);
  void compact_journal();
  // Allocates the next ledger key and appends `entry` (with its sequence) to the
  // journal, fsynced; the caller then writes the entry under that key.
  std::string journal_then_key(const nlohmann::json& entry);
  static constexpr int kJournalCompactEvery = 50000;
  // Writes atomically; a put of a shot or batch record also puts or deletes
  // its unfinished-index entry, so no caller can leave the index behind.
  // `shot`, when given, is the shot one of the puts holds (its index entry
  // follows from it without reading the record back).
  void write(const std::vector<std::pair<std::string, std::string>>& puts, Sync sync, const Shot* shot = nullptr);
  std::vector<std::string> scan(const std::string& prefix) const;
  std::string ledger_key();

  std::function<void(const std::string& key)> record_written_;
  std::unique_ptr<rocksdb::DB> db_;
  std::unique_ptr<SubmitJournal> journal_;  // read_write only
  uint64_t ledger_seq_ = 0;
  std::vector<std::string> repairs_;
  int journal_entries_ = 0;
};

}  // namespace wb
