#include "daemon/watcher.h"

#include <dirent.h>
#include <cstring>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace wb {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

SpoolWatcher::SpoolWatcher(std::string dir, Millis settle) : dir_(std::move(dir)), settle_(settle) {
  fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) throw Error(std::string("inotify_init1: ") + std::strerror(errno));
}

SpoolWatcher::~SpoolWatcher() {
  if (fd_ >= 0) ::close(fd_);
}

bool SpoolWatcher::eligible(const std::string& name) {
  if (name.empty() || name[0] == '.' || name[0] == '#') return false;
  return ends_with(name, ".yaml") || ends_with(name, ".yml");
}

bool SpoolWatcher::ensure_watch() {
  if (wd_ >= 0) return true;
  wd_ = ::inotify_add_watch(fd_, dir_.c_str(),
                            IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_MODIFY | IN_ATTRIB |
                                IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
  if (wd_ < 0) return false;
  rescan_needed_ = true;
  return true;
}

void SpoolWatcher::drain_events() {
  alignas(struct inotify_event) char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<struct inotify_event*>(p);
      p += sizeof(struct inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        spdlog::warn("spool: inotify queue overflowed; rescanning {}", dir_);
        rescan_needed_ = true;
        continue;
      }
      if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
        if (wd_ >= 0 && !(ev->mask & IN_IGNORED)) ::inotify_rm_watch(fd_, wd_);
        wd_ = -1;
        continue;
      }
      if (ev->len == 0) continue;
      std::string name(ev->name);
      if (!eligible(name)) continue;
      Candidate& c = candidates_[name];
      if (ev->mask & IN_MOVED_TO) c.moved_in = true;
    }
  }
}

void SpoolWatcher::rescan(MonoPoint now) {
  rescan_needed_ = false;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return;
  while (struct dirent* e = ::readdir(d)) {
    std::string name(e->d_name);
    if (eligible(name) && !candidates_.count(name)) candidates_[name].stable_since = now;
  }
  ::closedir(d);
}

std::vector<std::string> SpoolWatcher::take_ready(MonoPoint now, Millis& next) {
  next = Millis(60000);
  if (wd_ < 0 && !ensure_watch()) return {};
  if (rescan_needed_) rescan(now);
  std::vector<std::pair<int64_t, std::string>> ready;
  for (auto it = candidates_.begin(); it != candidates_.end();) {
    const std::string& name = it->first;
    Candidate& c = it->second;
    struct stat st {};
    if (::lstat(join_path(dir_, name).c_str(), &st) != 0) {
      it = candidates_.erase(it);  // gone again
      continue;
    }
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    bool regular = S_ISREG(st.st_mode);
    if (c.moved_in || !regular) {
      // Renamed in: complete by convention. Not a regular file: the daemon refuses
      // it at once (a FIFO or device is never opened for blocking reads).
      ready.emplace_back(mtime, name);
      it = candidates_.erase(it);
      continue;
    }
    if (c.size != st.st_size || c.mtime_ns != mtime) {
      c.size = st.st_size;
      c.mtime_ns = mtime;
      c.stable_since = now;
    }
    // Unchanged for the settle time as seen by us (the file's mtime is wall time,
    // which may have stepped: it only tells that the file changed).
    MonoPoint ready_at = c.stable_since + settle_;
    if (now >= ready_at) {
      ready.emplace_back(mtime, name);
      it = candidates_.erase(it);
      continue;
    }
    next = std::min(next, std::chrono::duration_cast<Millis>(ready_at - now) + Millis(1));
    ++it;
  }
  std::sort(ready.begin(), ready.end());
  std::vector<std::string> names;
  for (auto& [t, n] : ready) names.push_back(n);
  return names;
}

}  // namespace wb
