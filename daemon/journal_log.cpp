#include "daemon/journal_log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "jobs/log_context.h"

namespace wb {

bool is_journal_stream(const char* journal_stream, int fd) {
  if (!journal_stream || !*journal_stream) return false;
  unsigned long long dev = 0, ino = 0;
  int used = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%n", &dev, &ino, &used) != 2 || journal_stream[used] != '\0') return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

int journal_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return 7;
    case spdlog::level::info: return 6;
    case spdlog::level::warn: return 4;
    case spdlog::level::err: return 3;
    case spdlog::level::critical: return 2;
    default: return 6;
  }
}

JournalSink::JournalSink(JournalSend send, std::string identifier)
    : send_(send ? std::move(send) : JournalSend(sd_journal_sendv)), identifier_(std::move(identifier)) {}

void JournalSink::sink_it_(const spdlog::details::log_msg& msg) {
  const LogFields& f = log_fields();
  std::vector<std::string> fields;
  fields.reserve(6);
  fields.push_back("MESSAGE=" + std::string(msg.payload.data(), msg.payload.size()));
  fields.push_back("PRIORITY=" + std::to_string(journal_priority(msg.level)));
  fields.push_back("SYSLOG_IDENTIFIER=" + identifier_);
  if (!f.batch.empty()) fields.push_back("BATCH=" + f.batch);
  if (!f.shot.empty()) fields.push_back("SHOT=" + f.shot);
  if (!f.request_id.empty()) fields.push_back("REQUEST_ID=" + f.request_id);
  std::vector<iovec> iov;
  iov.reserve(fields.size());
  for (auto& s : fields) iov.push_back({s.data(), s.size()});
  if (send_(iov.data(), static_cast<int>(iov.size())) >= 0) return;
  // The journal refused it (its socket gone): stderr still reaches it as a stream.
  std::string line = std::string(spdlog::level::to_string_view(msg.level).data()) + " " + fields[0].substr(8) + "\n";
  if (::write(STDERR_FILENO, line.data(), line.size()) < 0) {
    // nowhere left to tell
  }
}

void setup_logging() {
  // Only with a journal to talk to: libsystemd drops a message silently when its
  // socket is missing, and stderr would then be the only place a line can go.
  if (is_journal_stream(std::getenv("JOURNAL_STREAM"), STDERR_FILENO) &&
      ::access("/run/systemd/journal/socket", W_OK) == 0) {
    auto logger = std::make_shared<spdlog::logger>("wanbatch", std::make_shared<JournalSink>());
    spdlog::set_default_logger(logger);
    return;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("wanbatch"));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
}

}  // namespace wb
