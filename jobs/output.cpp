#include "jobs/output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "jobs/json_safe.h"
#include "jobs/util.h"

namespace wb {

namespace {
std::string part_name(const std::string& shot) { return "." + shot + ".mp4.part"; }
std::string poster_part_name(const std::string& shot) { return "." + shot + ".jpg.part"; }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void check_shot_id(const std::string& shot) {
  if (!is_valid_id(shot)) throw Error("invalid shot id " + shot);
  if (std::string why = shot_id_clash(shot); !why.empty()) throw Error("shot id " + why);
}
}  // namespace

const std::vector<std::string>& batch_file_names() {
  static const std::vector<std::string> names = {"report.json", "index.html"};
  return names;
}

bool is_batch_file(const std::string& name) {
  for (const auto& b : batch_file_names())
    if (lower(name) == b) return true;
  return false;
}

std::string shot_id_clash(const std::string& id) {
  for (const char* ext : {".mp4", ".json"})
    if (is_batch_file(id + ext))
      return "'" + id + "' is reserved: the shot's " + id + ext + " would be the batch's " + lower(id + ext) +
             "; pick another id";
  return "";
}

std::string OutputDir::batch_dir(const std::string& batch) const {
  if (!is_valid_id(batch)) throw Error("invalid batch name " + batch);
  if (!is_dir(root_)) throw Error("output_root " + root_ + " is missing (not mounted?)");
  std::string dir = join_path(root_, batch);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw Error(dir + " exists and is not a folder (a symlink?)");
    return dir;
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error("cannot create " + dir + ": " + std::strerror(errno));
  fsync_dir(root_);
  return dir;
}

int OutputDir::open_part(const std::string& batch, const std::string& shot, bool resume, long long& offset) const {
  check_shot_id(shot);
  const std::string dir = batch_dir(batch);
  std::string path = join_path(dir, part_name(shot));
  // Non-blocking: a FIFO put at this name must not hold up the loop (it is refused below).
  // A download from its first byte gets a file of its own: another name linked to
  // the old .part (a hard link) must not become a name of the delivered video.
  if (!resume && ::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw Error("cannot remove " + path + ": " + std::strerror(errno));
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + " is not a regular file");
  }
  off_t end = ::lseek(fd, 0, SEEK_END);
  offset = end > 0 ? static_cast<long long>(end) : 0;
  if (offset == 0) ::unlink(join_path(dir, poster_part_name(shot)).c_str());  // a poster of another download
  return fd;
}

