// What every part of the engine shares (the settings, the store, the
// transport, the clocks, the shot book, the event stream, the request builder,
// the request budget and the money), and the few actions every part takes on a
// shot: save it, move it to a state, end it, retry a step later, send a
// request on its behalf. The parts (submitter, follower, uploader, downloader,
// batches, operator) each hold a Core& and nothing of each other.
#pragma once

#include <functional>
#include <random>
#include <string>

#include "jobs/background.h"
#include "jobs/engine/book.h"
#include "jobs/engine/events.h"
#include "jobs/engine/requests.h"
#include "jobs/engine/spend.h"
#include "jobs/frame_grab.h"
#include "jobs/http.h"
#include "jobs/settings.h"
#include "jobs/store.h"
#include "jobs/util.h"
#include "jobs/video_probe.h"

namespace wb {

using NowFn = std::function<TimePoint()>;
// A provider's wall-clock reset time as a monotonic deadline. At most an hour
// ahead: a wall clock that stepped back must not stall the work for the step.
MonoPoint mono_until(TimePoint reset_at, TimePoint wall_now, MonoPoint mono_now);

using MonoFn = std::function<MonoPoint()>;

class Core {
 public:
  // `wall` is for what people read (timestamps, local days, the submit window);
  // `mono` drives every interval and due time.
  // `threads`: see Scheduler; false runs blocking work inline.
  Core(const Settings& settings, Store& store, Transport& transport, NowFn wall, MonoFn mono, std::string api_key,
       bool threads = false);

  const Settings& settings;
  Store& store;
  Transport& transport;
  NowFn wall;
  MonoFn mono;
  ShotBook book;
  EventBus events;
  ApiRequests api;
  RequestBudget budget;
  Spend spend;
  Background background;  // blocking work (a video probe) beside the loop
  std::mt19937_64 rng{std::random_device{}()};
  // The decode check of each downloaded video (ffprobe). A rehearsal (daemon/rehearse.h),
  // whose videos are all one sample, remembers the answer for the same bytes.
  std::function<VideoFacts(const VideoConfig&, const VideoFile& video)> probe = probe_video;
  // The SHA-256 of a checked video at its commit (throws Error when it cannot be read).
  std::function<std::string(int fd)> hash = sha256_fd_hex;
  // Takes a shot chain's frame from a parent's video into a PNG ("" or the
  // problem; jobs/frame_grab.h). A rehearsal, which runs no ffmpeg, writes a
  // stand-in PNG of the same role, so its chains render and upload as the daemon's.
  std::function<std::string(const VideoConfig&, const std::string& video, const std::string& word,
                            const std::string& png)>
      extract = extract_frame;

  int64_t now_ms() const { return mono_ms(mono()); }
  double unit_random() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }
  Millis backoff(int attempts);

  void save(Shot& shot, Sync sync = Sync::no) { store.put_shot(shot, sync); }
  // A billed job whose charge is not known (an abandoned take, a result with no
  // readable cost): its estimate becomes its cost, counted as spent (batch, day,
  // balance) with a ledger line `event` naming the request_id and the estimate,
  // in one synced write. Returns the estimate.
  Micro count_estimate_spent(Shot& shot, const std::string& event);
  // A step forward (not an end): the state changes in the book and the event
  // is told; the caller saves.
  void move(Shot& shot, ShotState state);
  // Ends a shot (DONE, FAILED, REJECTED, CANCELLED, HELD): saved synced, out of
  // the book, its batch checked for its end (on_shot_ended).
  void end(Shot& shot, ShotState state, const std::string& reason);
  // One more attempt at the shot's current step after a backoff; `limited`
  // attempts end it HELD after retry.max_attempts (others are waits: Shot::waits,
  // their backoff only). The count is saved (a daemon
  // killed after each failure must not retry for ever) and, unless the shot has
  // a reason of its own (stuck, a video that did not decode), its reason says
  // "retrying: <why>" for `status`.
  void retry_later(Shot& shot, const std::string& why, bool limited);
  // The step that was retried went through: the count starts again (unless
  // `keep_count`: a result fetched again for a gone download URL, whose count
  // goes on) and the retry's reason goes. Returns whether the record changed
  // (the caller saves).
  bool step_went_through(Shot& shot, bool keep_count = false);
  // The reason of a shot whose step is tried again: "retrying: <why>".
  static std::string retrying(const std::string& why) { return kRetrying + why; }
  static constexpr const char* kRetrying = "retrying: ";
  // Starts `request` for the shot `key` (busy until the answer), tells the
  // events which endpoint was asked, and hands the answer to `on_answer`.
  void send(const std::string& key, const std::string& endpoint, HttpRequest request,
            std::function<void(const HttpResponse&)> on_answer);
  // Requests on the wire at once. Past this, due polls, results and downloads
  // wait in the book (their due time passed, they go as answers come back)
  // rather than in libcurl's queue, where each would hold an easy handle and
  // its buffers: 5,000 due at once cost 100 MB there, and every transfer is
  // walked on each turn of the loop. Submits may use the last kWireReserve.
  static constexpr size_t kWireCap = 64;
  static constexpr size_t kWireReserve = 8;
  bool wire_room(bool submit = false) const {
    return transport.active() < (submit ? kWireCap : kWireCap - kWireReserve);
  }

  // Set by the batches part: a shot of this batch ended or left the book.
  std::function<void(const std::string& batch)> on_shot_ended;
};

}  // namespace wb
