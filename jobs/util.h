// Small helpers shared by every layer: hashing, encoding, time formatting and
// durable file writes. Nothing here knows about shots or the API.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace wb {

// Owns a descriptor: closed when it goes out of scope (-1: none).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Wall time: for what a person reads, persisted timestamps, local days and windows.
using TimePoint = std::chrono::system_clock::time_point;
// Monotonic time: for every interval and due time, so that a step of the wall
// clock (an NTP correction, a restored VM) neither stalls nor rushes the work.
using MonoPoint = std::chrono::steady_clock::time_point;
using Millis = std::chrono::milliseconds;

// Milliseconds on the monotonic clock's own scale (meaningful only in-process).
inline int64_t mono_ms(MonoPoint t) {
  return std::chrono::duration_cast<Millis>(t.time_since_epoch()).count();
}

// A recoverable error whose message is meant for a person (file, field, cause).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string sha256_hex(std::string_view data);
std::string base64_encode(std::string_view data);

// Milliseconds since the Unix epoch, the form every persisted time takes.
int64_t to_epoch_ms(TimePoint t);
TimePoint from_epoch_ms(int64_t ms);
// "2026-11-24T14:30:00.123Z"
std::string iso8601_utc(TimePoint t);
// Accepts ISO 8601 UTC ("...Z", optional fraction), or epoch seconds / milliseconds.
std::optional<TimePoint> parse_reset_time(std::string_view text);

// True when `s` matches [A-Za-z0-9._-]{1,64} and is not "." or "..".
bool is_valid_id(std::string_view s);

// Reads a whole regular file; throws Error naming the path.
std::string read_file(const std::string& path, uint64_t max_bytes = 64ull << 20);

enum class Durability { flush_only, fsync };

// Writes `data` to `dir/name` through a temporary file in the same folder and a
// rename, so readers see the old file or the new one, never half of it. Refuses to
// write through a symlink at the final name. With Durability::fsync the file and the
// folder are synced before returning.
void write_file_atomic(const std::string& dir, const std::string& name, std::string_view data,
                       Durability durability = Durability::fsync);
// The same for a file made of pieces, written one after the other.
void write_file_atomic(const std::string& dir, const std::string& name, const std::vector<std::string>& pieces,
                       Durability durability = Durability::fsync);

// Renames a file, falling back to copy + fsync + unlink across filesystems.
void move_file(const std::string& from, const std::string& to);

void fsync_dir(const std::string& dir);
bool is_dir(const std::string& path);
std::string dirname_of(const std::string& path);
std::string basename_of(const std::string& path);
std::string join_path(const std::string& a, const std::string& b);

}  // namespace wb

namespace wb {
// SHA-256 of a file's content from its start, read through `fd`; throws Error
// when it cannot be read to its end (never the digest of part of it).
std::string sha256_fd_hex(int fd);
}  // namespace wb
