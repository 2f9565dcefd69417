// The engine's front: it owns the parts (jobs/engine/*.h) and wires them.
// The daemon (or a test) drives it single-threaded: tick() starts what is due,
// the Transport runs the requests and their answers change the shots. Time
// comes from injected clocks so tests step it without sleeping.
//
//   book       the unfinished shots and batches, due-time queue, submit order
//   gates      why submits wait (pure)            spend     money and budgets
//   submitter  the money path                     follower  status and result
//   planner    when to poll (learned)             uploader  local media
//   downloader videos into the output folder      batches   reports, batch ends
//   operator   retry and cancel                   credits   the balance
//   chains     shots that open with another shot's frame
//   events     what happened, for sinks (report, metrics, notifications)
//   stuck      jobs in flight far beyond their render time
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "jobs/engine/batches.h"
#include "jobs/engine/chains.h"
#include "jobs/engine/core.h"
#include "jobs/engine/credits.h"
#include "jobs/engine/downloader.h"
#include "jobs/engine/follower.h"
#include "jobs/engine/gates.h"
#include "jobs/engine/operator.h"
#include "jobs/engine/poll_planner.h"
#include "jobs/engine/revisions.h"
#include "jobs/engine/stuck.h"
#include "jobs/engine/submitter.h"
#include "jobs/engine/uploader.h"
#include "jobs/manifest.h"
#include "jobs/output.h"
#include "jobs/throttle.h"

namespace wb {

class Scheduler {
 public:
  // `threads`: blocking work (ffprobe on each download) runs on worker threads,
  // its result taken up by tick() (the daemon; it waits on background_fd()).
  // Without (tests on a fake clock), that work runs inline.
  Scheduler(const Settings& settings, Store& store, Transport& transport, NowFn wall, MonoFn mono,
            std::string api_key, bool threads = false);
  // Readable when blocking work has finished: the daemon's loop waits on it.
  int background_fd() const { return core_.background.fd(); }
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Loads unfinished work from the store (only that: finished history is not
  // read). A shot found in SUBMITTING (the daemon stopped between sending a
  // submit and recording its request_id) becomes HELD.
  void load();

  enum class Accept { added, already_added, revised, unchanged, name_taken };
  // Records a validated manifest as a batch of PENDING shots in one synced write.
  // already_added: a batch of that name from the same bytes exists and the
  // revision would change nothing (a restart between recording and moving the
  // file, or the same file dropped again); revised: a new revision of the batch
  // (jobs/engine/revisions.h); unchanged: other bytes that change no render input;
  // name_taken: other bytes for a batch whose record is a stand-in (a damaged
  // store), which takes no revision.
  // With `held_reason`, every shot is recorded HELD with it instead (a batch the
  // state store lost, found again in spool.active: its shots may have been billed).
  Accept accept(const Manifest& manifest, const std::string& manifest_name, const std::string& manifest_path,
                const std::string& held_reason = "");

  // Starts every request that is due. Returns the time until the next due work.
  Millis tick();

  // Operator pause of submits (persisted); polls and downloads go on.
  void set_paused(bool paused);
  bool paused() const { return submit_state_.paused; }

  using OperatorResult = wb::OperatorResult;
  using Resubmit = wb::Resubmit;
  // A retried parent releases the children it held (shot chains).
  OperatorResult retry(const std::string& target, Resubmit allow_resubmit = Resubmit::yes);
  OperatorResult cancel(const std::string& target, bool abandon = false) { return operator_.cancel(target, abandon); }
  OperatorResult adopt(const std::string& target, const std::string& request_id) {
    return operator_.adopt(target, request_id);
  }

  // The settings it was given changed in place (SIGHUP): the parts that keep
  // a copy (poll bounds, the request budget) take the new values.
  void settings_changed();

  // Stop starting submits (shutdown); other work continues.
  void stop_submitting() { stopping_ = true; }
  size_t submits_on_the_wire() const { return submitter_.on_the_wire(); }
  size_t active_shots() const { return core_.book.size(); }
  size_t unfinished_batches() const { return core_.book.batches().size(); }
  // Credits spent on a batch's shots so far (micro-credits), from the spend's running sum.
  MicroCredits spent_in_batch(const std::string& batch) const { return core_.spend.spent_in_batch(batch); }
  // Why submits wait right now, daemon-wide ("" when they do not).
  const std::string& submit_wait() const { return submit_wait_; }
  // Submits a minute allowed now: limits.submits_per_minute, less after 429s.
  double submit_rate_per_minute() const { return bucket_.current_per_minute(); }

  // Runs when a batch has ended; the argument is the batch record (finished).
  std::function<void(const BatchRecord&)> on_batch_finished;
  // The event stream: subscribe sinks here.
  EventBus& events() { return core_.events; }
  // Every shot of `batch` that takes a frame from `shot`'s video, directly or
  // through others, in manifest order: a parent's new take renders these again.
  std::vector<std::string> chain_children(const std::string& batch, const std::string& shot) const {
    return chains_.children_of(batch, shot);
  }
  // The last balance read (nullopt before the first).
  std::optional<double> balance() const { return core_.spend.balance(); }
  // A balance read before this scheduler started (a rehearsal: the running
  // daemon's last reading): taken as the first read, so submits do not wait for
  // one, and the next API read is `next_read_in` later (an interval when not given).
  void set_balance_read(double balance, std::optional<Millis> next_read_in = std::nullopt) {
    credits_.read_before(balance, next_read_in);
  }
  // How long until the next balance read from the API is due (0: due now).
  Millis next_balance_read_in() const { return credits_.next_read_in(core_.mono()); }
  // Replaces the decode check of downloaded videos (Core::probe): a rehearsal's.
  void set_video_probe(std::function<VideoFacts(const VideoConfig&, const VideoFile&)> probe) {
    core_.probe = std::move(probe);
  }
  // How a committed video is hashed (Core::hash): a test's read error.
  void set_video_hash(std::function<std::string(int fd)> hash) { core_.hash = std::move(hash); }
  // How a chain's frame is taken (Core::extract; a rehearsal writes a stand-in).
  void set_frame_extract(
      std::function<std::string(const VideoConfig&, const std::string&, const std::string&, const std::string&)> f) {
    core_.extract = std::move(f);
  }
  // The unfinished shots and batches, to read (a metrics snapshot).
  const ShotBook& book() const { return core_.book; }

 private:
  // Submits in order while no gate stops them; returns the next time to look (ms).
  int64_t submit_due(TimePoint wall, MonoPoint now, int64_t next_ms);
  void set_submit_wait(const std::string& reason, const std::string& limit);
  void save_render_model();
  // An unfinished shot read from the store (at load, or found missing from the
  // book) is followed again: SUBMITTING becomes HELD, a followed step is due soon.
  void follow_again(Shot shot);
  // The submit window over a restart: the ledger's recent POSTs go into the bucket.
  void remember_recent_submits();

  Core core_;
  OutputDir output_;
  SubmitState submit_state_;
  SubmitBucket bucket_;
  TimeWindow window_;
  PollPlanner planner_;
  Submitter submitter_;
  Follower follower_;
  Uploader uploader_;
  Chains chains_;
  Downloader downloader_;
  Batches batches_;
  Operator operator_;
  Credits credits_;
  Revisions revisions_;
  StuckWatch stuck_;
  bool stopping_ = false;
  std::string submit_wait_;
  int64_t model_saved_ms_ = 0;
  bool model_dirty_ = false;
};

}  // namespace wb
