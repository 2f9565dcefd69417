#include "jobs/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "jobs/json_safe.h"
#include "jobs/util.h"

namespace wb {

namespace {

std::string line_of(const nlohmann::json& entry) {
  std::string text = entry.dump();
  return sha256_hex(text).substr(0, 16) + " " + text + "\n";
}

// The entry of one line, when its checksum and JSON hold.
std::optional<nlohmann::json> parse_line(std::string_view line) {
  if (line.size() < 18 || line[16] != ' ') return std::nullopt;
  std::string_view text = line.substr(17);
  if (sha256_hex(text).substr(0, 16) != line.substr(0, 16)) return std::nullopt;
  auto j = parse_json_bounded(text);
  if (!j || !j->is_object()) return std::nullopt;
  return j;
}

}  // namespace

SubmitJournal::Contents SubmitJournal::read(const std::string& path) {
  Contents c;
  std::string data;
  if (::access(path.c_str(), F_OK) != 0) return c;
  data = read_file(path, 1ull << 34);
  size_t pos = 0;
  int bad_run = 0;  // unreadable lines since the last readable one
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    bool complete = nl != std::string::npos;
    std::string_view line(data.data() + pos, (complete ? nl : data.size()) - pos);
    pos = complete ? nl + 1 : data.size();
    auto entry = complete ? parse_line(line) : std::nullopt;
    if (entry) {
      c.damaged_lines += bad_run;
      bad_run = 0;
      c.entries.push_back(std::move(*entry));
    } else if (!complete) {
      c.torn_tail = true;  // the last bytes, without their newline: an append cut short
    } else if (!line.empty()) {
      ++bad_run;
    }
  }
  // A bad line with its newline was written whole: damage, wherever it stands.
  c.damaged_lines += bad_run;
  return c;
}

SubmitJournal::SubmitJournal(std::string path) : path_(std::move(path)) { open_for_append(); }

SubmitJournal::~SubmitJournal() {
  if (fd_ >= 0) ::close(fd_);
}

void SubmitJournal::open_for_append() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd_ < 0) throw Error("cannot open the submit journal " + path_ + ": " + std::strerror(errno));
  // A torn last line (an append cut by a crash) must not swallow the next entry.
  off_t end = ::lseek(fd_, 0, SEEK_END);
  if (end > 0) {
    char last = 0;
    if (::pread(fd_, &last, 1, end - 1) == 1 && last != '\n') {
      if (::write(fd_, "\n", 1) != 1) throw Error("cannot write the submit journal " + path_ + ": " + std::strerror(errno));
    }
  }
}

void SubmitJournal::append(const nlohmann::json& entry) {
  std::string line = line_of(entry);
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error("cannot write the submit journal " + path_ + ": " + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  if (::fdatasync(fd_) != 0) throw Error("cannot sync the submit journal " + path_ + ": " + std::strerror(errno));
}

void SubmitJournal::rewrite(const std::vector<nlohmann::json>& entries) {
  std::string data;
  for (const auto& e : entries) data += line_of(e);
  write_file_atomic(dirname_of(path_), basename_of(path_), data, Durability::fsync);
  ::chmod(path_.c_str(), 0600);
  open_for_append();
}

}  // namespace wb
