// Local media (image, last_frame, audio) uploaded once per content: a shot is
// ready to submit when every local field has its public URL. Uploads are
// shared by content hash (two shots with the same file upload it once) and
// limited by limits.max_concurrent_uploads.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>

#include "jobs/engine/core.h"

namespace wb {

class Uploader {
 public:
  explicit Uploader(Core& core) : core_(core) {}
  // True when every local media field has its URL; otherwise may start one
  // upload for this shot, or end it REJECTED when its media cannot be read.
  bool ready(Shot& shot);
  int on_the_wire() const { return on_wire_; }
  // The PNG taken for a frame of another shot (jobs/engine/chains.h), "" while
  // there is none: a shot with a frame reference is not ready without it.
  std::function<std::string(const Shot&, const MediaRef&)> frame_file;

 private:
  Core& core_;
  struct HashEntry {
    long long size;
    int64_t mtime_ns;
    std::string sha256;
  };
  std::map<std::string, HashEntry> hash_cache_;  // path -> content hash
  std::set<std::string> uploading_;              // sha256 of media being uploaded
  int on_wire_ = 0;
};

}  // namespace wb
