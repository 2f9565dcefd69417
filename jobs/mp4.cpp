#include "jobs/mp4.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <functional>

namespace wb {

namespace {

constexpr uint64_t kMaxMoov = 64ull << 20;

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint64_t be64(const unsigned char* p) { return (uint64_t{be32(p)} << 32) | be32(p + 4); }

// Walks the handler boxes inside moov: moov/trak/mdia/hdlr carries the track type.
void scan_tracks(const std::string& moov, size_t begin, size_t end, Mp4Check& out, int depth) {
  size_t pos = begin;
  while (depth < 8 && pos + 8 <= end) {
    auto* p = reinterpret_cast<const unsigned char*>(moov.data() + pos);
    uint64_t size = be32(p);
    std::string type(moov.data() + pos + 4, 4);
    size_t header = 8;
    if (size == 1 && pos + 16 <= end) {
      size = be64(p + 8);
      header = 16;
    }
    if (size < header || pos + size > end) return;
    if (type == "trak" || type == "mdia") {
      scan_tracks(moov, pos + header, pos + size, out, depth + 1);
    } else if (type == "hdlr" && size >= header + 12) {
      std::string handler(moov.data() + pos + header + 8, 4);
      if (handler == "vide") out.has_video = true;
      if (handler == "soun") out.has_audio = true;
    }
    pos += size;
  }
}

Mp4Check check(uint64_t file_size, const std::function<bool(uint64_t, size_t, std::string&)>& read_at) {
  Mp4Check out;
  if (file_size < 16) {
    out.error = "file is too short to be an MP4 (" + std::to_string(file_size) + " bytes)";
    return out;
  }
  uint64_t pos = 0;
  bool first = true, moov = false, mdat = false;
  std::string buf;
  while (pos < file_size) {
    if (file_size - pos < 8 || !read_at(pos, 16, buf) || buf.size() < 8) {
      out.error = "truncated box header at byte " + std::to_string(pos);
      return out;
    }
    auto* p = reinterpret_cast<const unsigned char*>(buf.data());
    uint64_t size = be32(p);
    std::string type = buf.substr(4, 4);
    uint64_t header = 8;
    if (size == 1) {
      if (buf.size() < 16) {
        out.error = "truncated large box header at byte " + std::to_string(pos);
        return out;
      }
      size = be64(p + 8);
      header = 16;
    } else if (size == 0) {
      size = file_size - pos;  // the box runs to the end of the file
    }
    for (char c : type)
      if (c < 32 || c > 126) {
        out.error = "not an MP4: garbage box type at byte " + std::to_string(pos);
        return out;
      }
    if (first && type != "ftyp") {
      out.error = "not an MP4: the first box is '" + type + "', not 'ftyp'";
      return out;
    }
    first = false;
    if (size < header || size > file_size - pos) {
      out.error = "box '" + type + "' at byte " + std::to_string(pos) + " runs past the end (file truncated?)";
      return out;
    }
    if (type == "mdat") mdat = true;
    if (type == "moov") {
      moov = true;
      if (size > kMaxMoov) {
        out.error = "moov box is implausibly large";
        return out;
      }
      std::string body;
      if (!read_at(pos, static_cast<size_t>(size), body) || body.size() != size) {
        out.error = "cannot read the moov box";
        return out;
      }
      scan_tracks(body, header, body.size(), out, 0);
    }
    pos += size;
  }
  if (!moov) out.error = "no moov box (no track index)";
  else if (!mdat) out.error = "no mdat box (no media data)";
  else if (!out.has_video) out.error = "no video track";
  else out.ok = true;
  return out;
}

}  // namespace

Mp4Check check_mp4_fd(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {false, false, false, "cannot stat the file"};
  return check(static_cast<uint64_t>(st.st_size), [fd](uint64_t off, size_t len, std::string& out) {
    out.resize(len);
    size_t got = 0;
    while (got < len) {
      ssize_t n = ::pread(fd, out.data() + got, len - got, static_cast<off_t>(off + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    out.resize(got);
    return true;
  });
}

Mp4Check check_mp4_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {false, false, false, "cannot open " + path};
  Mp4Check r = check_mp4_fd(fd);
  ::close(fd);
  return r;
}

Mp4Check check_mp4_bytes(const std::string& data) {
  return check(data.size(), [&](uint64_t off, size_t len, std::string& out) {
    out = off < data.size() ? data.substr(off, len) : std::string();
    return true;
  });
}

}  // namespace wb
