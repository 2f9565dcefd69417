// The shot book: every unfinished shot and batch in memory, with the indexes
// that keep a tick proportional to the work that is due, not to all shots:
// - a due-time queue of shots being followed (IN_FLIGHT, FETCHING, DOWNLOADING);
// - the PENDING shots in submit order (priority, then batch age, batch, index);
// - counts per state, per batch, and of the shots holding a slot.
// Shot fields that the indexes depend on (state, due_ms) change only through
// set_state() and set_due(); a shot with a request on the wire is busy and is
// never handed out again until clear_busy(). Pure bookkeeping: no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <queue>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "jobs/shot.h"
#include "jobs/store.h"

namespace wb {

class ShotBook {
 public:
  // Batches: unfinished ones. add_batch() before adding its shots.
  void add_batch(const BatchRecord& batch) { batches_[batch.name] = batch; }
  void erase_batch(const std::string& name) { batches_.erase(name); }
  const BatchRecord* batch(const std::string& name) const;
  const std::map<std::string, BatchRecord>& batches() const { return batches_; }

  // Shots.
  Shot* find(const std::string& key);
  const Shot* find(const std::string& key) const;
  // Adds an unfinished shot (its batch must be in the book); replaces one of the same key.
  Shot& add(Shot shot);
  // Removes a shot that ended.
  void erase(const std::string& key);
  void set_state(Shot& shot, ShotState state);
  // Not before `due_ms` (monotonic); queues it when it is followed.
  void set_due(Shot& shot, int64_t due_ms);
  size_t size() const { return shots_.size(); }
  const std::map<std::string, Shot>& shots() const { return shots_; }

  // A request is on the wire for the shot; it is not handed out again until
  // clear_busy(), which queues it again at its due time.
  void set_busy(const std::string& key) { busy_.insert(key); }
  void clear_busy(const std::string& key);
  bool busy(const std::string& key) const { return busy_.count(key) != 0; }

  // The next followed shot whose due time has come and that is not busy, or
  // nullptr. Each call removes it from the queue: the caller starts its step,
  // or set_due()s it again.
  Shot* pop_due(int64_t now_ms);
  // The earliest due time in the queue (INT64_MAX when empty). May be early
  // (an entry made stale by a later set_due): a wake-up that finds nothing.
  int64_t next_due_ms() const;

  // PENDING shots in submit order: priority, then batch age, then within a batch the
  // longest render first (the prior's median for the shot's class, which orders the
  // classes as the learned times do), then manifest order. Longest first: a long shot
  // started last would finish alone, long after the others (list scheduling: the
  // makespan is at most 4/3 of the best instead of 2x).
  struct PendingKey {
    int neg_priority;
    int64_t created_ms;
    std::string batch;
    int64_t neg_work_ms;
    int index;
    bool operator<(const PendingKey& o) const {
      return std::tie(neg_priority, created_ms, batch, neg_work_ms, index) <
             std::tie(o.neg_priority, o.created_ms, o.batch, o.neg_work_ms, o.index);
    }
  };
  static PendingKey submit_order(const BatchRecord* batch, const Shot& shot);
  const std::map<PendingKey, std::string>& pending() const { return pending_; }
  // The first pending entry after every shot of `batch` at or after `from`.
  std::map<PendingKey, std::string>::const_iterator skip_batch(std::map<PendingKey, std::string>::const_iterator from) const;

  int count(ShotState state) const;
  // Shots at the provider: SUBMITTING or IN_FLIGHT (limits.max_in_flight counts these).
  int in_slot() const { return in_slot_; }
  // Unfinished shots of a batch.
  int open_in_batch(const std::string& batch) const;

 private:
  PendingKey pending_key(const Shot& shot) const { return submit_order(batch(shot.batch), shot); }
  void index(const Shot& shot, int sign);
  // Queues a followed shot at its due time, unless it is queued at that time already.
  void queue(const Shot& shot);

  std::map<std::string, BatchRecord> batches_;
  std::map<std::string, Shot> shots_;
  std::set<std::string> busy_;
  using DueEntry = std::pair<int64_t, std::string>;
  std::priority_queue<DueEntry, std::vector<DueEntry>, std::greater<>> due_;
  // Per key, the due time of its live queue entry: the others are stale, and
  // a shot is handed out once per time it was queued.
  std::map<std::string, int64_t> queued_;
  std::map<PendingKey, std::string> pending_;
  std::map<ShotState, int> counts_;
  std::map<std::string, int> open_;
  int in_slot_ = 0;
};

// Followed: a step that polls, fetches or downloads on its due time.
bool is_followed(ShotState s);

}  // namespace wb
