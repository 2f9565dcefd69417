// Shot chains in the engine (the manifest side is jobs/chain.h): a shot whose
// image or last_frame is a frame of another shot (its parent) is not submitted
// before that parent is DONE, its frame taken with ffmpeg on a worker thread
// (a PNG under Settings::frames_dir) and uploaded like a local image
// (jobs/engine/uploader.h asks frame_file()). A parent that ends FAILED, HELD,
// REJECTED or CANCELLED holds its children (HELD, the reason naming it); an
// operator retry of the parent releases them to wait for it again, and so does
// the parent's end DONE by any path (a revision's new take, an adopted job).
//
// Crash safety: the frames taken are known in memory only, so after a restart
// a child without its uploaded URL has its frame taken and uploaded again; the
// uploader never reports a child ready without every URL, so no submit goes
// without its frame.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "jobs/engine/core.h"

namespace wb {

class Chains {
 public:
  explicit Chains(Core& core);

  // For a PENDING shot: true when it has no frame reference, or when each one
  // has its uploaded URL or its frame taken (then the uploader takes over).
  // Otherwise false, and the shot says why in its reason: its parent is not
  // finished ("waiting for sh010 to finish") or its frame is being taken; or it
  // ended HELD, its parent having ended without a video.
  bool ready(Shot& shot);
  // The PNG taken for the frame reference `ref` of `shot` in this run, "" when none yet.
  std::string frame_file(const Shot& shot, const MediaRef& ref) const;
  // The shot waits for a parent (its reason says so): the submit gates leave its reason alone.
  static bool waits_for_parent(const Shot& shot);
  // The children of parents that ended since the last call are looked at now
  // (held, or their frame taken), whatever the submit gates say; at the first
  // call (after a load), every chained PENDING shot.
  void tick();

  // After an operator retry of `retried` (ids of `batch`), or their end DONE:
  // the shots below them HELD by their chain before any submit
  // (jobs/chain.h held_by_chain) go back to PENDING, to wait for their parent
  // again, each only when every parent it takes a frame from gives one (DONE,
  // followed, or released with it), and never one that left the manifest. The
  // log names each one's own parent ("its parent b was released", or `why`
  // after the retried parent's id). Returns their ids, in manifest order.
  std::vector<std::string> release(const std::string& batch, const std::vector<std::string>& retried,
                                   const std::string& why = "was retried");
  // Every shot of `batch` whose render needs `shot`'s video, directly or through
  // others, in manifest order (for revisions: a parent's new take renders these again).
  std::vector<std::string> children_of(const std::string& batch, const std::string& shot) const;

  // A revision of `batch` was stored: which shots take frames from which may have changed.
  void batch_changed(const std::string& batch);

  // Sends a HELD shot back to PENDING (the operator's requeue, with a ledger line).
  std::function<void(Shot shot, const std::string& ledger_event, const std::string& reason)> requeue;

 private:
  void wait(Shot& shot, const std::string& reason);
  // Whether a shot of `batch` takes a frame from `id` (the batch's specs read once a run).
  bool is_parent(const std::string& batch, const std::string& id);
  void take_frame(const std::string& frame_key, const std::string& video, const std::string& word,
                  const std::string& png);

  Core& core_;
  std::map<std::string, std::string> taken_;  // "batch/parent/word" -> the PNG, taken in this run
  std::set<std::string> taking_;              // on a worker thread now
  struct Failure {
    std::string message;
    int attempts = 0;
    int64_t retry_ms = 0;  // monotonic
  };
  std::map<std::string, Failure> failures_;
  std::set<std::string> ended_;  // keys of shots that ended since the last tick
  bool look_at_all_ = true;
  std::map<std::string, std::set<std::string>> parents_;  // batch -> ids some shot takes a frame from
};

}  // namespace wb