std::string OutputDir::commit_part(const std::string& batch, const std::string& shot, int fd) const {
  check_shot_id(shot);
  std::string dir = batch_dir(batch);
  if (::fsync(fd) != 0) throw Error("cannot sync the video for " + shot + ": " + std::strerror(errno));
  std::string final_path = join_path(dir, shot + ".mp4");
  struct stat st {};
  if (::lstat(final_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw Error("refusing to replace the symlink " + final_path);
  if (::rename(join_path(dir, part_name(shot)).c_str(), final_path.c_str()) != 0)
    throw Error("cannot rename the video to " + final_path + ": " + std::strerror(errno));
  fsync_dir(dir);
  return final_path;
}

std::string OutputDir::commit_shot(const std::string& batch, const std::string& shot, int fd,
                                   const std::string& sidecar) const {
  check_shot_id(shot);
  const std::string dir = batch_dir(batch);
  const std::string json_path = join_path(dir, shot + ".json");
  const std::string tmp = join_path(dir, "." + shot + ".json.commit");
  struct stat st {};
  if (::lstat(json_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    throw Error("refusing to replace the symlink " + json_path);
  {
    int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (out < 0) throw Error("cannot create " + tmp + ": " + std::strerror(errno));
    size_t off = 0;
    int e = 0;
    while (off < sidecar.size() && e == 0) {
      ssize_t n = ::write(out, sidecar.data() + off, sidecar.size() - off);
      if (n > 0) off += static_cast<size_t>(n);
      else if (n < 0 && errno != EINTR) e = errno;
    }
    if (e == 0 && ::fsync(out) != 0) e = errno;
    ::close(out);
    if (e != 0) {
      ::unlink(tmp.c_str());
      throw Error("cannot write " + tmp + ": " + std::strerror(e));
    }
  }
  std::string video;
  try {
    video = commit_part(batch, shot, fd);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), json_path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    ::rename(video.c_str(), join_path(dir, part_name(shot)).c_str());
    fsync_dir(dir);
    throw Error("cannot rename the sidecar to " + json_path + ": " + std::strerror(e));
  }
  fsync_dir(dir);
  return video;
}

void OutputDir::withdraw(const std::string& batch, const std::string& shot, const std::string& request_id,
                         bool earlier_take_done) const {
  check_shot_id(shot);
  const std::string dir = join_path(root_, batch);
  const std::string json_path = join_path(dir, shot + ".json");
  bool ours = false;
  struct stat st {};
  if (::lstat(json_path.c_str(), &st) == 0) {
    std::string text;
    try {
      text = read_file(json_path, 1 << 20);
    } catch (const Error&) {
      return;  // unreadable: not known to be this take's, so left alone
    }
    auto side = parse_json_bounded(text);
    if (side && side->is_object() && !request_id.empty())
      if (auto id = side->find("request_id"); id != side->end() && id->is_string()) ours = *id == request_id;
  } else {
    ours = !earlier_take_done;
  }
  if (!ours) return;
  bool any = ::unlink(join_path(dir, shot + ".mp4").c_str()) == 0;
  any = ::unlink(json_path.c_str()) == 0 || any;
  any = ::unlink(join_path(dir, shot + ".jpg").c_str()) == 0 || any;
  if (any) fsync_dir(dir);
}

std::string OutputDir::part_path(const std::string& batch, const std::string& shot) const {
  check_shot_id(shot);
  return join_path(join_path(root_, batch), part_name(shot));
}

void OutputDir::discard_part(const std::string& batch, const std::string& shot) const {
  ::unlink(join_path(join_path(root_, batch), part_name(shot)).c_str());
  ::unlink(join_path(join_path(root_, batch), poster_part_name(shot)).c_str());
}

std::string OutputDir::poster_part_path(const std::string& batch, const std::string& shot) const {
  check_shot_id(shot);
  return join_path(join_path(root_, batch), poster_part_name(shot));
}

std::string OutputDir::commit_poster(const std::string& batch, const std::string& shot) const {
  check_shot_id(shot);
  const std::string dir = join_path(root_, batch);
  const std::string staged = join_path(dir, poster_part_name(shot));
  const std::string poster = join_path(dir, shot + ".jpg");
  struct stat st {};
  if (::lstat(staged.c_str(), &st) != 0) {
    if (::unlink(poster.c_str()) == 0) {  // an earlier take's: not this video
      fsync_dir(dir);
      return "";
    }
    return errno == ENOENT ? "" : "cannot remove the earlier poster " + poster + ": " + std::strerror(errno);
  }
  std::string problem;
  if (!S_ISREG(st.st_mode))
    problem = staged + " is not a regular file";
  else if (::rename(staged.c_str(), poster.c_str()) != 0)
    problem = "cannot rename the poster to " + poster + ": " + std::strerror(errno);
  if (!problem.empty()) {
    ::unlink(staged.c_str());
    ::unlink(poster.c_str());
  }
  fsync_dir(dir);
  return problem;
}

std::string OutputDir::foreign_part(const std::string& batch, const std::string& shot) const {
  check_shot_id(shot);
  const std::string dir = join_path(root_, batch);
  struct stat st {};
  // The download's own temporary names: a FIFO, a symlink or a socket there is
  // removed; a folder cannot be.
  for (const std::string& name : {part_name(shot), poster_part_name(shot), "." + shot + ".json.commit"}) {
    const std::string path = join_path(dir, name);
    if (::lstat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) continue;
    if (!S_ISDIR(st.st_mode) && ::unlink(path.c_str()) == 0) continue;
    return path;
  }
  // The names its commit replaces: anything but a regular file there was put by
  // someone, and is left to them (the commit would fail on it for ever).
  for (const std::string& name : {shot + ".mp4", shot + ".json"}) {
    const std::string path = join_path(dir, name);
    if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return path;
  }
  return "";
}

std::string OutputDir::write(const std::string& batch, const std::string& name, const std::string& data) const {
  if (!is_batch_file(name)) throw Error("not a batch file: " + name);
  std::string dir = batch_dir(batch);
  write_file_atomic(dir, name, data);
  return join_path(dir, name);
}

std::string OutputDir::write(const std::string& batch, const std::string& name,
                             const std::vector<std::string>& pieces) const {
  if (!is_batch_file(name)) throw Error("not a batch file: " + name);
  std::string dir = batch_dir(batch);
  write_file_atomic(dir, name, pieces);
  return join_path(dir, name);
}

std::string OutputDir::write_sidecar(const std::string& batch, const std::string& shot,
                                     const std::string& data) const {
  check_shot_id(shot);
  std::string dir = batch_dir(batch);
  write_file_atomic(dir, shot + ".json", data);
  return join_path(dir, shot + ".json");
}

}  // namespace wb
