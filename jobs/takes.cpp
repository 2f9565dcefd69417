#include "jobs/takes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "jobs/util.h"

namespace wb {

namespace {
// `to` becomes another name of `from`'s file, unless `to` exists. A share
// without hard links gets a copy, written atomically.
void add_name(const std::string& dir, const std::string& from, const std::string& to) {
  const std::string src = join_path(dir, from), dst = join_path(dir, to);
  struct stat st {};
  if (::lstat(src.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;  // nothing to keep
  if (::link(src.c_str(), dst.c_str()) == 0 || errno == EEXIST) return;
  if (errno != EPERM && errno != ENOTSUP && errno != EXDEV && errno != ENOSYS)
    throw Error("cannot keep " + src + " as " + to + ": " + std::strerror(errno));
  if (::lstat(dst.c_str(), &st) == 0) return;
  write_file_atomic(dir, to, read_file(src, 1ull << 40));
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::lstat(a.c_str(), &sa) != 0 || ::lstat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// <dir>/<name> becomes the file <dir>/<kept> again (a temporary link renamed over it).
void put_back(const std::string& dir, const std::string& kept, const std::string& name) {
  const std::string src = join_path(dir, kept), dst = join_path(dir, name), tmp = join_path(dir, "." + name + ".restore");
  ::unlink(tmp.c_str());
  if (::link(src.c_str(), tmp.c_str()) != 0) {
    write_file_atomic(dir, name, read_file(src, 1ull << 40));
    return;
  }
  if (::rename(tmp.c_str(), dst.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot put back " + dst + ": " + std::strerror(e));
  }
}
}  // namespace

std::string take_name(const std::string& shot, int take, const std::string& ext) {
  return shot + ".take" + std::to_string(take) + "." + ext;
}

void keep_take(const OutputDir& out, const std::string& batch, const std::string& shot, int take) {
  const std::string dir = out.batch_dir(batch);
  add_name(dir, shot + ".mp4", take_name(shot, take, "mp4"));
  add_name(dir, shot + ".json", take_name(shot, take, "json"));
  fsync_dir(dir);
}

bool restore_newest_done(const OutputDir& out, const std::string& batch, const std::string& shot, int done_take) {
  const std::string dir = join_path(out.root(), batch);
  const std::string kept = join_path(dir, take_name(shot, done_take, "mp4"));
  struct stat st {};
  if (::lstat(kept.c_str(), &st) != 0 || same_file(kept, join_path(dir, shot + ".mp4"))) return false;
  put_back(dir, take_name(shot, done_take, "mp4"), shot + ".mp4");
  if (::lstat(join_path(dir, take_name(shot, done_take, "json")).c_str(), &st) == 0)
    put_back(dir, take_name(shot, done_take, "json"), shot + ".json");
  fsync_dir(dir);
  return true;
}

}  // namespace wb
