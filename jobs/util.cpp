#include "jobs/util.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <vector>

namespace wb {

namespace {

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + what + ": " + errno_text());
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// OpenSSL 3 looks the algorithm up in its providers on every EVP_sha256() init
// (locks, a property query: more than hashing a small file); fetched once here.
// Never freed: it lives as long as the process.
const EVP_MD* sha256_md() {
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched ? fetched : EVP_sha256();
  }();
  return md;
}

std::string hex_digest(const unsigned char* md, unsigned len) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, sha256_md(), nullptr);
  return hex_digest(md, len);
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

int64_t to_epoch_ms(TimePoint t) {
  return std::chrono::duration_cast<Millis>(t.time_since_epoch()).count();
}

TimePoint from_epoch_ms(int64_t ms) { return TimePoint(Millis(ms)); }

std::string iso8601_utc(TimePoint t) {
  int64_t ms = to_epoch_ms(t);
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

std::optional<TimePoint> parse_reset_time(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\r')) text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  bool digits = text.find_first_not_of("0123456789.") == std::string_view::npos;
  if (digits) {
    double v = std::strtod(std::string(text).c_str(), nullptr);
    // Values this large are milliseconds; smaller ones are seconds.
    if (v > 1e11) return from_epoch_ms(static_cast<int64_t>(v));
    return from_epoch_ms(static_cast<int64_t>(v * 1000));
  }
  struct tm tm {};
  std::string s(text);
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) rest = strptime(s.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  if (!rest) return std::nullopt;
  int64_t ms = static_cast<int64_t>(timegm(&tm)) * 1000;
  if (*rest == '.') {
    ++rest;
    int scale = 100;
    while (*rest >= '0' && *rest <= '9') {
      ms += (*rest - '0') * scale;
      scale /= 10;
      ++rest;
    }
  }
  if (*rest == 'Z' || *rest == '\0' || std::strcmp(rest, "+00:00") == 0) return from_epoch_ms(ms);
  return std::nullopt;
}

bool is_valid_id(std::string_view s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..") return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) throw Error("cannot open " + path + ": " + errno_text());
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    throw Error(path + " is too large (" + std::to_string(st.st_size) + " bytes, limit " +
                std::to_string(max_bytes) + ")");
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("cannot read " + path + ": " + errno_text());
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

void fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() >= 0) ::fsync(fd.get());
}

static void write_pieces_atomic(const std::string& dir, const std::string& name,
                                const std::vector<std::string_view>& pieces, Durability durability) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string final_path = join_path(dir, name);
  struct stat st {};
  if (::lstat(final_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw Error("refusing to write through the symlink " + final_path);
  std::string tmp = join_path(dir, "." + name + ".tmp" + std::to_string(rng() % 1000000));
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw Error("cannot create " + tmp + ": " + errno_text());
    try {
      for (std::string_view piece : pieces) write_all(fd.get(), piece, tmp);
      if (durability == Durability::fsync && ::fsync(fd.get()) != 0)
        throw Error("cannot sync " + tmp + ": " + errno_text());
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + final_path + ": " + std::strerror(e));
  }
  if (durability == Durability::fsync) fsync_dir(dir);
}

void write_file_atomic(const std::string& dir, const std::string& name, std::string_view data,
                       Durability durability) {
  write_pieces_atomic(dir, name, std::vector<std::string_view>{data}, durability);
}

void write_file_atomic(const std::string& dir, const std::string& name, const std::vector<std::string>& pieces,
                       Durability durability) {
  std::vector<std::string_view> views(pieces.begin(), pieces.end());
  write_pieces_atomic(dir, name, views, durability);
}

void move_file(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) == 0) {
    fsync_dir(dirname_of(to));
    return;
  }
  if (errno != EXDEV) throw Error("cannot move " + from + " to " + to + ": " + errno_text());
  std::string data = read_file(from, 1ull << 34);
  write_file_atomic(dirname_of(to), basename_of(to), data);
  if (::unlink(from.c_str()) != 0) throw Error("cannot remove " + from + ": " + errno_text());
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string dirname_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string basename_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty() || (!b.empty() && b.front() == '/')) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

}  // namespace wb

namespace wb {
namespace {
constexpr size_t kHashChunk = 1 << 16;
}  // namespace

std::string sha256_fd_hex(int fd) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, sha256_md(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw Error("cannot start a SHA-256 digest");
  }
  // Read in 64 KiB pieces into a buffer kept by the thread (not zeroed and
  // allocated again for every file).
  thread_local std::unique_ptr<char[]> buf(new char[kHashChunk]);
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.get(), kHashChunk, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      // A digest of what was read before the error would name a file that is not there.
      const int e = errno;
      EVP_MD_CTX_free(ctx);
      throw Error("cannot read the file to hash it (at byte " + std::to_string(off) + "): " + std::strerror(e));
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx, buf.get(), static_cast<size_t>(n));
    off += n;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return hex_digest(md, len);
}
}  // namespace wb
