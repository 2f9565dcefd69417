#include "jobs/paths.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "jobs/util.h"

namespace wb {

std::string absolute_lexical(const std::string& raw, const std::string& base_dir) {
  std::string full = raw.empty() || raw.front() != '/' ? join_path(base_dir, raw) : raw;
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= full.size()) {
    size_t j = full.find('/', i);
    if (j == std::string::npos) j = full.size();
    std::string part = full.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

bool inside_roots(const std::string& path, const std::vector<std::string>& roots) {
  for (const auto& root_raw : roots) {
    char buf[PATH_MAX];
    std::string root = ::realpath(root_raw.c_str(), buf) ? std::string(buf) : root_raw;
    if (path == root) return true;
    std::string prefix = root == "/" ? root : root + "/";
    if (path.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

std::string sniff_mime(std::string_view d, MediaKind kind) {
  auto starts = [&](std::string_view p, size_t at = 0) {
    return d.size() >= at + p.size() && d.substr(at, p.size()) == p;
  };
  if (kind == MediaKind::image) {
    if (starts("\x89PNG\r\n\x1a\n")) return "image/png";
    if (starts("\xff\xd8\xff")) return "image/jpeg";
    if (starts("RIFF") && starts("WEBP", 8)) return "image/webp";
    if (starts("GIF87a") || starts("GIF89a")) return "image/gif";
    return "";
  }
  if (starts("ID3") || (d.size() > 2 && static_cast<unsigned char>(d[0]) == 0xff &&
                        (static_cast<unsigned char>(d[1]) & 0xe0) == 0xe0))
    return "audio/mpeg";
  if (starts("RIFF") && starts("WAVE", 8)) return "audio/wav";
  if (starts("OggS")) return "audio/ogg";
  if (starts("fLaC")) return "audio/flac";
  if (starts("ftyp", 4)) return "audio/mp4";
  return "";
}

MediaFile read_media(const std::string& path, const std::vector<std::string>& roots,
                     long long max_bytes, MediaKind kind) {
  // Nothing outside the roots is even opened (opening a device can act on it):
  // the resolved path is checked first, then again on the opened descriptor.
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) && !inside_roots(resolved, roots))
    throw Error(path + ": resolves to " + std::string(resolved) + ", outside the configured input_roots");
  // O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOFOLLOW: the last
  // component may not be a symlink; links further up are caught by the realpath
  // check on the open descriptor below.
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ELOOP) throw Error(path + ": is a symlink; name the file itself");
    throw Error(path + ": cannot open: " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
  char buf[PATH_MAX];
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(proc.c_str(), buf, sizeof buf - 1);
  if (n <= 0) throw Error(path + ": cannot resolve the opened file");
  std::string canonical(buf, static_cast<size_t>(n));
  if (!inside_roots(canonical, roots))
    throw Error(path + ": resolves to " + canonical + ", outside the configured input_roots");
  if (st.st_nlink > 1)
    throw Error(path + ": has " + std::to_string(st.st_nlink) +
                " hard links; copy the file instead of linking it");
  if (st.st_size > max_bytes)
    throw Error(path + ": " + std::to_string(st.st_size) + " bytes, over limits.max_media_bytes (" +
                std::to_string(max_bytes) + ")");
  if (st.st_size == 0) throw Error(path + ": is empty");
  MediaFile out;
  out.path = canonical;
  out.data.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.data.size()) {
    ssize_t r = ::read(fd, out.data.data() + got, out.data.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw Error(path + ": read failed");
    got += static_cast<size_t>(r);
  }
  out.mime = sniff_mime(out.data, kind);
  if (out.mime.empty())
    throw Error(path + (kind == MediaKind::image
                            ? ": not a PNG, JPEG, WebP or GIF image by its content"
                            : ": not an MP3, WAV, OGG, FLAC or M4A file by its content"));
  out.sha256 = sha256_hex(out.data);
  return out;
}

}  // namespace wb
