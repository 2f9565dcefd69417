// Watches the incoming spool folder with inotify and decides when a manifest has
// arrived complete: renamed into the folder (IN_MOVED_TO), or written in place
// and then seen unchanged (size and mtime) for the settle time, on the monotonic
// clock. A queue overflow, a lost watch or a
// start-up triggers a full rescan, so no file is missed and none is taken twice
// (the daemon claims a taken file by renaming it into spool.incoming/.claimed/;
// dot-names such as that folder and the spool lock .wanbatch.lock are ignored).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "jobs/util.h"

namespace wb {

class SpoolWatcher {
 public:
  SpoolWatcher(std::string dir, Millis settle);
  ~SpoolWatcher();
  SpoolWatcher(const SpoolWatcher&) = delete;
  SpoolWatcher& operator=(const SpoolWatcher&) = delete;

  // The inotify descriptor to wait on (always valid).
  int fd() const { return fd_; }
  // (Re)creates the watch when the folder exists. Returns whether it is watched.
  bool ensure_watch();
  // Reads pending inotify events; call when fd() is readable.
  void drain_events();
  // Names (not paths) of manifests ready to take, oldest first. `next` is set to
  // the time until a waiting candidate may become ready.
  std::vector<std::string> take_ready(MonoPoint now, Millis& next);

  // Whether a name looks like a manifest and not a temporary or hidden file.
  static bool eligible(const std::string& name);

 private:
  struct Candidate {
    long long size = -1;
    int64_t mtime_ns = 0;
    MonoPoint stable_since{};
    bool moved_in = false;
  };
  void rescan(MonoPoint now);

  std::string dir_;
  Millis settle_;
  int fd_ = -1;
  int wd_ = -1;
  bool rescan_needed_ = true;
  std::map<std::string, Candidate> candidates_;
};

}  // namespace wb
