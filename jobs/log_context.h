// Which shot or batch a log line is about, as fields beside the text: the
// journald sink (daemon/journal_log.h) sends them as BATCH=, SHOT= and
// REQUEST_ID=, so `journalctl BATCH=lakeside-night` tells one batch's story.
// A LogScope sets them for its thread while it lives, at the few places every
// shot's work passes through (an answer handled for it, its end, a batch's
// end); log calls inside need not change. Scopes nest: the innermost wins and
// the outer one's fields come back when it ends.
#pragma once

#include <string>

namespace wb {

struct LogFields {
  std::string batch;
  std::string shot;
  std::string request_id;
};

// The fields of the innermost live LogScope of this thread (all empty when none).
const LogFields& log_fields();

class LogScope {
 public:
  // `key`: "batch/shot", or a batch name alone.
  explicit LogScope(const std::string& key, const std::string& request_id = "");
  ~LogScope();
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

 private:
  LogFields saved_;
};

}  // namespace wb
