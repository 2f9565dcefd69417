// Logs into the systemd journal when stderr is connected to it: each line is
// sent with sd_journal_sendv as fields (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER,
// and BATCH, SHOT, REQUEST_ID from the thread's LogScope, jobs/log_context.h),
// with no timestamp of our own (the journal stamps each entry). Elsewhere
// (a terminal, a file, a pipe) logs go to stderr as timestamped lines.
#pragma once

#include <sys/uio.h>

#include <functional>
#include <mutex>
#include <spdlog/sinks/base_sink.h>
#include <string>

namespace wb {

// Sends one journal entry; sd_journal_sendv's contract (< 0: -errno).
using JournalSend = std::function<int(const struct iovec* fields, int count)>;

// Whether `fd` is the stream that `journal_stream` (the JOURNAL_STREAM
// variable systemd sets, "DEVICE:INODE") names; false when it is null,
// malformed, or names another file (stderr redirected since).
bool is_journal_stream(const char* journal_stream, int fd);

// syslog priority of a spdlog level: debug 7, info 6, warn 4, error 3, critical 2.
int journal_priority(spdlog::level::level_enum level);

class JournalSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // `send`: sd_journal_sendv by default; tests pass their own. An entry the
  // journal refuses is written to stderr instead, so no line is lost.
  explicit JournalSink(JournalSend send = {}, std::string identifier = "wanbatch");

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  JournalSend send_;
  std::string identifier_;
};

// The process's logger "wanbatch": the journal when stderr is the journal,
// else stderr with "YYYY-mm-dd HH:MM:SS.mmm level message" lines.
void setup_logging();

}  // namespace wb
