// Downloading a finished video into the output folder: a .part file resumed
// with Range after a cut, checked as an MP4, decoded by ffprobe
// (jobs/video_probe.h: a video and an audio stream that decode; duration and
// size compared with what was asked, kept in the shot's video_json), renamed
// into place with its sidecar, and the shot DONE. One that does not decode is
// downloaded once more, then HELD. The probe runs beside the loop, bounded by
// video.timeout_seconds (a few tens of ms for a sound file); a video waiting for
// it holds no descriptor (thousands may wait), and is opened again by its path,
// which must still name the same file. At most limits.max_concurrent_downloads
// at once; due shots beyond that wait their turn in order.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <deque>
#include <set>
#include <string>

#include "jobs/engine/core.h"
#include "jobs/output.h"
#include "jobs/video_probe.h"

namespace wb {

// A .part as stat() sees it (device, inode, size, mtime and ctime in ns).
PartStamp stamp_of(const struct stat& st);

class Downloader {
 public:
  Downloader(Core& core, OutputDir& output) : core_(core), output_(output) {}
  // The shot's download is due: starts it, or queues it for a free slot.
  void due(Shot& shot);
  // Starts queued downloads while there are slots.
  void start_waiting();
  int on_the_wire() const { return on_wire_; }

 private:
  void start(Shot& shot);
  // `offset`: the bytes the .part held when the request was sent (its Range start).
  void on_answer(const std::string& key, int fd, long long offset, const HttpResponse& r);
  // The output disk refused the video: the shot says why and tries again after a backoff.
  void wait_for_disk(Shot& shot, const std::string& why);
  // The probe's answer, on the loop's thread: DONE, downloaded again, or HELD.
  // `probed` is the downloaded .part as it was handed to the probe.
  struct PartId {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{};
    timespec ctime{};  // any change since (a chmod, an mtime set back) moves it
    bool is(const struct stat& st) const;  // a regular file, and this one, unchanged
  };
  // `request_id`: the take that was probed (a cancelled take's answer is dropped).
  void finish(const std::string& key, const std::string& request_id, const PartId& probed, bool has_audio,
              const VideoFacts& facts);

  Core& core_;
  OutputDir& output_;
  std::deque<std::string> waiting_;
  std::set<std::string> waiting_set_;
  int on_wire_ = 0;
  std::set<std::string> probing_;  // shots whose video a worker is probing
};

}  // namespace wb
