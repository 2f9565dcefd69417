// The shot state machine and its scheduling: which work is due, which requests
// to start, and what each answer changes. Single-threaded; the caller drives it
// with tick() and by running the Transport. Time comes from an injected clock
// so tests step it without sleeping.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "jobs/http.h"
#include "jobs/manifest.h"
#include "jobs/output.h"
#include "jobs/segmind.h"
#include "jobs/spend.h"
#include "jobs/throttle.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

using NowFn = std::function<TimePoint()>;
using MonoFn = std::function<MonoPoint()>;

class Scheduler {
 public:
  // `wall` is for what people read (timestamps, local days, the submit window);
  // `mono` drives every interval and due time.
  Scheduler(const Config& config, Store& store, Transport& transport, NowFn wall, MonoFn mono,
            std::string api_key);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Loads unfinished work from the store. A shot found in SUBMITTING (the daemon
  // stopped between sending a submit and recording its request_id) becomes HELD.
  void load();

  enum class Accept { added, already_added, name_taken };
  // Records a validated manifest as a batch of PENDING shots in one synced write.
  // already_added: a batch of that name from the same bytes exists (a restart
  // between recording and moving the file); name_taken: from other bytes.
  // With `held_reason`, every shot is recorded HELD with it instead (a batch the
  // state store lost, found again in spool.active: its shots may have been billed).
  Accept accept(const Manifest& manifest, const std::string& manifest_name,
                const std::string& manifest_path, const std::string& held_reason = "");

  // Starts every request that is due. Returns the time until the next due work.
  Millis tick();

  // Operator pause of submits (persisted); polls and downloads go on.
  void set_paused(bool paused);
  bool paused() const { return paused_; }

  // Operator commands on "BATCH" or "BATCH/SHOT". Each returns the ids it
  // changed and, for those it left alone, why. Throws wb::Error for an unknown target.
  struct OperatorResult {
    std::vector<std::string> changed;
    std::vector<std::string> skipped;  // "id: why"
    std::vector<std::string> plan;     // retry: "id: what is done and what it costs"
  };
  // HELD, FAILED and REJECTED shots go again. A shot HELD while following a job
  // whose record (or output file) may still be there resumes at that step, free
  // of charge; the others need a new submit, a new billed job, done only with
  // `allow_resubmit` and otherwise listed with their estimated cost.
  enum class Resubmit { no, yes };
  OperatorResult retry(const std::string& target, Resubmit allow_resubmit = Resubmit::yes);
  // Shots not yet ended become CANCELLED; a submit on the wire cannot be cancelled.
  OperatorResult cancel(const std::string& target);

  // Stop starting submits (shutdown); other work continues.
  void stop_submitting() { stopping_ = true; }
  size_t submits_on_the_wire() const { return submits_on_wire_; }
  size_t active_shots() const { return shots_.size(); }
  size_t unfinished_batches() const { return batches_.size(); }

  // Runs when a batch has ended; the argument is the batch record (finished).
  std::function<void(const BatchRecord&)> on_batch_finished;

 private:
  // True when every local media field has its uploaded URL; otherwise may start
  // one upload for this shot (within limits.max_concurrent_uploads).
  bool media_ready(Shot& shot);
  void start_submit(Shot& shot, TimePoint now);
  // GET of an API URL for `shot`; the answer goes to `on_answer`.
  void start_api_get(Shot& shot, std::string url,
                     void (Scheduler::*on_answer)(const std::string&, const HttpResponse&));
  void start_download(Shot& shot, MonoPoint now);

  void on_submit(const std::string& key, const HttpResponse& r);
  void on_poll(const std::string& key, const HttpResponse& r);
  void on_fetch(const std::string& key, const HttpResponse& r);
  // The shared action for a poll or result answer that is not progress.
  void on_follow_problem(Shot& shot, const char* step, Verdict verdict, const std::string& message,
                         const std::optional<TimePoint>& reset_at);
  void on_download(const std::string& key, int fd, const HttpResponse& r);

  Shot* find(const std::string& key);
  void save(Shot& shot, Sync sync = Sync::no);
  void end(Shot& shot, ShotState state, const std::string& reason);
  void retry_later(Shot& shot, const std::string& why, bool limited);
  Millis backoff(int attempts);
  // Credits already committed: estimates of submitted shots whose cost is not yet known.
  struct Commitments {
    double reserved = 0;
    std::map<std::string, double> batch;
  };
  Commitments commitments() const;
  // Why every pending shot waits this tick (pause, window, 429 or key, credits), or "".
  std::string common_gate(TimePoint wall, MonoPoint now, int64_t& next_ms) const;
  // Why this shot would break a budget or the balance, or "".
  std::string spend_gate(const Shot& shot, double estimate, const Commitments& c, double spent_today);
  void start_credit_check();
  void set_balance(double balance);
  Millis poll_interval(const Shot& shot, int64_t now_mono_ms) const;
  void maybe_finish(const std::string& batch);
  void finish_pending_batches();
  std::vector<Shot> target_shots(const std::string& target) const;
  void requeue(Shot shot, const std::string& ledger_event, const std::string& reason);
  // Back to following its job at `step` (operator retry of a HELD shot).
  void resume_at(Shot shot, ShotState step);
  void reopen_batch(const std::string& name);
  // An API request with the key, the JSON headers and the configured timeouts;
  // a POST when it has a body.
  HttpRequest api_request(std::string url, std::string json_body = "") const;

  const Config& config_;
  Store& store_;
  Transport& transport_;
  NowFn wall_;
  MonoFn mono_;
  std::string api_key_;
  OutputDir output_;
  std::mt19937_64 rng_{std::random_device{}()};

  std::map<std::string, Shot> shots_;  // unfinished shots, by "batch/id"
  std::map<std::string, BatchRecord> batches_;  // unfinished batches
  std::set<std::string> busy_;  // shots with a request on the wire
  std::set<std::string> uploading_;  // sha256 of media being uploaded
  std::set<std::string> finishing_;  // batches whose report is still to be written
  struct HashEntry {
    long long size;
    int64_t mtime_ns;
    std::string sha256;
  };
  std::map<std::string, HashEntry> hash_cache_;  // path -> content hash
  std::map<std::string, int64_t> processing_seen_ms_;  // first time seen PROCESSING (monotonic ms)
  double expected_render_ms_ = 0;  // moving average of observed render times
  size_t submits_on_wire_ = 0;
  int uploads_on_wire_ = 0;
  int downloads_on_wire_ = 0;
  bool stopping_ = false;
  bool paused_ = false;
  CostModel cost_;
  SubmitBucket bucket_;
  TimeWindow window_;
  int consecutive_429_ = 0;
  std::optional<double> balance_;    // last known credit balance
  double spent_since_balance_ = 0;   // costs observed after that reading
  bool credits_wait_ = false;        // a 406 Insufficient credits: wait for a top-up
  bool credits_on_wire_ = false;
  bool balance_read_ = false;        // the first balance check has been answered
  MonoPoint next_credit_check_{};
  std::map<std::string, double> batch_spent_;  // observed cost per unfinished batch
  std::map<std::string, double> daily_spent_;  // observed cost per local day
  MonoPoint submits_blocked_until_{};
  std::string submits_blocked_reason_;
};

}  // namespace wb
